//! Failures made visible: each failed attempt is counted for telemetry, and
//! reported to HQ as an `offload.failed` event — at most one event of each
//! kind (`store`, `record`) every [`FAILED_EVENT_EVERY`], so a store that is
//! down for a day sends a few hundred events, not one per retry. An event
//! counts the failures of its kind since the last success and those since
//! the previous event that had none of their own, so nothing is hidden by
//! the limit.

use std::time::{Duration, Instant};

/// Shortest time between two `offload.failed` events of one kind.
pub const FAILED_EVENT_EVERY: Duration = Duration::from_secs(600);

/// What failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The store: down, refusing, erring. Every record waits.
    Store,
    /// One record, here or in the store. It waits alone.
    Record,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Store => "store",
            Kind::Record => "record",
        }
    }

    fn slot(self) -> usize {
        self as usize
    }
}

/// When an event is due, and what it counts.
#[derive(Debug, Default)]
pub struct Limiter {
    last_event: [Option<Instant>; 2],
    unreported: [u64; 2],
    since_success: [u64; 2],
}

/// What an event that is due counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// Failures of its kind since the last success (this one included).
    pub failures: u64,
    /// Failures of its kind since the previous event, this one excluded.
    pub unreported: u64,
}

impl Limiter {
    /// Notes a failure of `kind` at `now`: `Some` if its event is due.
    pub fn failed(&mut self, kind: Kind, now: Instant) -> Option<Due> {
        let i = kind.slot();
        self.since_success[i] += 1;
        let due = self.last_event[i]
            .is_none_or(|at| now.saturating_duration_since(at) >= FAILED_EVENT_EVERY);
        if !due {
            self.unreported[i] += 1;
            return None;
        }
        self.last_event[i] = Some(now);
        Some(Due {
            failures: self.since_success[i],
            unreported: std::mem::take(&mut self.unreported[i]),
        })
    }

    /// A record went: the counts since the last success start again (the
    /// event clock does not: a store that flaps is still limited).
    pub fn succeeded(&mut self) {
        self.since_success = [0; 2];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_per_kind_per_period_counting_what_it_stands_for() {
        let mut l = Limiter::default();
        let t = Instant::now();
        let due = |failures, unreported| {
            Some(Due {
                failures,
                unreported,
            })
        };
        assert_eq!(l.failed(Kind::Store, t), due(1, 0), "the first is reported");
        for s in 1..5 {
            assert_eq!(l.failed(Kind::Store, t + Duration::from_secs(s)), None);
        }
        // The other kind has its own clock.
        assert_eq!(
            l.failed(Kind::Record, t + Duration::from_secs(5)),
            due(1, 0)
        );
        assert_eq!(
            l.failed(Kind::Store, t + FAILED_EVENT_EVERY),
            due(6, 4),
            "after the period: six in a row, four of them without an event"
        );
        l.succeeded();
        // A success restarts the count, not the clock.
        let later = t + FAILED_EVENT_EVERY + Duration::from_secs(1);
        assert_eq!(l.failed(Kind::Store, later), None);
        assert_eq!(l.failed(Kind::Store, t + 2 * FAILED_EVENT_EVERY), due(2, 1));
    }
}
