//! Whether the wall clock may be trusted to delete by.
//!
//! Boards without a real-time clock boot in 1970 or jump ahead; a deadline
//! compared against such a clock could delete everything at once. Invariant:
//! deletions by deadline happen only while [`ClockGuard::observe`] says
//! [`Trust::Trusted`], which requires
//! - the kernel to report the clock synchronised (unless the configuration
//!   explicitly trusts an unsynchronised clock),
//! - no step of the wall clock against the monotonic clock larger than the
//!   configured bound since the previous observation — after a step, trust
//!   returns only once the clock is synchronised **and** a settling period
//!   has passed without another step, whatever the configuration says,
//! - the wall clock not to be behind the newest record already sealed.
//!
//! Deletion under disk pressure does not depend on the clock (it goes by the
//! deadline order fixed at sealing), so it is not gated here.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::clock::SyncState;

/// One reading of the clocks.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub wall: DateTime<Utc>,
    /// Monotonic time since an arbitrary origin (e.g. `Instant` of start).
    pub mono: Duration,
    pub sync: SyncState,
}

/// The verdict for one sweep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    Trusted,
    /// Deletions pause; the reason says why, for status and HQ.
    Paused(String),
}

/// Keeps what it has seen of the clocks between sweeps.
#[derive(Debug, Clone)]
pub struct ClockGuard {
    bound: Duration,
    settle: Duration,
    trust_unsynchronised: bool,
    last: Option<(DateTime<Utc>, Duration)>,
    /// Monotonic time of the last step seen, and its description.
    step: Option<(Duration, String)>,
}

impl ClockGuard {
    pub fn new(bound: Duration, settle: Duration, trust_unsynchronised: bool) -> ClockGuard {
        ClockGuard {
            bound,
            settle,
            trust_unsynchronised,
            last: None,
            step: None,
        }
    }

    /// Observes the clocks; `newest_sealed` is the latest `sealed_at` in the store.
    pub fn observe(&mut self, now: Now, newest_sealed: Option<DateTime<Utc>>) -> Trust {
        if let Some((wall, mono)) = self.last {
            let wall_delta = (now.wall - wall).num_milliseconds() as i128;
            let mono_delta = now.mono.saturating_sub(mono).as_millis() as i128;
            let drift = wall_delta - mono_delta;
            if drift.unsigned_abs() > self.bound.as_millis() {
                let what = format!(
                    "wall clock stepped {}{} s at {} (against the monotonic clock)",
                    if drift > 0 { "+" } else { "-" },
                    drift.unsigned_abs() / 1000,
                    now.wall.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                );
                self.step = Some((now.mono, what));
            }
        }
        self.last = Some((now.wall, now.mono));
        if let Some((at, what)) = &self.step {
            let settled = now.mono.saturating_sub(*at) >= self.settle;
            if now.sync == SyncState::Synchronised && settled {
                self.step = None;
            } else {
                return Trust::Paused(format!(
                    "{what}; deletions resume once the clock is synchronised and steady for {} s",
                    self.settle.as_secs()
                ));
            }
        }
        if now.sync != SyncState::Synchronised && !self.trust_unsynchronised {
            return Trust::Paused(
                "the clock is not synchronised (no NTP/PTP discipline); deletions wait for it"
                    .into(),
            );
        }
        if let Some(newest) = newest_sealed {
            if now.wall + chrono::Duration::from_std(self.bound).unwrap_or_default() < newest {
                return Trust::Paused(format!(
                    "the clock ({}) is behind the newest sealed record ({newest})",
                    now.wall
                ));
            }
        }
        Trust::Trusted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(wall_s: i64, mono_s: u64, sync: SyncState) -> Now {
        Now {
            wall: Utc.timestamp_opt(1_700_000_000 + wall_s, 0).unwrap(),
            mono: Duration::from_secs(mono_s),
            sync,
        }
    }

    #[test]
    fn steady_synchronised_clock_is_trusted() {
        let mut g = ClockGuard::new(Duration::from_secs(120), Duration::from_secs(60), false);
        assert_eq!(
            g.observe(at(0, 0, SyncState::Synchronised), None),
            Trust::Trusted
        );
        assert_eq!(
            g.observe(at(60, 60, SyncState::Synchronised), None),
            Trust::Trusted
        );
    }

    #[test]
    fn unsynchronised_clock_pauses_unless_trusted_by_config() {
        let mut g = ClockGuard::new(Duration::from_secs(120), Duration::from_secs(60), false);
        assert!(matches!(
            g.observe(at(0, 0, SyncState::Unsynchronised), None),
            Trust::Paused(_)
        ));
        let mut g = ClockGuard::new(Duration::from_secs(120), Duration::from_secs(60), true);
        assert_eq!(
            g.observe(at(0, 0, SyncState::Unsynchronised), None),
            Trust::Trusted
        );
    }

    #[test]
    fn a_step_pauses_until_synchronised_and_settled_even_when_trusting_unsync() {
        let mut g = ClockGuard::new(Duration::from_secs(120), Duration::from_secs(60), true);
        assert_eq!(
            g.observe(at(0, 0, SyncState::Unsynchronised), None),
            Trust::Trusted
        );
        // One year ahead in 60 s of monotonic time.
        let year = 365 * 86_400;
        assert!(matches!(
            g.observe(at(year, 60, SyncState::Unsynchronised), None),
            Trust::Paused(_)
        ));
        // Still unsynchronised long after: still paused.
        assert!(matches!(
            g.observe(at(year + 600, 660, SyncState::Unsynchronised), None),
            Trust::Paused(_)
        ));
        // Synchronised, but the step was only 30 s ago (a second step resets).
        assert!(matches!(
            g.observe(at(year + 630 - 500, 690, SyncState::Synchronised), None),
            Trust::Paused(_)
        ));
        assert!(matches!(
            g.observe(at(year + 160, 720, SyncState::Synchronised), None),
            Trust::Paused(_)
        ));
        assert_eq!(
            g.observe(at(year + 190, 750, SyncState::Synchronised), None),
            Trust::Trusted
        );
    }

    #[test]
    fn a_clock_behind_the_newest_record_pauses() {
        let mut g = ClockGuard::new(Duration::from_secs(120), Duration::from_secs(60), false);
        let newest = Utc.timestamp_opt(1_700_000_000 + 1000, 0).unwrap();
        assert!(matches!(
            g.observe(at(0, 0, SyncState::Synchronised), Some(newest)),
            Trust::Paused(_)
        ));
        assert_eq!(
            g.observe(at(1000, 1000, SyncState::Synchronised), Some(newest)),
            Trust::Trusted
        );
    }
}
