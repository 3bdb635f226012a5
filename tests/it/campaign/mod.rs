//! The kill -9 campaign: the real agent (or the real HQ service) killed with
//! SIGKILL at random instants inside one operation per scenario, restarted
//! on the same data directory, and checked after every kill. The clock
//! campaign (`clock`) shares its plan, seed and report: the agent's wall
//! clock faulted at random instants instead of killed (its own invariant
//! is in its module), and so do the network campaign (`network`) and the
//! disk campaign (`disk`: its data directory on a fault-injecting disk).
//! The power campaign (`power`) cuts the power instead of killing: the agent
//! killed and its disk brought back to what fsync made durable.
//!
//! Scenarios (one test each): recording with several cameras, sealing (the
//! kill inside a segment's seal), the retention sweep, holds and erasures
//! being applied, dock ingest, the outbox sending to a real Mosquitto,
//! offload to a real Garage with the local media freed, and the HQ
//! service committing the fleet's messages to its ledger.
//!
//! Invariant checked at every point (docs/RELIABILITY.md): after the kill,
//! `sargs verify` passes or names only the records whose operation the kill
//! cut short; no held or requested record is gone; no plaintext media is
//! under the data directory; after the restart the agent records again (a
//! new whole segment) — or, for HQ, the ledger balances with the agent's
//! files with nothing that was acknowledged lost. A point that breaks one
//! is a failure naming the scenario, the seed, the point, its kill instant
//! and the record.
//!
//! Kill instants come from a seeded generator: uniform over a window that
//! covers the operation (measured on the machine before the first point
//! where it depends on the machine's speed). `SARGS_CAMPAIGN_SEED` replays
//! a run's instants; `SARGS_CAMPAIGN_POINTS` sets a scenario's number of
//! points (default: a few, as the test suite runs them);
//! `SARGS_CAMPAIGN_UNTIL` (Unix seconds) stops taking points after that
//! instant; `SARGS_CAMPAIGN_OUT` names a file each scenario appends its
//! result line to (`scripts/campaign-kill` prints the table from it).

use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod checks;
mod clock;
mod disk;
mod ingest;
mod link;
mod network;
mod offload;
mod power;
mod recording;
mod retention;

/// Points a scenario runs when `SARGS_CAMPAIGN_POINTS` is not set: the
/// short version the test suite runs.
const SHORT_POINTS: usize = 3;

/// A small seeded generator (SplitMix64): the same seed gives the same
/// kill instants.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[0, window)`.
    pub fn within(&mut self, window: Duration) -> Duration {
        window.mul_f64(self.unit())
    }
}

/// One scenario's run: its plan (seed, points) and what its points found.
pub struct Campaign {
    pub scenario: &'static str,
    pub seed: u64,
    pub rng: Rng,
    points: usize,
    until: Option<SystemTime>,
    done: usize,
    failures: Vec<String>,
    recoveries: Vec<Duration>,
    /// Where in the operation each kill fell, as a fraction of its window.
    spread: Vec<f64>,
    notes: Vec<String>,
    started: Instant,
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok().filter(|v| !v.trim().is_empty())?;
    Some(
        v.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name}={v:?}: not a number: {e}")),
    )
}

/// FNV-1a of the scenario's name: each scenario draws its own instants from
/// the one seed.
fn mix(seed: u64, name: &str) -> u64 {
    name.bytes().fold(seed ^ 0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl Campaign {
    /// The plan for `scenario` from the environment; prints the seed.
    pub fn new(scenario: &'static str) -> Campaign {
        Campaign::with_short(scenario, SHORT_POINTS)
    }

    /// [`Campaign::new`], with `short` points when `SARGS_CAMPAIGN_POINTS`
    /// is not set (a scenario whose points take minutes runs fewer in the
    /// test suite).
    pub fn with_short(scenario: &'static str, short: usize) -> Campaign {
        let seed = env_u64("SARGS_CAMPAIGN_SEED").unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(1)
        });
        let points = env_u64("SARGS_CAMPAIGN_POINTS").map_or(short, |p| p as usize);
        let until = env_u64("SARGS_CAMPAIGN_UNTIL").map(|s| UNIX_EPOCH + Duration::from_secs(s));
        eprintln!(
            "campaign {scenario}: seed {seed} (SARGS_CAMPAIGN_SEED={seed} replays its instants), {points} point(s)"
        );
        Campaign {
            scenario,
            seed,
            rng: Rng::new(mix(seed, scenario)),
            points,
            until,
            done: 0,
            failures: Vec::new(),
            recoveries: Vec::new(),
            spread: Vec::new(),
            notes: Vec::new(),
            started: Instant::now(),
        }
    }

    /// Whether another point is to be run (its number not reached, the
    /// stop instant not passed).
    pub fn more(&self) -> bool {
        self.done < self.points && self.until.is_none_or(|u| SystemTime::now() < u)
    }

    /// The next point's number (1-based).
    pub fn next(&self) -> usize {
        self.done + 1
    }

    /// A label for the next point killed at `instant` after `anchor`.
    pub fn label(&self, instant: Duration, anchor: &str) -> String {
        format!(
            "{} seed {} point {} (kill {} ms after {anchor})",
            self.scenario,
            self.seed,
            self.next(),
            instant.as_millis()
        )
    }

    /// Records a point: its recovery time, or every problem it found.
    /// `at` is where in the operation's window the kill fell (0..1).
    pub fn point(&mut self, label: &str, at: f64, result: Result<Duration, Vec<String>>) {
        self.done += 1;
        self.spread.push(at.clamp(0.0, 1.0));
        match result {
            Ok(recovered) => {
                eprintln!("{label}: ok, recovered in {} ms", recovered.as_millis());
                self.recoveries.push(recovered);
            }
            Err(problems) => {
                for p in problems {
                    eprintln!("{label}: FAILED: {p}");
                    self.failures.push(format!("{label}: {p}"));
                }
            }
        }
    }

    /// A failure outside any one point (a batch's final checks).
    pub fn fail(&mut self, what: String) {
        let what = format!("{} seed {}: {what}", self.scenario, self.seed);
        eprintln!("{what}");
        self.failures.push(what);
    }

    /// A line for the report (e.g. what the kills hit).
    pub fn note(&mut self, note: String) {
        eprintln!("{}: {note}", self.scenario);
        self.notes.push(note);
    }

    /// The scenario's kill window: measured by `measure` the first time
    /// (noted as "kill window: N ms `what`"), the same afterwards. The
    /// flag says it was measured now (the operation measured is no point).
    pub fn window(
        &mut self,
        slot: &mut Option<Duration>,
        what: &str,
        measure: impl FnOnce() -> Duration,
    ) -> (Duration, bool) {
        if let Some(w) = *slot {
            return (w, false);
        }
        let w = measure().max(Duration::from_millis(1));
        *slot = Some(w);
        self.note(format!("kill window: {} ms {what}", w.as_millis()));
        (w, true)
    }

    /// Prints the result, appends it to `SARGS_CAMPAIGN_OUT`, and fails the
    /// test with every failure if there was one — or if no point ran before
    /// the stop instant.
    pub fn finish(mut self) {
        self.recoveries.sort();
        let ms = |d: Option<&Duration>| d.map_or("-".to_owned(), |d| d.as_millis().to_string());
        let median = ms(self.recoveries.get(self.recoveries.len() / 2));
        let max = ms(self.recoveries.last());
        let failed = self.failures.len();
        let quartiles = spread_quartiles(&mut self.spread);
        let line = format!(
            "{}\t{}\t{}\t{median}\t{max}\t{}\t{}\t{}\t{}",
            self.scenario,
            self.done,
            failed,
            self.seed,
            self.started.elapsed().as_secs(),
            quartiles,
            self.notes.join("; ")
        );
        eprintln!(
            "campaign {}: {} point(s), {failed} failure(s), recovery median {median} ms, max {max} ms, kills over the window at quartiles {quartiles}",
            self.scenario, self.done
        );
        if let Ok(path) = std::env::var("SARGS_CAMPAIGN_OUT") {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .unwrap_or_else(|e| panic!("{path}: {e}"));
            writeln!(f, "{line}").unwrap_or_else(|e| panic!("{path}: {e}"));
        }
        // No point at all is a failure, unless the run's stop instant had
        // passed (the table then shows 0 points).
        let stopped = self.until.is_some_and(|u| SystemTime::now() >= u);
        assert!(self.done > 0 || stopped, "{}: no point ran", self.scenario);
        assert!(
            self.failures.is_empty(),
            "{failed} failure(s) in {} (seed {}):\n{}",
            self.scenario,
            self.seed,
            self.failures.join("\n")
        );
    }
}

/// Where the kills fell in their windows: the 25th, 50th and 75th
/// percentiles, e.g. "0.24/0.51/0.77" for instants spread uniformly.
fn spread_quartiles(spread: &mut [f64]) -> String {
    if spread.is_empty() {
        return "-".to_owned();
    }
    spread.sort_by(f64::total_cmp);
    let q = |p: f64| spread[((spread.len() - 1) as f64 * p).round() as usize];
    format!("{:.2}/{:.2}/{:.2}", q(0.25), q(0.5), q(0.75))
}

/// Sleeps until `anchor + instant`: the kill instant is drawn at random,
/// there is no condition to wait for.
pub fn sleep_until(anchor: Instant, instant: Duration) {
    if let Some(left) = (anchor + instant).checked_duration_since(Instant::now()) {
        std::thread::sleep(left);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_replays_and_spreads() {
        let mut a = Rng::new(mix(7, "sweep"));
        let mut b = Rng::new(mix(7, "sweep"));
        let xs: Vec<f64> = (0..1000).map(|_| a.unit()).collect();
        let ys: Vec<f64> = (0..1000).map(|_| b.unit()).collect();
        assert_eq!(xs, ys, "one seed, one sequence");
        assert_ne!(mix(7, "sweep"), mix(7, "dock"), "each scenario its own");
        for k in 0..10 {
            let lo = k as f64 / 10.0;
            let n = xs.iter().filter(|x| **x >= lo && **x < lo + 0.1).count();
            assert!((60..=140).contains(&n), "decile {k}: {n} of 1000");
        }
    }
}
