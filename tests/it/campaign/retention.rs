//! Scenarios "sweep" and "commands": the agent killed while its retention
//! engine deletes segments past their deadline, and while it applies
//! signed commands (holds, data-subject requests, erasures) handed to it
//! with `sargs apply`, as made by `sargsctl`.
//!
//! Every home records one live camera (recording must resume after each
//! restart) and has a disabled camera whose old records the test seals
//! itself. "sweep": bursts of records 31+ days old, the first ones of each
//! under a legal hold placed before the burst, killed at an instant
//! uniform over the time a burst's sweep takes here (measured first), from
//! its first receipt. "commands": a cycle of hold, request, erasure for
//! the request (which must spare the held records) and closing, each
//! killed at an instant uniform over the time `sargs apply` takes here.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use sargs_core::seal::manifest::Manifest;

use super::checks::*;
use super::{sleep_until, Campaign};
use crate::commands::COMMON;
use crate::harness::*;

const LIVE: &str = "cam-live";
pub(super) const OLD: &str = "cam-old";
/// Bursts (or command cycles' points) on one data directory.
const PER_HOME: usize = 8;
/// Records per burst, of which the first `HELD` are under a hold.
const BURST: usize = 60;
const HELD: usize = 10;

/// A home with the live and the old camera.
fn retention_home() -> Home {
    let home = Home::new();
    retention_config(&home, &[LIVE]);
    home
}

/// `home`'s config: the `live` cameras and the disabled old camera, a
/// sweep every second, HQ's key (made by `sargsctl keygen` in the home)
/// trusted for commands.
pub(super) fn retention_config(home: &Home, live: &[&str]) {
    let key = hq_keygen(home.path());
    let cams = format!(
        "[retention]\nsweep_interval_s = 1\nfree_space_floor_mb = 1\ntrust_unsynchronised_clock = true\n\n[hq]\ncommand_keys = [\"{key}\"]\n\n{}{}",
        live.iter()
            .map(|c| test_camera(c, "cctv", ""))
            .collect::<String>(),
        test_camera(OLD, "cctv", "enabled = false")
    );
    home.config_with(2, "min_free_mb = 1", &cams);
}

/// A signed command file made with `sargsctl VERB… --id ID` in the home.
pub(super) fn command_file(home: &Home, id: &str, verb: &[&str]) -> String {
    let out = format!("{id}.cmd");
    let args = [verb, &COMMON[..], &["--id", id, "--out", out.as_str()]].concat();
    let (ok, _, err) = sargsctl_in(&args, home.path());
    assert!(ok, "sargsctl {verb:?}: {err}");
    home.path().join(out).display().to_string()
}

/// `sargs apply` of a command file, started (its answer is awaited later;
/// it ends by itself once answered, or after its 30 s wait).
pub(super) fn start_apply(home: &Home, file: &str) -> Child {
    let cfg = home.config_path().display().to_string();
    bin_command(env!("CARGO_BIN_EXE_sargs"))
        .args(["apply", "--config", cfg.as_str(), file])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sargs apply")
}

/// The answer `sargs apply` printed, or why there is none.
pub(super) fn answer(apply: Child) -> Result<serde_json::Value, String> {
    let out = apply.wait_with_output().map_err(|e| e.to_string())?;
    serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "sargs apply printed no answer ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

pub(super) fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339()
}

/// A scope's `--from/--to` covering exactly the segments `first..=last`
/// of a run of contiguous one-minute segments (start before `to`, end at
/// or after `from`).
fn range_of(first: &Manifest, last: &Manifest) -> [String; 2] {
    let half = chrono::Duration::seconds(30);
    [rfc(first.start + half), rfc(last.start + half)]
}

#[test]
fn kill_9_during_the_retention_sweep() {
    let mut camp = Campaign::new("sweep");
    let mut cuts = Cuts::default();
    let mut window: Option<Duration> = None;
    while camp.more() {
        let home = retention_home();
        let (mut agent, data, mut since) = match start_recording(&home, &[LIVE]) {
            Ok(started) => started,
            Err(e) => {
                camp.fail(e);
                break;
            }
        };
        let mut protected: Vec<Manifest> = Vec::new();
        let mut due = 0;
        for b in 0..PER_HOME {
            if !camp.more() {
                break;
            }
            // The previous burst is swept whole (its restart finished it).
            if !wait_until(RECORDING, || receipts(&data).len() >= due) {
                camp.fail(format!(
                    "{} of {due} due deletions made before burst {b}:\n{}",
                    receipts(&data).len(),
                    log_tail(&home)
                ));
                break;
            }
            let before = receipts(&data).len();
            let held = match held_burst(&home, &format!("H-{b}"), 200 - b as i64, BURST, HELD) {
                Ok(held) => held,
                Err(e) => {
                    camp.fail(e);
                    break;
                }
            };
            protected.extend(held);
            due += BURST - HELD;
            let total = due;
            let kept = protected.len();
            let what = format!(
                "from a burst's first receipt ({} deletions in a batch)",
                BURST - HELD
            );
            let (w, measured) = camp.window(&mut window, &what, || {
                // The first burst, swept whole: from its first receipt to
                // its last media file gone, half as long again for the
                // index commit that follows.
                let started = wait_fine(RECORDING, || receipt_count(&data) > before);
                assert!(started, "the sweep starts:\n{}", log_tail(&home));
                let t = Instant::now();
                assert!(
                    wait_fine(RECORDING, || receipt_count(&data) >= total
                        && sealed_count(&home.camera_dir(OLD)) <= kept),
                    "the first burst is swept:\n{}",
                    log_tail(&home)
                );
                (t.elapsed() * 3 / 2).max(Duration::from_millis(50))
            });
            if measured {
                // The first burst was the measure: the next one is killed.
                continue;
            }
            if !wait_fine(RECORDING, || receipt_count(&data) > before) {
                camp.fail(format!("burst {b} is not swept:\n{}", log_tail(&home)));
                break;
            }
            let anchor = Instant::now();
            let instant = camp.rng.within(w);
            let label = camp.label(instant, "the burst's first receipt");
            sleep_until(anchor, instant);
            kill_9(&mut agent);
            let at = instant.as_secs_f64() / w.as_secs_f64();
            let problems = after_kill(&home, since, &protected, &mut cuts);
            since = SystemTime::now() - Duration::from_secs(1);
            let (again, recovered) = restart(&home, &[LIVE]);
            agent = again;
            camp.point(&label, at, merge(problems, recovered));
        }
        // Everything due is deleted once, the held records are all there;
        // the store verifies whole.
        for p in swept_once(&home, due, &protected) {
            camp.fail(p);
        }
        for p in stop_and_verify(agent, &home) {
            camp.fail(p);
        }
    }
    camp.note(cuts.note());
    camp.finish();
}

/// A burst of `n` records of the old camera, `days` old, the first `held`
/// of them under the hold `hold` placed (with `sargs apply`) before they
/// exist: the held records.
pub(super) fn held_burst(
    home: &Home,
    hold: &str,
    days: i64,
    n: usize,
    held: usize,
) -> Result<Vec<Manifest>, String> {
    let t0 = Utc::now() - chrono::Duration::days(days);
    let from = t0 - chrono::Duration::minutes(1);
    let to = t0 + chrono::Duration::seconds(held as i64 * 60 - 30);
    let file = command_file(
        home,
        &format!("c-{hold}"),
        &[
            "hold",
            "--hold",
            hold,
            "--case",
            "KP 1/2026",
            "--cameras",
            OLD,
            "--from",
            &rfc(from),
            "--to",
            &rfc(to),
        ],
    );
    match answer(start_apply(home, &file)) {
        Ok(v) if v["status"] == "applied" => {}
        other => return Err(format!("the hold {hold} was not applied: {other:?}")),
    }
    old_segments(home, OLD, n, days);
    let covered = covered(&home.path().join("data"), OLD, from, to);
    if covered.len() != held {
        return Err(format!(
            "the hold {hold} covers {} records, not the burst's first {held}",
            covered.len()
        ));
    }
    Ok(covered)
}

/// The segments `first..first+n` of the old camera's records, in order.
fn run_of(records: &[Manifest], first: usize, n: usize) -> &[Manifest] {
    &records[first..first + n]
}

#[test]
fn kill_9_while_holds_and_erasures_are_applied() {
    let mut camp = Campaign::new("commands");
    let mut cuts = Cuts::default();
    let mut window: Option<Duration> = None;
    let mut cycle = 0;
    while camp.more() {
        let home = retention_home();
        // Two cycles of 20 records each: 5 held, 10 requested and erased,
        // 5 untouched. Two days old: far from their deadline.
        old_segments(&home, OLD, 40, 2);
        let (mut agent, data, mut since) = match start_recording(&home, &[LIVE]) {
            Ok(started) => started,
            Err(e) => {
                camp.fail(e);
                break;
            }
        };
        let records = covered(&data, OLD, DateTime::<Utc>::MIN_UTC, Utc::now());
        assert_eq!(records.len(), 40, "the old records");
        let (w, _) = camp.window(&mut window, "from `sargs apply` starting", || {
            // `sargs apply` of an inventory (it changes nothing), three times.
            let mut took: Vec<Duration> = (0..3)
                .map(|i| {
                    let [from, to] = range_of(&records[0], &records[39]);
                    let file = command_file(
                        &home,
                        &format!("c-inv-{i}"),
                        &["inventory", "--cameras", OLD, "--from", &from, "--to", &to],
                    );
                    let t = Instant::now();
                    let a = answer(start_apply(&home, &file)).expect("inventory answered");
                    assert_eq!(a["status"], "applied", "{a}");
                    t.elapsed()
                })
                .collect();
            took.sort();
            (took[1] * 3 / 2).max(Duration::from_millis(100))
        });
        // What must stay: the held and untouched records of every cycle,
        // the requested ones until their erasure.
        let mut keep: Vec<Manifest> = Vec::new();
        let mut requested: Vec<Manifest> = Vec::new();
        for step in 0..PER_HOME {
            if !camp.more() {
                break;
            }
            let c = step / 4;
            let base = 20 * c;
            let (held, asked, spare) = (
                run_of(&records, base, 5),
                run_of(&records, base + 5, 10),
                run_of(&records, base + 15, 5),
            );
            let (hold, req) = (format!("H-{cycle}-{c}"), format!("R-{cycle}-{c}"));
            let id = format!("c-{cycle}-{step}");
            let [hf, ht] = range_of(&held[0], &held[4]);
            let [rf, rt] = range_of(&asked[0], &asked[9]);
            let file = match step % 4 {
                0 => {
                    keep.extend(held.iter().cloned());
                    keep.extend(spare.iter().cloned());
                    command_file(
                        &home,
                        &id,
                        &[
                            "hold",
                            "--hold",
                            &hold,
                            "--case",
                            "KP 2/2026",
                            "--cameras",
                            OLD,
                            "--from",
                            &hf,
                            "--to",
                            &ht,
                        ],
                    )
                }
                1 => {
                    requested = asked.to_vec();
                    command_file(
                        &home,
                        &id,
                        &[
                            "request",
                            "open",
                            "--request",
                            &req,
                            "--cameras",
                            OLD,
                            "--from",
                            &rf,
                            "--to",
                            &rt,
                        ],
                    )
                }
                2 => command_file(
                    &home,
                    &id,
                    &[
                        "erase",
                        "--cameras",
                        OLD,
                        "--from",
                        &hf,
                        "--to",
                        &rt,
                        "--request",
                        &req,
                    ],
                ),
                _ => command_file(&home, &id, &["request", "close", "--request", &req]),
            };
            let mut apply = start_apply(&home, &file);
            let anchor = Instant::now();
            let instant = camp.rng.within(w);
            let label = camp.label(instant, &format!("`sargs apply` of {id} started"));
            sleep_until(anchor, instant);
            kill_9(&mut agent);
            let protected: Vec<Manifest> = keep.iter().chain(&requested).cloned().collect();
            let mut problems = after_kill(&home, since, &keep, &mut cuts);
            problems.extend(requested_gone_without_erasure(&data, &protected));
            since = SystemTime::now() - Duration::from_secs(1);
            // `sargs apply` that found no agent running applies the command
            // itself, holding the store: the agent starts once it is done,
            // or once the command waits in the inbox for it.
            if !wait_until(RECORDING, || {
                matches!(apply.try_wait(), Ok(Some(_))) || in_inbox(&data)
            }) {
                problems.push(format!("{id}: `sargs apply` neither ended nor queued it"));
            }
            let (again, recovered) = restart(&home, &[LIVE]);
            agent = again;
            // The command reaches the agent once: applied (by the restarted
            // agent, or before the kill and then answered again as a replay).
            match answer(apply) {
                Ok(a) if a["status"] == "applied" || a["code"] == "replayed" => {}
                other => problems.push(format!("{id}: answer {other:?}")),
            }
            problems.extend(effect(&home, step % 4, &hold, &requested, &id));
            if step % 4 == 2 {
                requested.clear();
            }
            let at = instant.as_secs_f64() / w.as_secs_f64();
            camp.point(&label, at, merge(problems, recovered));
        }
        for id in gone(&data, &keep) {
            camp.fail(format!("held or untouched record {id} is gone"));
        }
        for p in stop_and_verify(agent, &home) {
            camp.fail(p);
        }
        cycle += 1;
    }
    camp.note(cuts.note());
    camp.finish();
}

/// Whether a command waits in the agent's inbox.
fn in_inbox(data: &std::path::Path) -> bool {
    std::fs::read_dir(data.join("inbox"))
        .map(|rd| {
            rd.flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with(".cmd"))
        })
        .unwrap_or(false)
}

/// Requested records whose media is gone without an erasure receipt.
fn requested_gone_without_erasure(data: &std::path::Path, protected: &[Manifest]) -> Vec<String> {
    let erased: std::collections::HashSet<String> = receipts(data)
        .into_iter()
        .filter(|r| r.reason.as_str() == "erasure")
        .map(|r| r.segment_id)
        .collect();
    gone(data, protected)
        .into_iter()
        .filter(|id| !erased.contains(id))
        .map(|id| format!("record {id} is gone without an erasure receipt"))
        .collect()
}

/// After the restart, the command's effect is there: the hold in force,
/// the requested records erased with receipts naming the erasure.
fn effect(home: &Home, kind: usize, hold: &str, requested: &[Manifest], id: &str) -> Vec<String> {
    let data = home.path().join("data");
    match kind {
        0 => {
            let cfg = home.config_path().display().to_string();
            let (ok, out, err) = sargs(&["status", "--json", "--config", &cfg]);
            let st: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
            let held = st["holds"]
                .as_array()
                .is_some_and(|h| h.iter().any(|h| h == hold));
            if ok && held {
                vec![]
            } else {
                vec![format!(
                    "hold {hold} is not in force after the restart: {out}{err}"
                )]
            }
        }
        2 => {
            let erased =
                |r: &sargs_core::retention::receipt::Receipt| r.command_id.as_deref() == Some(id);
            let done = wait_until(RECORDING, || {
                let by_it: std::collections::HashSet<String> = receipts(&data)
                    .into_iter()
                    .filter(|r| erased(r))
                    .map(|r| r.segment_id)
                    .collect();
                requested.iter().all(|m| by_it.contains(&m.segment_id))
            });
            if done {
                vec![]
            } else {
                vec![format!(
                    "erasure {id}: not every requested record has its receipt"
                )]
            }
        }
        _ => vec![],
    }
}
