//! Wall-clock time and whether it can be trusted.
//!
//! Every instant sargs writes is UTC. Boards without a real-time clock can
//! boot in 1970 or jump; each manifest and receipt therefore states whether
//! the kernel considered its clock synchronised (NTP/PTP discipline via
//! `adjtimex`) when it was written, so HQ can weigh the timestamps
//! (`docs/design.md`, "Formats").

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The kernel's view of the system clock's discipline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SyncState {
    /// A time daemon disciplines the clock (adjtimex reports `TIME_OK` or a leap state).
    Synchronised,
    /// The kernel reports the clock as unsynchronised (`TIME_ERROR`).
    Unsynchronised,
    /// The state could not be read.
    Unknown,
}

/// Reads the current synchronisation state with `adjtimex(2)` in read-only mode.
pub fn sync_state() -> SyncState {
    // SAFETY: a zeroed `timex` with `modes = 0` asks only to read; the kernel
    // fills the struct we own and changes nothing.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    let state = unsafe { libc::adjtimex(&mut tx) };
    match state {
        -1 => SyncState::Unknown,
        libc::TIME_ERROR => SyncState::Unsynchronised,
        _ => SyncState::Synchronised,
    }
}

/// The earliest instant a record of sargs can be true: 2026-01-01T00:00:00Z,
/// before this software's first release. A clock that reads earlier (a
/// board that booted at 1970 without a real-time clock) is certainly wrong,
/// and a record stamped earlier is flagged
/// ([`ClockFault::Impossible`](crate::seal::manifest::ClockFault)).
pub const TIME_FLOOR_UNIX_S: i64 = 1_767_225_600;

/// [`TIME_FLOOR_UNIX_S`] as an instant.
pub fn time_floor() -> DateTime<Utc> {
    DateTime::from_timestamp(TIME_FLOOR_UNIX_S, 0).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// The current UTC time.
pub fn now() -> DateTime<Utc> {
    Utc::now()
}
