//! Retention through the real binaries: a hold applied with `sargs apply`
//! survives kill -9 of the agent, and kill -9 during a sweep leaves index,
//! receipts and files consistent.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use chrono::Utc;
use sargs_core::command::{Action, Command as Cmd, Scope, Target};
use sargs_core::seal::sign::DeviceKey;

use crate::harness::*;

/// `[retention]` and `[hq]` tables trusting `hq`, before the cameras.
fn tables(hq: &DeviceKey, extra_retention: &str) -> String {
    format!(
        "[retention]\nsweep_interval_s = 1\nfree_space_floor_mb = 1\ntrust_unsynchronised_clock = true\n{extra_retention}\n[hq]\ncommand_keys = [\"{}\"]\n\n",
        hq.public_key_b64()
    )
}

fn write_command(home: &Home, hq: &DeviceKey, name: &str, action: Action) -> std::path::PathBuf {
    let now = Utc::now();
    let cmd = Cmd {
        id: format!("c-{name}"),
        issued_at: now,
        expires_at: now + chrono::Duration::days(1),
        target: Target::Agent("test-gw".into()),
        issuer: "duty officer".into(),
        action,
    };
    let path = home.path().join(format!("{name}.cmd"));
    std::fs::write(&path, sargs_core::command::sign(hq, &cmd)).expect("command file");
    path
}

fn status_json(home: &Home) -> serde_json::Value {
    let cfg = home.config_path();
    let (ok, out, err) = sargs(&["status", "--json", "--config", cfg.to_str().expect("utf8")]);
    assert!(ok, "status: {err}");
    serde_json::from_str(&out).expect("status JSON")
}

#[test]
fn a_hold_applied_to_a_running_agent_survives_kill_9() {
    let home = Home::new();
    let hq = DeviceKey::generate().expect("hq key");
    home.config_with(
        2,
        "min_free_mb = 1",
        &(tables(&hq, "") + &test_camera("cam-1", "cctv", "")),
    );
    let mut agent = spawn_agent(&home);
    let dir = home.camera_dir("cam-1");
    assert!(
        wait_until(Duration::from_secs(30), || dir.exists()
            && segments(&dir).len() >= 2),
        "the agent records"
    );
    let scope = Scope::Range {
        cameras: vec!["cam-1".into()],
        from: Utc::now() - chrono::Duration::hours(1),
        to: Utc::now() + chrono::Duration::hours(1),
    };
    let file = write_command(
        &home,
        &hq,
        "hold",
        Action::HoldPlace {
            hold: "H-2026-17".into(),
            case: "KP 11-2026/88".into(),
            scope,
            until: None,
            offload: false,
        },
    );
    let cfg = home.config_path();
    let cfg = cfg.to_str().expect("utf8");
    let f = file.to_str().expect("utf8");
    let (ok, out, err) = sargs(&["apply", "--config", cfg, f]);
    // The instant apply returns, the agent dies without any chance to flush.
    agent.kill().expect("kill -9");
    let _ = agent.wait();
    assert!(ok, "apply: {out} {err}");
    let resp: serde_json::Value = serde_json::from_str(&out).expect("response JSON");
    assert_eq!(resp["status"], "applied", "{resp}");
    assert!(
        resp["result"]["covered_segments"].as_u64().unwrap_or(0) >= 1,
        "{resp}"
    );
    let st = status_json(&home);
    assert_eq!(st["holds"], serde_json::json!(["H-2026-17"]), "{st}");
    // Even a lost index gets the hold back, from the command journal.
    std::fs::remove_file(home.path().join("data/index.sqlite")).expect("rm index");
    let (ok, _, err) = sargs(&["reindex", "--config", cfg]);
    assert!(ok, "reindex: {err}");
    assert_eq!(
        status_json(&home)["holds"],
        serde_json::json!(["H-2026-17"])
    );
    // Applying the same file again changes nothing and says why.
    let (ok, out, _) = sargs(&["apply", "--config", cfg, f]);
    assert!(!ok);
    assert!(out.contains("\"replayed\""), "{out}");
    let (ok, out, err) = sargs(&["verify", "--config", cfg]);
    assert!(ok, "verify: {out} {err}");
}

#[test]
fn a_command_signed_by_an_untrusted_key_is_refused_and_changes_nothing() {
    let home = Home::new();
    let hq = DeviceKey::generate().expect("hq key");
    let intruder = DeviceKey::generate().expect("other key");
    home.config_with(
        2,
        "min_free_mb = 1",
        &(tables(&hq, "") + &test_camera("cam-1", "cctv", "")),
    );
    let file = write_command(
        &home,
        &intruder,
        "bad",
        Action::Erase {
            scope: Scope::Segments(vec!["test-gw/cam-1/1".into()]),
            request: None,
        },
    );
    let cfg = home.config_path();
    let (ok, out, err) = sargs(&[
        "apply",
        "--config",
        cfg.to_str().expect("utf8"),
        file.to_str().expect("utf8"),
    ]);
    assert!(!ok, "{out}");
    assert!(err.contains("bad.cmd"), "the error names the file: {err}");
    let resp: serde_json::Value = serde_json::from_str(&out).expect("response JSON");
    assert_eq!(resp["status"], "rejected");
    assert_eq!(status_json(&home)["receipts"], 0);
}

fn count(dir: &Path, suffix: &str) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(suffix))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn kill_9_during_a_sweep_leaves_index_receipts_and_files_consistent() {
    const N: usize = 400;
    let home = Home::new();
    let hq = DeviceKey::generate().expect("hq key");
    home.config_with(
        2,
        "min_free_mb = 1",
        &(tables(&hq, "") + &test_camera("cam-old", "cctv", "enabled = false")),
    );
    old_segments(&home, "cam-old", N, 40);
    let dir = home.camera_dir("cam-old");
    let receipts = home.path().join("data/receipts");
    assert_eq!(count(&dir, ".mp4.age"), N);
    // The agent's first sweep finds all N past their 30-day deadline.
    let mut agent = spawn_agent(&home);
    assert!(
        wait_until(Duration::from_secs(60), || count(&receipts, ".json") >= 50),
        "the sweep starts"
    );
    agent.kill().expect("kill -9");
    let _ = agent.wait();
    let written = count(&receipts, ".json");
    let left = count(&dir, ".mp4.age");
    assert!(
        written < N || left > 0,
        "killed in the middle ({written} receipts, {left} left)"
    );
    // At every instant: each missing media file has a valid receipt.
    let key = home.device_key();
    let chain = sargs_core::retention::receipt::verify_chain(&receipts, &key).expect("chain");
    assert!(chain.problems.is_empty(), "{:?}", chain.problems);
    assert!(
        N - left <= chain.deleted.len(),
        "{} gone, {} receipts",
        N - left,
        chain.deleted.len()
    );
    // The next start completes what the kill interrupted, then sweeps the rest.
    let mut agent = spawn_agent(&home);
    assert!(
        wait_until(Duration::from_secs(60), || count(&dir, ".mp4.age") == 0),
        "everything due is deleted after restart"
    );
    // SIGTERM: a clean stop.
    let _ = Command::new("kill").arg(agent.id().to_string()).status();
    let _ = agent.wait();
    let chain = sargs_core::retention::receipt::verify_chain(&receipts, &key).expect("chain");
    assert!(chain.problems.is_empty(), "{:?}", chain.problems);
    assert_eq!(
        chain.receipts as usize, N,
        "exactly one receipt per segment"
    );
    let cfg = home.config_path();
    let (ok, out, err) = sargs(&["verify", "--config", cfg.to_str().expect("utf8")]);
    assert!(ok, "verify: {out} {err}");
    assert!(out.contains(&format!("{N} deleted with receipts")), "{out}");
    let st = status_json(&home);
    assert_eq!(st["deleted"]["retention-expired"], N, "{st}");
}

#[test]
fn verify_names_every_disagreement_between_index_files_chains_and_receipts() {
    let home = Home::new();
    let hq = DeviceKey::generate().expect("hq key");
    let config = home.config_with(
        2,
        "min_free_mb = 1",
        &(tables(&hq, "")
            + &test_camera("cam-old", "cctv", "enabled = false")
            + &test_camera("cam-new", "cctv", "enabled = false")),
    );
    old_segments(&home, "cam-old", 3, 40);
    old_segments(&home, "cam-new", 3, 1);
    // The agent indexes both chains and deletes the three expired segments.
    let agent = sargs::agent::Agent::start(&config).expect("agent");
    let receipts = home.path().join("data/receipts");
    assert!(
        wait_until(Duration::from_secs(20), || std::fs::read_dir(&receipts)
            .map(|d| d.count() >= 3)
            .unwrap_or(false)),
        "expired segments deleted"
    );
    agent.stop().expect("stop");
    let cfg = home.config_path();
    let cfg = cfg.to_str().expect("utf8");
    let verify = || {
        let (ok, out, err) = sargs(&["verify", "--config", cfg]);
        (ok, format!("{out}{err}"))
    };
    let (ok, out) = verify();
    assert!(ok, "a consistent store verifies: {out}");

    let old = home.camera_dir("cam-old");
    let new = home.camera_dir("cam-new");
    let bad = |what: &str, needles: &[&str]| {
        let (ok, out) = verify();
        assert!(!ok, "{what}: verify passed:\n{out}");
        assert!(out.contains("problem(s) found"), "{what}: {out}");
        for n in needles {
            assert!(out.contains(n), "{what}: verify does not say {n:?}:\n{out}");
        }
    };

    // A present segment's media removed behind the agent's back.
    let media = new.join("0000000002.mp4.age");
    let kept = std::fs::read(&media).expect("media");
    std::fs::remove_file(&media).expect("rm");
    bad(
        "media missing",
        &[
            "test-gw/cam-new/2 is indexed as present but",
            "0000000002.mp4.age",
        ],
    );
    std::fs::write(&media, &kept).expect("restore");
    assert!(verify().0, "restored");

    // A deleted segment's media back on disk.
    let revived = old.join("0000000001.mp4.age");
    std::fs::write(&revived, &kept).expect("revive");
    bad(
        "deleted media present",
        &[
            "test-gw/cam-old/1 is indexed as deleted but",
            "still exists",
        ],
    );
    std::fs::remove_file(&revived).expect("rm");

    // A flipped byte in a receipt.
    let receipt = receipts.join("0000000002.json");
    let original = std::fs::read(&receipt).expect("receipt");
    let mut flipped = original.clone();
    let i = flipped.len() / 2;
    flipped[i] ^= 0x01;
    std::fs::write(&receipt, &flipped).expect("flip");
    bad("receipt tampered", &["0000000002.json"]);
    std::fs::write(&receipt, &original).expect("restore");
    assert!(verify().0, "restored");

    // A record sealed while the index did not look (the agent catches up at start).
    old_segments(&home, "cam-new", 1, 0);
    bad(
        "index behind the chain",
        &["test-gw/cam-new/4 is on disk but not indexed"],
    );
}
