//! The disk campaign: the real agent (`sargs run`, two test cameras in 2 s
//! segments, reporting to a real Mosquitto) with its data directory on the
//! fault-injecting disk (`support::faultfs`, over a tmpfs), a fault started at a seeded
//! random instant inside a segment, held, then ended:
//! - "write-eio": writes and fsyncs of the first camera's files fail (EIO);
//! - "read-eio": reads of every file fail (EIO), while HQ asks the agent to
//!   send its records again (a `resend`, which reads them);
//! - "enospc": the disk fills after a drawn number of bytes (ENOSPC);
//! - "stall": every write and fsync waits until the fault ends;
//! - "read-only": every change fails (EROFS), as after the kernel remounted
//!   the file system read-only.
//!
//! Invariant checked at every point (docs/RELIABILITY.md): HQ's side of the
//! broker received an alarm naming the fault (the OS error; of a stall,
//! which fails nothing, the `disk.stalled` of an operation that has not
//! returned, then its `disk.resumed`) and where (a path under the data
//! directory); every file sealed before the fault
//! (segments, manifests, receipts) is still there with the same SHA-256;
//! every camera seals a whole new segment after the fault ends; no
//! plaintext media under the data directory. After the points of one data
//! directory, with the agent stopped cleanly, `sargs verify` passes whole
//! (chains, receipts, index and files agree) — a segment the fault cut
//! short is committed `truncated` and verifies.
//!
//! `SARGS_DISK_FAULT_S` sets how long a fault is held (default 2 s: the
//! suite's short version; the agent reports a write held 1 s,
//! `agent.disk_stall_s = 1`); the time to recover runs from the fault's end
//! to every camera having sealed a whole new segment.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use super::checks::*;
use super::{env_u64, sleep_until, Campaign};
use crate::faults::SmallDisk;
use crate::harness::*;
use crate::mqtt::{hq_tables, sargsctl_command, topic};
use crate::support::faultfs::{Disk, Fault};
use crate::support::mosquitto::{Broker, Watcher};

const CAMERAS: [&str; 2] = ["cam-a", "cam-b"];
const SEGMENT_S: u32 = 2;
/// Faults on one data directory before the next point starts a fresh one.
const PER_HOME: usize = 5;
/// The most bytes written before the disk is full ("enospc").
const BUDGET: u32 = 96 << 10;
/// What a stall's alarm says (`disk.stalled`).
const STALLED: &str = "has not returned for";
/// Every OS error a fault injects: an alarm naming one that is not its
/// fault's names the wrong cause.
const ERRORS: [&str; 3] = [
    "Input/output error",
    "No space left on device",
    "Read-only file system",
];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Scenario {
    WriteEio,
    ReadEio,
    NoSpace,
    Stall,
    ReadOnly,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::WriteEio => "write-eio",
            Scenario::ReadEio => "read-eio",
            Scenario::NoSpace => "enospc",
            Scenario::Stall => "stall",
            Scenario::ReadOnly => "read-only",
        }
    }

    /// The OS error an alarm must name.
    fn error_text(self) -> &'static str {
        match self {
            Scenario::WriteEio | Scenario::ReadEio => "Input/output error",
            Scenario::NoSpace => "No space left on device",
            Scenario::Stall => STALLED,
            Scenario::ReadOnly => "Read-only file system",
        }
    }

    fn fault(self, camp: &mut Campaign) -> Fault {
        match self {
            Scenario::WriteEio => Fault::WriteEio {
                pattern: format!("cameras/{}/", CAMERAS[0]),
            },
            Scenario::ReadEio => Fault::ReadEio {
                pattern: String::new(),
            },
            // Up to a second of both cameras: the disk fills at any point
            // of a segment, its seal, a manifest, the index or the outbox.
            Scenario::NoSpace => Fault::NoSpace {
                budget: (camp.rng.unit() * f64::from(BUDGET)) as u64,
            },
            Scenario::Stall => Fault::Stall {
                pattern: String::new(),
            },
            Scenario::ReadOnly => Fault::ReadOnly,
        }
    }
}

/// SHA-256 of every sealed file: segments, manifests, receipts (read from
/// the backing directory, past the fault).
fn sealed_digests(backing: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![backing.join("receipts")];
    if let Ok(rd) = std::fs::read_dir(backing.join("cameras")) {
        dirs.extend(rd.flatten().map(|e| e.path()));
    }
    for dir in dirs {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let sealed = name.ends_with(".mp4.age")
                || (name.ends_with(".json")
                    && name.trim_end_matches(".json").parse::<u64>().is_ok());
            if !sealed {
                continue;
            }
            if let Ok(bytes) = std::fs::read(e.path()) {
                let rel = e
                    .path()
                    .strip_prefix(backing)
                    .map(|p| p.display().to_string());
                out.insert(
                    rel.unwrap_or(name),
                    sargs_core::seal::manifest::sha256_hex(&bytes),
                );
            }
        }
    }
    out
}

/// Camera alarms since message `since` that name an injected error other
/// than `error`: a wrong cause reported.
fn wrong_causes(w: &Watcher, error: &str, since: usize) -> Vec<String> {
    w.seen[since.min(w.seen.len())..]
        .iter()
        .filter(|(t, _, _)| t.ends_with("/events"))
        .filter_map(|(_, p, _)| serde_json::from_slice::<serde_json::Value>(p).ok())
        .filter(|v| v["event"] == "camera.down" || v["event"] == "recording.stopped")
        .filter_map(|v| v["reason"].as_str().map(str::to_owned))
        .filter(|r| ERRORS.iter().any(|e| *e != error && r.contains(e)))
        .map(|r| format!("an alarm names a cause this fault did not inject: {r}"))
        .collect()
}

/// Files sealed before the fault that are gone or changed.
fn altered(backing: &Path, before: &BTreeMap<String, String>) -> Vec<String> {
    let now = sealed_digests(backing);
    before
        .iter()
        .filter_map(|(path, sha)| match now.get(path) {
            Some(s) if s == sha => None,
            Some(_) => Some(format!("{path} was altered")),
            None => Some(format!("{path} is gone")),
        })
        .collect()
}

/// An event or response that names the fault's error and a path of the
/// data directory: `(event, text)`.
fn alarm(w: &mut Watcher, error: &str, since: usize, limit: Duration) -> Option<(String, String)> {
    // The index's errors too: SQLite's "disk I/O error" comes with what
    // the OS said (`retention::error`).
    let named = |text: &str| text.contains(error) && text.contains("/data/");
    let end = Instant::now() + limit;
    loop {
        let found = w.seen[since.min(w.seen.len())..]
            .iter()
            .find_map(|(t, p, _)| {
                let text = String::from_utf8_lossy(p);
                let kind = if t.ends_with("/events") || t.ends_with("/responses") {
                    serde_json::from_slice::<serde_json::Value>(p)
                        .ok()
                        .and_then(|v| {
                            v["event"]
                                .as_str()
                                .or(v["status"].as_str())
                                .map(str::to_owned)
                        })
                } else {
                    None
                };
                (named(&text)).then(|| (kind.unwrap_or_else(|| t.clone()), text.into_owned()))
            });
        if found.is_some() {
            return found;
        }
        let left = end.checked_duration_since(Instant::now())?;
        // Any message: it lands in `seen`.
        w.wait("", left.min(Duration::from_millis(200)), |_| false);
    }
}

/// One data directory's agent, its disk and HQ's watcher (dropped in
/// this order: the agent before its disk is unmounted, the home last).
struct Rig {
    agent: Option<Spawned>,
    watcher: Watcher,
    disk: Disk,
    /// Kept running for the agent and the watcher.
    _broker: Broker,
    since: SystemTime,
    _ram: SmallDisk,
    home: Home,
}

fn rig() -> Result<Rig, String> {
    let home = Home::new();
    let broker = Broker::start(home.path(), None);
    let key = hq_keygen(home.path());
    let cams = hq_tables(&broker.url(), &key, None)
        + &CAMERAS
            .iter()
            .map(|c| test_camera(c, "cctv", ""))
            .collect::<String>();
    home.config_with(SEGMENT_S, "min_free_mb = 1\ndisk_stall_s = 1", &cams);
    // The backing directory on a tmpfs of its own: the machine's own disk
    // filling up (a shared build machine) is not this campaign's fault.
    let ram = SmallDisk::mount(&home.path().join("data.backing"), "256m");
    let disk = Disk::mount(&ram.0, &home.path().join("data"));
    let watcher = Watcher::connect(
        broker.port,
        "hq-operator",
        None,
        &["sargs/agents/test-gw/#"],
    );
    let (agent, _, since) = start_recording(&home, &CAMERAS)?;
    Ok(Rig {
        _ram: ram,
        home,
        _broker: broker,
        disk,
        agent: Some(agent),
        watcher,
        since,
    })
}

/// Runs points of `scenarios` in turn (the suite's short version: one of
/// each on one data directory).
pub fn run(mut camp: Campaign, scenarios: &[Scenario]) {
    let hold = Duration::from_secs(env_u64("SARGS_DISK_FAULT_S").unwrap_or(2));
    let mut hits: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut alarms: BTreeMap<String, usize> = BTreeMap::new();
    let mut turn = 0;
    while camp.more() {
        let mut r = match rig() {
            Ok(r) => r,
            Err(e) => {
                camp.fail(e);
                break;
            }
        };
        for _ in 0..PER_HOME {
            if !camp.more() {
                break;
            }
            let scenario = scenarios[turn % scenarios.len()];
            turn += 1;
            let data = r.home.path().join("data");
            let before = sealed_digests(&r.disk.backing);
            let seen = r.watcher.seen.len();
            let fault = scenario.fault(&mut camp);
            let anchor = Instant::now();
            let instant = camp.rng.within(Duration::from_secs(u64::from(SEGMENT_S)));
            let label = camp.label(instant, "a segment").replace(
                "(kill",
                &format!("({} fault held {} s,", scenario.name(), hold.as_secs()),
            );
            sleep_until(anchor, instant);
            r.disk.inject(fault.clone());
            if scenario == Scenario::ReadEio {
                // HQ asks for the records again: the agent reads them.
                let id = format!("c-disk-{}", camp.next());
                let cmd = sargsctl_command(
                    r.home.path(),
                    &id,
                    &["resend", "--records-from", &format!("{}=1", CAMERAS[0])],
                );
                r.watcher.publish(&topic("commands"), cmd);
            }
            std::thread::sleep(hold);
            // A stall's alarm must come while the disk still holds its
            // writes (the report must not wait on the disk it reports).
            let stalled_seen = scenario == Scenario::Stall
                && alarm(&mut r.watcher, STALLED, seen, Duration::from_secs(5)).is_some();
            let faulted: u64 = r.disk.hits().values().sum();
            let hit_note = r
                .disk
                .hits()
                .into_keys()
                .take(3)
                .collect::<Vec<_>>()
                .join(", ");
            // Recording resumed: a whole segment newer than every record
            // at the fault's end.
            let heads_at_end = heads(&data);
            r.disk.clear();
            let ended = Instant::now();
            *hits.entry(scenario.name()).or_default() += faulted;
            let mut problems = Vec::new();
            // Recording resumes on every camera.
            let recovered = if wait_until(RECORDING, || resumed(&data, &CAMERAS, &heads_at_end)) {
                Ok(ended.elapsed())
            } else {
                Err(format!(
                    "recording of {CAMERAS:?} did not resume within {RECORDING:?} after the fault:\n{}",
                    log_tail(&r.home)
                ))
            };
            // The alarm: expected of every fault that failed or held an
            // operation (a stall: one held past `disk_stall_s`).
            let expect_alarm = faulted > 0;
            let wait = Duration::from_secs(if expect_alarm { 30 } else { 3 });
            if scenario == Scenario::Stall && expect_alarm {
                if !stalled_seen {
                    problems.push(format!(
                        "no disk.stalled reached HQ's side of the broker while the disk stalled ({faulted} operations held: {hit_note})"
                    ));
                }
                // And its end: every reported operation returned.
                if alarm(&mut r.watcher, "\"disk.resumed\"", seen, wait).is_none() {
                    problems.push(format!(
                        "no disk.resumed reached HQ's side of the broker after the stall ended ({faulted} operations held: {hit_note})"
                    ));
                }
            }
            match alarm(&mut r.watcher, scenario.error_text(), seen, wait) {
                Some((kind, _)) => *alarms.entry(format!("{}: {kind}", scenario.name())).or_default() += 1,
                None if expect_alarm => problems.push(format!(
                    "no alarm naming \"{}\" and a path of the data directory reached HQ's side of the broker ({faulted} operations faulted: {hit_note})",
                    scenario.error_text()
                )),
                None => {}
            }
            problems.extend(wrong_causes(&r.watcher, scenario.error_text(), seen));
            problems.extend(altered(&r.disk.backing, &before));
            if let Some(p) = plaintext_under(&data, r.since) {
                problems.push(format!("plaintext media in {}", p.display()));
            }
            if faulted == 0 {
                camp.note(format!("{label}: the fault hit no operation"));
            }
            let stuck = recovered.is_err();
            let at = instant.as_secs_f64() / f64::from(SEGMENT_S);
            camp.point(&label, at, merge(problems, recovered));
            r.since = SystemTime::now() - Duration::from_secs(1);
            if stuck {
                // A camera that does not record again: a fresh directory.
                break;
            }
        }
        if let Some(agent) = r.agent.take() {
            for p in stop_and_verify(agent, &r.home) {
                camp.fail(p);
            }
        }
        drop(r);
    }
    for (s, n) in hits {
        camp.note(format!("{s}: {n} operations faulted"));
    }
    let seen: Vec<String> = alarms.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
    camp.note(format!("alarms: {}", seen.join(", ")));
    camp.finish();
}

#[test]
fn disk_faults_short() {
    run(
        Campaign::with_short("disk", 4),
        &[
            Scenario::WriteEio,
            Scenario::NoSpace,
            Scenario::ReadOnly,
            Scenario::Stall,
        ],
    );
}

#[test]
#[ignore = "campaign: scripts/campaign-disk runs it"]
fn disk_write_eio() {
    run(Campaign::new("write-eio"), &[Scenario::WriteEio]);
}

#[test]
#[ignore = "campaign: scripts/campaign-disk runs it"]
fn disk_read_eio() {
    run(Campaign::new("read-eio"), &[Scenario::ReadEio]);
}

#[test]
#[ignore = "campaign: scripts/campaign-disk runs it"]
fn disk_enospc() {
    run(Campaign::new("enospc"), &[Scenario::NoSpace]);
}

#[test]
#[ignore = "campaign: scripts/campaign-disk runs it"]
fn disk_stall() {
    run(Campaign::new("stall"), &[Scenario::Stall]);
}

#[test]
#[ignore = "campaign: scripts/campaign-disk runs it"]
fn disk_read_only() {
    run(Campaign::new("read-only"), &[Scenario::ReadOnly]);
}
