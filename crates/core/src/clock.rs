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

/// The current UTC time.
pub fn now() -> DateTime<Utc> {
    Utc::now()
}
