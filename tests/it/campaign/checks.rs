//! What the campaign checks after each kill and each restart, as values
//! (a list of problems) rather than panics, so that a campaign counts its
//! failures and goes on.
//!
//! After a kill: `sargs verify` passes, or each problem it names is a
//! record whose operation the kill cut short — the newest record of its
//! camera with its media still in the `.partial`/`.ingest` file (the seal
//! cut between the manifest and the rename), records at the tail of a chain
//! the index has not caught up with (completed at start), or a segment a
//! valid receipt names whose index row still says present (a deletion cut
//! between the unlink and the index commit). Anything else is a failure.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use sargs_core::seal::manifest::{Manifest, RecordKind};

use crate::harness::*;

/// The agent's id in every campaign config (the harness's).
pub const AGENT: &str = "test-gw";

/// What a kill interrupted, as `sargs verify` shows it before the restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cut {
    /// Nothing: the store was consistent at the kill.
    None,
    /// A seal between its manifest and its rename.
    Seal,
    /// Records the index had not caught up with.
    Index,
    /// A deletion between its unlink and its index commit.
    Deletion,
}

/// Counts of [`Cut`]s over a scenario, for its note.
#[derive(Default)]
pub struct Cuts(pub BTreeMap<Cut, usize>);

impl Cuts {
    pub fn add(&mut self, cuts: &BTreeSet<Cut>) {
        if cuts.is_empty() {
            *self.0.entry(Cut::None).or_default() += 1;
        }
        for c in cuts {
            *self.0.entry(*c).or_default() += 1;
        }
    }

    pub fn note(&self) -> String {
        let name = |c: &Cut| match c {
            Cut::None => "consistent at the kill",
            Cut::Seal => "a seal cut short",
            Cut::Index => "index behind a chain",
            Cut::Deletion => "a deletion cut short",
        };
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(c, n)| format!("{n} {}", name(c)))
            .collect();
        format!("kills found: {}", parts.join(", "))
    }
}

/// The manifest in a record file (the signature is `sargs verify`'s to check).
pub fn read_manifest(path: &Path) -> Option<Manifest> {
    let bytes = std::fs::read(path).ok()?;
    let env = sargs_core::seal::sign::Envelope::open(&bytes, None).ok()?;
    serde_json::from_str(&env.payload).ok()
}

/// Record files of a camera with a number above `after`, in order.
pub fn records_after(dir: &Path, after: u64) -> Vec<(u64, PathBuf)> {
    let mut v: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let seq = name.strip_suffix(".json")?.parse::<u64>().ok()?;
                    (seq > after).then(|| (seq, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The newest record number of each camera under `<data>/cameras`.
pub fn heads(data: &Path) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir(data.join("cameras")) else {
        return out;
    };
    for cam in rd.flatten() {
        let name = cam.file_name().to_string_lossy().into_owned();
        let head = records_after(&cam.path(), 0).last().map_or(0, |(s, _)| *s);
        out.insert(name, head);
    }
    out
}

/// A whole (not truncated) segment sealed in every one of `cameras` after
/// the records in `before`: recording resumed.
pub fn resumed(data: &Path, cameras: &[&str], before: &BTreeMap<String, u64>) -> bool {
    cameras.iter().all(|cam| {
        let dir = data.join("cameras").join(cam);
        let after = before.get(*cam).copied().unwrap_or(0);
        records_after(&dir, after).iter().any(|(_, p)| {
            read_manifest(p).is_some_and(|m| {
                m.record == RecordKind::Segment
                    && m.dock.is_none()
                    && m.media
                        .as_ref()
                        .is_some_and(|x| !x.truncated && dir.join(&x.file).exists())
            })
        })
    })
}

/// Segment ids named by the receipts on disk.
pub fn receipted(data: &Path) -> HashSet<String> {
    receipts(data).into_iter().map(|r| r.segment_id).collect()
}

/// The receipts on disk (read without checking signatures: `sargs verify`
/// checks them).
pub fn receipts(data: &Path) -> Vec<sargs_core::retention::receipt::Receipt> {
    std::fs::read_dir(data.join("receipts"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                .filter_map(|e| {
                    let bytes = std::fs::read(e.path()).ok()?;
                    let env = sargs_core::seal::sign::Envelope::open(&bytes, None).ok()?;
                    serde_json::from_str(&env.payload).ok()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// How many receipts are on disk (their files, not read).
pub fn receipt_count(data: &Path) -> usize {
    std::fs::read_dir(data.join("receipts"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                .count()
        })
        .unwrap_or(0)
}

/// Polls `cond` every millisecond for up to `limit`: for the instant an
/// operation starts or ends, which a kill window is measured from.
pub fn wait_fine(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    cond()
}

/// `(camera, number)` of a segment id `test-gw/CAMERA/N` in `text`.
fn segment_id_in(text: &str) -> Option<(String, u64)> {
    let at = text.find(&format!("{AGENT}/"))?;
    let rest = &text[at + AGENT.len() + 1..];
    let (cam, rest) = rest.split_once('/')?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((cam.to_owned(), digits.parse().ok()?))
}

/// `(camera, number)` of a record file `…/cameras/CAMERA/NNNNNNNNNN.json`
/// at the start of a problem line.
fn record_file_in(line: &str) -> Option<(String, u64)> {
    let (path, _) = line.split_once(".json:")?;
    let path = Path::new(path);
    let seq = path.file_name()?.to_str()?.parse().ok()?;
    let cam = path.parent()?.file_name()?.to_str()?.to_owned();
    Some((cam, seq))
}

/// Whether the media of record `seq` is still in its unfinished file.
fn unfinished(dir: &Path, seq: u64) -> bool {
    let prefix = format!("{seq:010}.");
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten().any(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with(&prefix) && (n.ends_with(".partial") || n.ends_with(".ingest"))
            })
        })
        .unwrap_or(false)
}

/// `sargs verify` on the home's data directory with the agent stopped:
/// what the kill cut short, or the problems that are failures.
pub fn verify_after_kill(home: &Home) -> Result<BTreeSet<Cut>, Vec<String>> {
    let cfg = home.config_path().display().to_string();
    let (ok, out, err) = sargs(&["verify", "--config", &cfg]);
    let mut cuts = BTreeSet::new();
    if ok {
        return Ok(cuts);
    }
    let data = home.path().join("data");
    let heads = heads(&data);
    let receipted = receipted(&data);
    let mut bad = Vec::new();
    let mut unindexed: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    let problems: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("  "))
        .map(str::trim)
        .collect();
    if problems.is_empty() {
        return Err(vec![format!(
            "sargs verify failed without naming a problem: {out}{err}"
        )]);
    }
    for line in problems {
        if line.contains("is on disk but not indexed") {
            if let Some((cam, seq)) = segment_id_in(line) {
                unindexed.entry(cam).or_default().insert(seq);
                cuts.insert(Cut::Index);
                continue;
            }
        } else if line.contains("is indexed as present but") {
            if let Some((cam, seq)) = segment_id_in(line) {
                if receipted.contains(&format!("{AGENT}/{cam}/{seq}")) {
                    cuts.insert(Cut::Deletion);
                    continue;
                }
            }
        } else if line.contains("media file missing, and no deletion receipt names it") {
            if let Some((cam, seq)) = record_file_in(line) {
                let dir = data.join("cameras").join(&cam);
                if heads.get(&cam) == Some(&seq) && unfinished(&dir, seq) {
                    cuts.insert(Cut::Seal);
                    continue;
                }
            }
        }
        bad.push(format!("sargs verify after the kill: {line}"));
    }
    // The index may lag a chain only at its end: the records it misses are
    // the newest ones, without a hole.
    for (cam, seqs) in &unindexed {
        let head = heads.get(cam).copied().unwrap_or(0);
        let first = seqs.first().copied().unwrap_or(0);
        if seqs.len() as u64 != head + 1 - first {
            bad.push(format!(
                "sargs verify after the kill: {cam}'s unindexed records {seqs:?} are not the chain's newest (head {head})"
            ));
        }
    }
    if bad.is_empty() {
        Ok(cuts)
    } else {
        Err(bad)
    }
}

/// The segment records of `camera` whose interval meets `[from, to)` (the
/// index's scope rule: start before `to`, end at or after `from`).
pub fn covered(data: &Path, camera: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Manifest> {
    records_after(&data.join("cameras").join(camera), 0)
        .iter()
        .filter_map(|(_, p)| read_manifest(p))
        .filter(|m| m.record == RecordKind::Segment && m.start < to && m.end >= from)
        .collect()
}

/// Of the protected records, those whose media file is gone.
pub fn gone(data: &Path, protected: &[Manifest]) -> Vec<String> {
    protected
        .iter()
        .filter(|m| {
            let file = m.media.as_ref().map(|x| x.file.clone()).unwrap_or_default();
            !data.join("cameras").join(&m.camera_id).join(file).exists()
        })
        .map(|m| m.segment_id.clone())
        .collect()
}

/// The checks every agent point makes right after its kill: the store
/// (see [`verify_after_kill`]), no protected record gone, no plaintext
/// written under the data directory since `since`.
pub fn after_kill(
    home: &Home,
    since: SystemTime,
    protected: &[Manifest],
    cuts: &mut Cuts,
) -> Vec<String> {
    let data = home.path().join("data");
    let mut problems = match verify_after_kill(home) {
        Ok(c) => {
            cuts.add(&c);
            Vec::new()
        }
        Err(p) => p,
    };
    for id in gone(&data, protected) {
        problems.push(format!("protected record {id} is gone"));
    }
    if let Some(p) = plaintext_under(&data, since) {
        problems.push(format!("plaintext media in {}", p.display()));
    }
    problems
}

/// The last lines of the agent's log, for a failure's message.
pub fn log_tail(home: &Home) -> String {
    let text = std::fs::read_to_string(home.path().with_extension("log")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Kills the agent with SIGKILL and reaps it.
pub fn kill_9(agent: &mut Spawned) {
    agent.kill().expect("kill -9");
    agent.wait().expect("reaped");
}

/// Starts the agent again and waits until every one of `cameras` has
/// sealed a whole new segment: the time that took, or why not.
pub fn restart(home: &Home, cameras: &[&str]) -> (Spawned, Result<Duration, String>) {
    let data = home.path().join("data");
    let before = heads(&data);
    let started = Instant::now();
    let agent = spawn_agent(home);
    let result = if wait_until(RECORDING, || resumed(&data, cameras, &before)) {
        Ok(started.elapsed())
    } else {
        Err(format!(
            "recording of {cameras:?} did not resume within {RECORDING:?} after the restart:\n{}",
            log_tail(home)
        ))
    };
    (agent, result)
}

/// Waits until a freshly started agent has sealed a whole segment of each
/// of `cameras`.
pub fn wait_ready(home: &Home, cameras: &[&str]) -> Result<(), String> {
    let data = home.path().join("data");
    if wait_until(RECORDING, || resumed(&data, cameras, &BTreeMap::new())) {
        Ok(())
    } else {
        Err(format!("a fresh agent did not record:\n{}", log_tail(home)))
    }
}

/// Starts the agent on a fresh home and waits until it records: the
/// agent, its data directory, and the instant plaintext scans start from.
pub fn start_recording(
    home: &Home,
    cameras: &[&str],
) -> Result<(Spawned, PathBuf, SystemTime), String> {
    let since = SystemTime::now() - Duration::from_secs(1);
    let agent = spawn_agent(home);
    wait_ready(home, cameras)?;
    Ok((agent, home.path().join("data"), since))
}

/// Stops the agent with SIGTERM and runs `sargs verify`, which must pass
/// whole: every interrupted operation was completed.
pub fn stop_and_verify(mut agent: Spawned, home: &Home) -> Vec<String> {
    let mut problems = Vec::new();
    // SAFETY: SIGTERM to our own child.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    match agent.wait() {
        Ok(s) if s.success() => {}
        other => problems.push(format!(
            "the agent's clean stop failed: {other:?}\n{}",
            log_tail(home)
        )),
    }
    let cfg = home.config_path().display().to_string();
    let (ok, out, err) = sargs(&["verify", "--config", &cfg]);
    if !ok {
        problems.push(format!("sargs verify after the restarts: {out}{err}"));
    }
    problems
}

/// A point's result from its problems and its restart.
pub fn merge(
    mut problems: Vec<String>,
    recovered: Result<Duration, String>,
) -> Result<Duration, Vec<String>> {
    match recovered {
        Ok(d) if problems.is_empty() => Ok(d),
        Ok(_) => Err(problems),
        Err(e) => {
            problems.push(e);
            Err(problems)
        }
    }
}

/// After the points of a data directory: each of the `due` deletions made
/// (in time), once — one receipt each —, and no `protected` record gone.
pub fn swept_once(home: &Home, due: usize, protected: &[Manifest]) -> Vec<String> {
    let data = home.path().join("data");
    let mut problems = Vec::new();
    if !wait_until(RECORDING, || receipts(&data).len() >= due) {
        problems.push(format!(
            "{} of {due} due deletions made after the restarts:\n{}",
            receipts(&data).len(),
            log_tail(home)
        ));
    }
    let ids = receipted(&data);
    if ids.len() != receipts(&data).len() || ids.len() != due {
        problems.push(format!(
            "{} receipts for {} segments, {due} due: a segment deleted twice or not at all",
            receipts(&data).len(),
            ids.len()
        ));
    }
    for id in gone(&data, protected) {
        problems.push(format!("held record {id} is gone"));
    }
    problems
}
