//! The agent's clocks: the system wall clock (UTC, with its synchronisation
//! state, from [`sargs_core::clock`]) and the clock retention runs on, which
//! `sargs demo --accelerate` can speed up.
//!
//! Every reading of the wall clock through [`now`] is also compared with the
//! monotonic clock (the [`Watch`]), so that what the agent seals can say
//! when its times cannot be vouched for. Invariant: [`fault`] names a
//! [`ClockFault`] for every record opened before a step of the wall clock
//! larger than [`STEP_BOUND`] that was seen by the time it is sealed, for
//! every record sealed after such a step until the kernel reports the clock
//! synchronised again, and whenever the clock reads earlier than
//! [`time_floor`] (docs/design.md, "Time"; docs/format.md, "Clock faults").

use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
pub use sargs_core::clock::{sync_state, time_floor, SyncState};
pub use sargs_core::seal::manifest::ClockFault;

/// A change of the wall clock against the monotonic clock larger than this
/// between two readings is a step (NTP steps from 128 ms up; slewing and a
/// crystal's drift stay far below it between readings seconds apart).
pub const STEP_BOUND: Duration = Duration::from_secs(2);

/// What the agent has seen of the wall clock against the monotonic clock.
#[derive(Debug, Default)]
pub struct Watch {
    last: Option<(DateTime<Utc>, Instant)>,
    /// Monotonic instant at which the latest step was seen.
    step: Option<Instant>,
    /// Whether the kernel reported the clock synchronised since that step.
    resynced: bool,
}

impl Watch {
    /// Takes one reading: `wall` and `mono` read together, `sync` asked only
    /// while a step waits for the clock to be synchronised again.
    pub fn observe(
        &mut self,
        wall: DateTime<Utc>,
        mono: Instant,
        sync: impl FnOnce() -> SyncState,
    ) {
        if let Some((w0, m0)) = self.last {
            let wall_ms = i128::from((wall - w0).num_milliseconds());
            let mono_ms = mono.saturating_duration_since(m0).as_millis() as i128;
            if (wall_ms - mono_ms).unsigned_abs() > STEP_BOUND.as_millis() {
                tracing::warn!(from = %w0, to = %wall, "the wall clock stepped");
                self.step = Some(mono);
                self.resynced = false;
            }
        }
        self.last = Some((wall, mono));
        if self.step.is_some() && !self.resynced && sync() == SyncState::Synchronised {
            self.resynced = true;
        }
    }

    /// The fault of a record sealed now that was opened at `opened`
    /// (`None`: not known in this process), the clock reading `wall`.
    pub fn fault(&self, wall: DateTime<Utc>, opened: Option<Instant>) -> Option<ClockFault> {
        if wall < time_floor() {
            return Some(ClockFault::Impossible);
        }
        let step = self.step?;
        if !self.resynced || opened.is_none_or(|o| step >= o) {
            return Some(ClockFault::Stepped);
        }
        None
    }
}

static WATCH: Mutex<Watch> = Mutex::new(Watch {
    last: None,
    step: None,
    resynced: false,
});

fn watch() -> std::sync::MutexGuard<'static, Watch> {
    WATCH
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The current UTC time (the system clock), seen by the [`Watch`].
pub fn now() -> DateTime<Utc> {
    let mut w = watch();
    let wall = sargs_core::clock::now();
    w.observe(wall, Instant::now(), sync_state);
    wall
}

/// Why the times of a record opened at `opened` and sealed now cannot be
/// vouched for, if they cannot (see the module's invariant).
pub fn fault(opened: Option<Instant>) -> Option<ClockFault> {
    let wall = now();
    watch().fault(wall, opened)
}

/// The clock the agent's retention runs on — deadlines, holds, commands,
/// telemetry ages: the system clock, or, for `sargs demo --accelerate`, a
/// clock that runs `factor` times faster from the instant it is made, so a
/// month of retention passes in a minute. Recording (segment times,
/// manifests) always uses the system clock.
///
/// Wall and monotonic readings of an accelerated clock come from one origin
/// and one factor, so the retention engine's clock guard sees no step; its
/// time is right by definition, so it reads as synchronised.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: std::time::Instant,
    origin_wall: DateTime<Utc>,
    factor: u32,
}

impl Clock {
    /// The system clock (the kernel's wall clock, steps and all).
    pub fn system() -> Clock {
        Clock::accelerated(1)
    }

    /// A clock running `factor` times faster than the system clock from now
    /// (`factor` 0 is taken as 1).
    pub fn accelerated(factor: u32) -> Clock {
        Clock {
            origin: std::time::Instant::now(),
            origin_wall: Utc::now(),
            factor: factor.max(1),
        }
    }

    pub fn factor(&self) -> u32 {
        self.factor
    }

    /// Monotonic time since the clock was made, on this clock.
    pub fn mono(&self) -> std::time::Duration {
        self.origin.elapsed().saturating_mul(self.factor)
    }

    /// The real time in which `d` passes on this clock.
    pub fn real(&self, d: std::time::Duration) -> std::time::Duration {
        d / self.factor
    }

    /// The wall time on this clock.
    pub fn wall(&self) -> DateTime<Utc> {
        if self.factor == 1 {
            return Utc::now();
        }
        chrono::Duration::from_std(self.mono())
            .ok()
            .and_then(|d| self.origin_wall.checked_add_signed(d))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// Whether this clock's time can be trusted (see [`sync_state`]).
    pub fn sync(&self) -> SyncState {
        if self.factor == 1 {
            sync_state()
        } else {
            SyncState::Synchronised
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watch_flags_records_around_a_step_until_the_clock_is_synchronised() {
        let t0 = Utc::now();
        let m0 = Instant::now();
        let at = |s: i64, m: u64| {
            (
                t0 + chrono::Duration::seconds(s),
                m0 + Duration::from_secs(m),
            )
        };
        let mut w = Watch::default();
        let (wall, mono) = at(0, 0);
        w.observe(wall, mono, || SyncState::Synchronised);
        let (wall, mono) = at(1, 1);
        w.observe(wall, mono, || unreachable!("no step to clear"));
        assert_eq!(w.fault(wall, Some(m0)), None, "steady");
        // A slow drift is no step.
        let (wall, mono) = at(11, 10);
        w.observe(wall, mono, || unreachable!("no step to clear"));
        assert_eq!(w.fault(wall, Some(m0)), None, "1 s in 9 s is drift");
        // Ten years ahead: every record open or sealed now is flagged while
        // the kernel says unsynchronised.
        let year = 365 * 86_400;
        let (wall, mono) = at(10 * year, 12);
        w.observe(wall, mono, || SyncState::Unsynchronised);
        let opened_after = m0 + Duration::from_secs(20);
        assert_eq!(w.fault(wall, Some(m0)), Some(ClockFault::Stepped));
        let (wall, mono) = at(10 * year + 30, 42);
        w.observe(wall, mono, || SyncState::Unsynchronised);
        assert_eq!(w.fault(wall, Some(opened_after)), Some(ClockFault::Stepped));
        // Synchronised again: only records open across the step stay flagged.
        let (wall, mono) = at(10 * year + 31, 43);
        w.observe(wall, mono, || SyncState::Synchronised);
        assert_eq!(w.fault(wall, Some(opened_after)), None);
        assert_eq!(w.fault(wall, Some(m0)), Some(ClockFault::Stepped));
        assert_eq!(w.fault(wall, None), Some(ClockFault::Stepped));
        // A board at 1970 reads an impossible time, stepped or not.
        let fresh = Watch::default();
        let epoch = DateTime::<Utc>::UNIX_EPOCH;
        assert_eq!(fresh.fault(epoch, None), Some(ClockFault::Impossible));
        assert_eq!(fresh.fault(t0, None), None);
    }

    #[test]
    fn sync_state_is_readable() {
        // Containers may report any state, but the call itself must not fail.
        assert_ne!(sync_state(), SyncState::Unknown);
    }

    #[test]
    fn an_accelerated_clock_keeps_wall_and_monotonic_time_in_step() {
        let c = Clock::accelerated(86_400);
        std::thread::sleep(std::time::Duration::from_millis(50));
        let (mono, wall) = (c.mono(), c.wall());
        assert!(
            mono >= std::time::Duration::from_secs(50 * 86_400 / 1000),
            "{mono:?}"
        );
        let wall_ahead = (wall - c.origin_wall).to_std().expect("ahead");
        let mono_after = c.mono();
        assert!(
            mono <= wall_ahead && wall_ahead <= mono_after,
            "{mono:?} {wall_ahead:?} {mono_after:?}"
        );
        assert_eq!(c.sync(), SyncState::Synchronised);
        let s = Clock::system();
        assert!((s.wall() - Utc::now()).num_milliseconds().abs() < 1000);
        assert_eq!(s.factor(), 1);
    }
}
