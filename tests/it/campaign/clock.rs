//! The clock campaign: the real agent recording while its wall clock is
//! stepped, set back to 1970, or left to drift, and the kernel's NTP
//! discipline is lost and found again (libfaketime and a preloaded
//! `adjtimex`, `tests/support/fakeclock.rs`); the monotonic clock stays
//! real. Scenarios (one test each):
//!
//! - "jump": the clock steps 10 years ahead or back (the sign drawn) at an
//!   instant drawn uniformly inside a segment, the kernel then reporting it
//!   unsynchronised, as after any manual step; later NTP steps it back and
//!   synchronises it.
//! - "boot-1970": a gateway that recorded at the right time restarts at
//!   1970 (a board without a real-time clock), unsynchronised; NTP corrects
//!   it at an instant drawn inside a segment.
//! - "ntp-step": a clock off by 30 s to 1 h, ahead or behind (drawn), and
//!   unsynchronised, until the time daemon's first synchronisation steps
//!   it right, inside a segment.
//! - "drift": a free-running clock 10 % fast, unsynchronised, until NTP
//!   synchronises it (libfaketime keeps the time gained when the rate
//!   ends, so the clock then runs at the real rate 2–4 s ahead, as after
//!   a slew: no step back).
//!
//! Invariant checked at every point (docs/RELIABILITY.md, "Clock faults"):
//! records 40 days old that are due are not deleted while the clock is
//! faulted (deletions wait), and are all deleted once it is trusted again
//! (deletions resume); no record of the live camera is deleted (no mass
//! deletion: what the wrong clock stamped in the past is not taken for
//! old); every live record whose times cannot be right — start, end or
//! sealing outside the real interval the agent ran in — is flagged
//! (`clock_fault`, or `clock` not `synchronised`); `sargs verify` passes
//! with the agent stopped; no plaintext under the data directory.
//! The time to recover is from the clock's correction to the due records'
//! deletion.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use sargs_core::clock::SyncState;
use sargs_core::seal::manifest::{ClockFault, Manifest};

use super::checks::*;
use super::Campaign;
use crate::harness::*;
use crate::support::fakeclock::FakeClock;

/// Points a scenario runs in the test suite (each takes 1–2 minutes).
const SHORT: usize = 1;
const LIVE: &str = "cam-live";
const OLD: &str = "cam-old";
const SEGMENT_S: u32 = 2;
/// Records 40 days old, due, sealed while the clock is faulted.
const DUE: usize = 20;
const YEAR_S: i64 = 365 * 86_400;
/// Slack around the real interval before a record's time counts as wrong.
const SLACK_S: i64 = 5;
/// From a correction to the due records' deletion: the clock guard's
/// settling period and a loaded machine's sweeps.
const RESUME: Duration = Duration::from_secs(180);

/// The clock guard's settling period after a step
/// (`retention.clock_settle_s`): `SARGS_CLOCK_SETTLE_S`, 5 s by default
/// (the short version); the deployed default, 60 s, in the full campaign.
fn settle_s() -> u64 {
    super::env_u64("SARGS_CLOCK_SETTLE_S").unwrap_or(5)
}

/// A home recording the live camera in 2 s segments, with a disabled
/// camera whose old records the test seals; retention sweeps every second
/// and trusts only a synchronised clock (the default).
fn clock_home() -> Home {
    let home = Home::new();
    let cams = format!(
        "[retention]\nsweep_interval_s = 1\nfree_space_floor_mb = 1\nclock_settle_s = {}\n\n{}{}",
        settle_s(),
        test_camera(LIVE, "cctv", ""),
        test_camera(OLD, "cctv", "enabled = false")
    );
    home.config_with(SEGMENT_S, "min_free_mb = 1", &cams);
    home
}

/// One point: a fresh home, its clock, its agent, and what it found.
struct Point {
    home: Home,
    clock: FakeClock,
    agent: Option<Spawned>,
    data: std::path::PathBuf,
    /// The real instant the point started (records cannot be older).
    from: DateTime<Utc>,
    since: SystemTime,
    problems: Vec<String>,
}

impl Point {
    fn new() -> Point {
        let home = clock_home();
        let clock = FakeClock::new(home.path());
        let data = home.path().join("data");
        Point {
            home,
            clock,
            agent: None,
            data,
            from: Utc::now() - chrono::Duration::seconds(1),
            since: SystemTime::now() - Duration::from_secs(1),
            problems: Vec::new(),
        }
    }

    fn start(&mut self) {
        self.agent = Some(spawn_agent_with(&self.home, |cmd| self.clock.apply(cmd)));
    }

    fn live_dir(&self) -> std::path::PathBuf {
        self.data.join("cameras").join(LIVE)
    }

    /// Waits for `n` more whole segments of the live camera.
    fn records(&mut self, n: usize, what: &str) -> bool {
        let dir = self.live_dir();
        let before = record_count(&dir);
        let from: BTreeMap<String, u64> = [(LIVE.to_owned(), before as u64)].into();
        let ok = wait_until(RECORDING, || {
            records_after(&dir, before as u64).len() >= n && resumed(&self.data, &[LIVE], &from)
        });
        if !ok {
            self.problems.push(format!(
                "{what}: the live camera did not seal {n} more segment(s):\n{}",
                log_tail(&self.home)
            ));
        }
        ok
    }

    /// Waits for the live camera's next rotation, then `within` more: an
    /// instant inside a segment.
    fn inside_a_segment(&mut self, within: Duration) {
        let dir = self.live_dir();
        let before = record_count(&dir);
        if !wait_fine(RECORDING, || record_count(&dir) > before) {
            self.problems
                .push("the live camera stopped recording".into());
        }
        std::thread::sleep(within);
    }

    /// Seals the due records, then checks that the agent indexed them and
    /// paused instead of deleting them.
    fn due_records_wait(&mut self) {
        old_segments(&self.home, OLD, DUE, 40);
        let cfg = self.home.config_path().display().to_string();
        let mut last = String::new();
        let paused = wait_until(RECORDING, || {
            let (ok, out, err) = sargs(&["status", "--json", "--config", &cfg]);
            last = format!("{out}{err}");
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&out) else {
                return false;
            };
            let past: u64 = v["classes"]
                .as_array()
                .map(|cs| cs.iter().filter_map(|c| c["past_deadline"].as_u64()).sum())
                .unwrap_or(0);
            ok && past >= DUE as u64 && !v["last_sweep"]["paused"].is_null()
        });
        if !paused {
            self.problems.push(format!(
                "the due records were not indexed with deletions paused: {last}\n{}",
                log_tail(&self.home)
            ));
        }
        let n = receipt_count(&self.data);
        if n != 0 {
            self.problems
                .push(format!("{n} record(s) deleted while the clock was faulted"));
        }
    }

    /// Waits for every due record to be deleted: the time that took.
    fn deletions_resume(&mut self, corrected: Instant) -> Option<Duration> {
        if wait_until(RESUME, || receipt_count(&self.data) >= DUE) {
            return Some(corrected.elapsed());
        }
        self.problems.push(format!(
            "{} of {DUE} due records deleted within {RESUME:?} of the correction:\n{}",
            receipt_count(&self.data),
            log_tail(&self.home)
        ));
        None
    }

    /// The checks at the end of a point; the live camera's manifests.
    fn finish(
        mut self,
        camp: &mut Campaign,
        label: &str,
        at: f64,
        recovered: Option<Duration>,
    ) -> Vec<Manifest> {
        let live: Vec<Manifest> = records_after(&self.live_dir(), 0)
            .iter()
            .filter_map(|(_, p)| read_manifest(p))
            .collect();
        for r in receipts(&self.data) {
            if !r.segment_id.contains(&format!("/{OLD}/")) {
                self.problems.push(format!(
                    "{} was deleted ({:?}, deadline {}): a record of the live camera",
                    r.segment_id, r.reason, r.delete_after
                ));
            }
        }
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../../../docs/manifest.schema.json"))
                .expect("the schema is JSON");
        let schema = jsonschema::validator_for(&schema).expect("the schema is valid");
        for m in &live {
            let value = serde_json::to_value(m).expect("manifest as JSON");
            let first = schema.iter_errors(&value).next().map(|e| e.to_string());
            if let Some(e) = first {
                self.problems.push(format!(
                    "{} does not match docs/manifest.schema.json: {e}",
                    m.segment_id
                ));
            }
        }
        let to = Utc::now() + chrono::Duration::seconds(SLACK_S);
        let from = self.from - chrono::Duration::seconds(SLACK_S);
        for m in &live {
            let wrong = [m.start, m.end, m.sealed_at]
                .iter()
                .any(|t| *t < from || *t > to)
                || m.duration_ms > 5_000 * u64::from(SEGMENT_S);
            let flagged = m.clock_fault.is_some() || m.clock != SyncState::Synchronised;
            if wrong && !flagged {
                self.problems.push(format!(
                    "{} ({} – {}, sealed {}) has an impossible time and no flag",
                    m.segment_id, m.start, m.end, m.sealed_at
                ));
            }
        }
        if let Some(agent) = self.agent.take() {
            self.problems.extend(stop_and_verify(agent, &self.home));
        }
        if let Some(p) = plaintext_under(&self.data, self.since) {
            self.problems
                .push(format!("plaintext media in {}", p.display()));
        }
        let result = match (recovered, self.problems.is_empty()) {
            (Some(d), true) => Ok(d),
            _ => Err(std::mem::take(&mut self.problems)),
        };
        camp.point(label, at, result);
        live
    }
}

/// `what` of a scenario's point, for its lines.
fn label(camp: &Campaign, what: &str) -> String {
    format!(
        "{} seed {} point {} ({what})",
        camp.scenario,
        camp.seed,
        camp.next()
    )
}

/// A failure if no live record is flagged `fault`: the point did not do
/// what its scenario says.
fn expect(camp: &mut Campaign, label: &str, live: &[Manifest], fault: ClockFault) {
    if !live.iter().any(|m| m.clock_fault == Some(fault)) {
        camp.fail(format!(
            "{label}: no live record is flagged {fault:?}: the fault did not reach the agent"
        ));
    }
}

/// Counts of the live records' flags over a scenario, for its note.
#[derive(Default)]
struct Flags {
    records: usize,
    stepped: usize,
    impossible: usize,
    unsynchronised: usize,
}

impl Flags {
    fn add(&mut self, live: &[Manifest]) {
        for m in live {
            self.records += 1;
            match m.clock_fault {
                Some(ClockFault::Stepped) => self.stepped += 1,
                Some(ClockFault::Impossible) => self.impossible += 1,
                None => {}
            }
            if m.clock != SyncState::Synchronised {
                self.unsynchronised += 1;
            }
        }
    }

    fn note(&self) -> String {
        format!(
            "live records: {}, flagged stepped {}, impossible {}, sealed unsynchronised {}",
            self.records, self.stepped, self.impossible, self.unsynchronised
        )
    }
}

/// A point faulted and ready for its correction: its line's label, where
/// in its window the correction falls, and the flags its live records
/// must show.
struct Faulted {
    label: String,
    at: f64,
    point: Point,
    expected: &'static [ClockFault],
}

impl Faulted {
    fn new(
        camp: &Campaign,
        what: &str,
        at: f64,
        point: Point,
        expected: &'static [ClockFault],
    ) -> Faulted {
        Faulted {
            label: label(camp, what),
            at,
            point,
            expected,
        }
    }
}

/// Runs a scenario's points: `fault` draws a point and faults the agent's
/// clock; then NTP steps the clock right and synchronises it, and the
/// point is checked.
fn scenario(name: &'static str, mut fault: impl FnMut(&mut Campaign) -> Faulted) {
    let mut camp = Campaign::with_short(name, SHORT);
    let mut flags = Flags::default();
    while camp.more() {
        let Faulted {
            label,
            at,
            point: mut p,
            expected,
        } = fault(&mut camp);
        // The daemon steps the clock, then reports it synchronised.
        let corrected = Instant::now();
        p.clock.set(0, None);
        p.clock.settled();
        p.clock.ntp(true);
        let recovered = p.deletions_resume(corrected);
        p.records(1, "after the correction");
        let live = p.finish(&mut camp, &label, at, recovered);
        for f in expected {
            expect(&mut camp, &label, &live, *f);
        }
        flags.add(&live);
    }
    camp.note(flags.note());
    camp.finish();
}

/// A draw inside one segment: the delay and its fraction of the segment.
fn in_segment(camp: &mut Campaign) -> (Duration, f64) {
    let within = camp.rng.within(Duration::from_secs(u64::from(SEGMENT_S)));
    (within, within.as_secs_f64() / f64::from(SEGMENT_S))
}

#[test]
fn clock_jumps_ten_years_ahead_or_back() {
    scenario("jump", |camp| {
        let ahead = camp.rng.unit() < 0.5;
        let (within, at) = in_segment(camp);
        let what = format!(
            "{} 10 years {} ms into a segment",
            if ahead { "ahead" } else { "back" },
            within.as_millis()
        );
        let mut p = Point::new();
        p.start();
        p.records(1, "start");
        p.inside_a_segment(within);
        // A step by hand: the kernel reports the clock unsynchronised.
        p.clock.ntp(false);
        p.clock
            .set(if ahead { 10 * YEAR_S } else { -10 * YEAR_S }, None);
        p.clock.settled();
        p.records(2, "after the jump");
        p.due_records_wait();
        Faulted::new(camp, &what, at, p, &[ClockFault::Stepped])
    });
}

#[test]
fn a_board_without_a_real_time_clock_boots_at_1970() {
    scenario("boot-1970", |camp| {
        let boot = camp.rng.within(Duration::from_secs(3600)).as_secs() as i64;
        let (within, at) = in_segment(camp);
        let what = format!(
            "boots {boot} s after the epoch, corrected {} ms into a segment",
            within.as_millis()
        );
        let mut p = Point::new();
        // A gateway that recorded at the right time…
        p.start();
        p.records(1, "first start");
        if let Some(agent) = p.agent.take() {
            p.problems.extend(stop_and_verify(agent, &p.home));
        }
        // …restarts at 1970, unsynchronised.
        p.clock.set(boot - Utc::now().timestamp(), None);
        p.clock.ntp(false);
        p.start();
        p.records(2, "boot at 1970");
        p.due_records_wait();
        p.inside_a_segment(within);
        Faulted::new(
            camp,
            &what,
            at,
            p,
            &[ClockFault::Impossible, ClockFault::Stepped],
        )
    });
}

#[test]
fn ntp_steps_the_clock_inside_a_segment() {
    scenario("ntp-step", |camp| {
        let ahead = camp.rng.unit() < 0.5;
        let size = 30 + camp.rng.within(Duration::from_secs(3570)).as_secs() as i64;
        let (within, at) = in_segment(camp);
        let step = if ahead { size } else { -size };
        let what = format!("{step:+} s, {} ms into a segment", within.as_millis());
        let mut p = Point::new();
        // The clock is off by the step until the time daemon's first
        // synchronisation steps it, mid-segment.
        p.clock.set(-step, None);
        p.clock.ntp(false);
        p.start();
        p.records(1, "start");
        p.due_records_wait();
        p.inside_a_segment(within);
        Faulted::new(camp, &what, at, p, &[ClockFault::Stepped])
    });
}

#[test]
fn a_free_running_clock_drifts_until_ntp_corrects_it() {
    scenario("drift", |camp| {
        // 10 % fast: 3 s ahead after half a minute, never 2 s between two
        // readings seconds apart; the gain is kept when the rate ends.
        let drifting = Duration::from_secs(20) + camp.rng.within(Duration::from_secs(20));
        let what = format!("corrected after {} s of drift", drifting.as_secs());
        let mut p = Point::new();
        p.clock.set(0, Some(1.1));
        p.clock.ntp(false);
        p.start();
        let started = Instant::now();
        p.records(1, "start");
        p.due_records_wait();
        if let Some(left) = drifting.checked_sub(started.elapsed()) {
            std::thread::sleep(left);
        }
        Faulted::new(camp, &what, (drifting.as_secs_f64() - 20.0) / 20.0, p, &[])
    });
}
