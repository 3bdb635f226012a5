//! Delays between attempts of a loop that retries (a camera's pipeline, the
//! HQ link's connection): one schedule for the whole agent.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// Delays between attempts: `initial`, doubling after each consecutive
/// failure up to `max`, each with ±25 % jitter. The camera supervisor (with
/// the `[supervision]` delays) and the HQ link's reconnects (1 s to 60 s) use it.
///
/// The schedule is backon's [`ExponentialBuilder`]; the jitter is applied
/// here rather than by backon, whose jitter adds 0–100 % of the delay: a wait
/// could then run to twice `max`, the configured longest delay, instead of
/// the ±25 % these loops keep.
#[derive(Debug)]
pub struct Backoff {
    schedule: ExponentialBuilder,
    delays: ExponentialBackoff,
    max: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        let schedule = ExponentialBuilder::new()
            .with_min_delay(initial)
            .with_max_delay(max)
            .without_max_times();
        Backoff {
            delays: schedule.build(),
            schedule,
            max,
        }
    }

    /// The wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.delays.next().unwrap_or(self.max);
        let mut b = [0u8; 2];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
        let r = f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX); // 0..=1
        base.mul_f64(0.75 + 0.5 * r)
    }

    /// Starts over at `initial` (after a success).
    pub fn reset(&mut self) {
        self.delays = self.schedule.build();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(1000), Duration::from_millis(8000));
        let delays: Vec<u128> = (0..=10).map(|_| b.next_delay().as_millis()).collect();
        for (n, lo, hi) in [
            (0, 750, 1250),
            (1, 1500, 2500),
            (3, 6000, 10000),
            (10, 6000, 10000),
        ] {
            let d = delays[n];
            assert!((lo..=hi).contains(&d), "failure {n}: {d} ms");
        }
        b.reset();
        let d = b.next_delay().as_millis();
        assert!((750..=1250).contains(&d), "after reset: {d} ms");
    }
}
