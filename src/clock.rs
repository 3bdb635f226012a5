//! The agent's clocks: the system wall clock (UTC, with its synchronisation
//! state, from [`sargs_core::clock`]) and the clock retention runs on, which
//! `sargs demo --accelerate` can speed up.

use chrono::{DateTime, Utc};
pub use sargs_core::clock::{now, sync_state, SyncState};

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
