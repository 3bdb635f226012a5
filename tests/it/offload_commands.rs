//! Offload when HQ asks, against a real Garage on 127.0.0.1: a signed
//! `offload` command and a hold with `offload = true` send exactly the
//! records their scope covers from a camera that does not offload
//! everything; an agent without `[offload]` refuses both with the reason; a
//! command applied just before a kill -9, while the store was down, is
//! carried out after the restart.
//! The store's listing is the test's own (`crate::offload::Reader`).

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::Utc;
use sargs_core::command::Scope;
use serde_json::Value;

use crate::commands::COMMON;
use crate::harness::*;
use crate::offload::{
    agent_log, assert_store_matches_index, index, offloaded, offloaded_count, site, stop_cleanly,
    Reader,
};

/// HQ's command key (made in the home) trusted by the agent, and a clock
/// the test machine need not have synchronised.
fn hq_block(home: &Home) -> String {
    let key = hq_keygen(home.path());
    format!(
        "[retention]\ntrust_unsynchronised_clock = true\nfree_space_floor_mb = 1\n\n\
         [hq]\ncommand_keys = [\"{key}\"]\n\n"
    )
}

/// A config of one camera that does not offload by itself, with `store`
/// (an `[offload]` table, or nothing).
fn config(home: &Home, store: &str) -> sargs::config::Config {
    let cams = hq_block(home) + &test_camera("cam-1", "cctv", "") + store;
    home.config_with(2, "min_free_mb = 1", &cams)
}

/// Signs a command with `sargsctl` into `out` (in the home).
fn sign(home: &Home, args: &[&str], out: &str) {
    let full = [args, &COMMON, &["--out", out]].concat();
    let (ok, _, err) = sargsctl_in(&full, home.path());
    assert!(ok, "{args:?}: {err}");
}

/// `sargs apply` of `file`: to the running agent if there is one. Returns
/// whether it was applied and the response.
fn apply(home: &Home, file: &str) -> (bool, Value) {
    let cfg = home.config_path();
    let (ok, out, err) = sargs_in(
        &["apply", "--config", cfg.to_str().expect("utf-8 path"), file],
        home.path(),
    );
    let resp = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out} {err}"));
    (ok, resp)
}

/// The object keys of `camera`'s records `seqs`: the manifest, and the
/// media where the record has some.
fn keys_of(home: &Home, camera: &str, seqs: &BTreeSet<u64>) -> BTreeSet<String> {
    let dir = home.camera_dir(camera);
    manifests(&dir, &home.device_key())
        .into_iter()
        .filter(|m| seqs.contains(&m.sequence))
        .flat_map(|m| {
            let name = format!("test-gw/{camera}/{:010}", m.sequence);
            std::iter::once(format!("{name}.json"))
                .chain(m.media.is_some().then(|| format!("{name}.mp4.age")))
        })
        .collect()
}

/// `sargs run` on the home's config, once it has sealed `n` segments of cam-1.
fn recording(home: &Home, n: usize) -> Spawned {
    let agent = spawn_agent(home);
    let dir = home.camera_dir("cam-1");
    assert!(
        wait_until(RECORDING, || sealed_count(&dir) >= n),
        "recording:\n{}",
        agent_log(home)
    );
    agent
}

fn done(home: &Home) -> BTreeSet<u64> {
    offloaded(home).into_iter().map(|(_, s, _)| s).collect()
}

#[test]
fn an_offload_command_sends_exactly_the_records_it_covers() {
    let (g, key, home, table) = site();
    let config = config(&home, &table);
    record_sealed(&config, &["cam-1"], 3);
    sign(
        &home,
        &["offload", "--segments", "test-gw/cam-1/1,test-gw/cam-1/3"],
        "offload.json",
    );
    let (ok, resp) = apply(&home, "offload.json");
    assert!(ok, "{resp}");
    assert_eq!(resp["kind"], "offload");
    assert_eq!(
        resp["result"],
        serde_json::json!({"covered_records": 2, "queued": 2, "already_offloaded": 0})
    );
    // The agent runs until both went and two records nobody asked for were
    // sealed after them.
    let dir = home.camera_dir("cam-1");
    let before = record_count(&dir);
    record_until(&config, RECORDING, "records 1 and 3 offloaded", || {
        offloaded_count(&home) >= 2 && record_count(&dir) >= before + 2
    });
    let want: BTreeSet<u64> = [1, 3].into();
    assert_eq!(done(&home), want);
    let reader = Reader::new(&g, &key);
    assert_eq!(reader.list(), keys_of(&home, "cam-1", &want));
    assert_eq!(assert_store_matches_index(&home, &reader, true), 2);
}

#[test]
fn a_hold_with_offload_sends_the_records_of_its_range() {
    let (g, key, home, table) = site();
    config(&home, &table);
    let mut agent = recording(&home, 2);
    let (from, to) = (Utc::now() - chrono::Duration::hours(1), Utc::now());
    let (from_s, to_s) = (from.to_rfc3339(), to.to_rfc3339());
    #[rustfmt::skip]
    let args = ["hold", "--hold", "H-9", "--case", "KP 9/2026", "--offload",
        "--cameras", "cam-1", "--from", &from_s, "--to", &to_s];
    sign(&home, &args, "hold.json");
    let (ok, resp) = apply(&home, "hold.json");
    assert!(ok, "{resp}");
    let queued = resp["result"]["offload"]["queued"].as_u64().unwrap_or(0);
    assert!(queued >= 2, "{resp}");
    // The range is closed once a record starts after it; then every record
    // it covers (the one open at the command included) must go.
    let scope = Scope::Range {
        cameras: vec!["cam-1".into()],
        from,
        to,
    };
    let covered = || -> BTreeSet<u64> {
        index(&home)
            .in_scope(&scope, "test-gw")
            .expect("in scope")
            .into_iter()
            .map(|r| r.seq)
            .collect()
    };
    let after = Scope::Range {
        cameras: vec!["cam-1".into()],
        from: to,
        to: to + chrono::Duration::days(1),
    };
    let closed = || {
        index(&home)
            .in_scope(&after, "test-gw")
            .expect("in scope")
            .iter()
            .any(|r| r.start >= to)
    };
    let all_went = wait_until(Duration::from_secs(120), || {
        closed() && done(&home) == covered()
    });
    stop_cleanly(&mut agent);
    assert!(all_went, "the held records went:\n{}", agent_log(&home));
    let want = covered();
    assert!(want.len() as u64 >= queued, "{want:?}, {queued} queued");
    let reader = Reader::new(&g, &key);
    assert_eq!(reader.list(), keys_of(&home, "cam-1", &want));
    assert_eq!(
        assert_store_matches_index(&home, &reader, false),
        want.len()
    );
}

#[test]
fn without_a_store_offload_is_refused_with_the_reason() {
    let home = Home::new();
    config(&home, "");
    sign(
        &home,
        &["offload", "--segments", "test-gw/cam-1/1"],
        "offload.json",
    );
    #[rustfmt::skip]
    let hold = ["hold", "--hold", "H-1", "--case", "KP 1/2026", "--segments", "test-gw/cam-1/1"];
    sign(
        &home,
        &[&hold[..], &["--offload"]].concat(),
        "hold-offload.json",
    );
    for file in ["offload.json", "hold-offload.json"] {
        let (ok, resp) = apply(&home, file);
        assert!(!ok, "{file}: {resp}");
        assert_eq!(resp["status"], "rejected", "{file}");
        assert_eq!(resp["code"], "refused", "{file}");
        let reason = resp["reason"].as_str().unwrap_or_default();
        assert!(reason.contains("no [offload] section"), "{file}: {reason}");
    }
    // The same hold without offload is placed.
    sign(&home, &hold, "hold.json");
    let (ok, resp) = apply(&home, "hold.json");
    assert!(ok, "{resp}");
}

/// The store is down, so no upload can finish before the kill: what the
/// applied command asked for is carried out by the next run.
#[test]
fn an_offload_command_survives_kill_9_before_its_uploads() {
    let (mut g, key, home, table) = site();
    g.stop();
    config(&home, &table);
    let mut agent = recording(&home, 3);
    let segments = "test-gw/cam-1/1,test-gw/cam-1/2,test-gw/cam-1/3";
    sign(&home, &["offload", "--segments", segments], "offload.json");
    let (ok, resp) = apply(&home, "offload.json");
    assert!(ok, "{resp}");
    assert_eq!(resp["result"]["queued"], 3, "{resp}");
    agent.kill().expect("kill -9");
    agent.wait().expect("reaped");
    assert_eq!(offloaded_count(&home), 0, "nothing went before the kill");

    g.restart();
    let mut agent = spawn_agent(&home);
    let want: BTreeSet<u64> = [1, 2, 3].into();
    let all_went = wait_until(Duration::from_secs(120), || done(&home) == want);
    stop_cleanly(&mut agent);
    assert!(all_went, "records 1-3 went:\n{}", agent_log(&home));
    let reader = Reader::new(&g, &key);
    assert_eq!(reader.list(), keys_of(&home, "cam-1", &want));
    assert_eq!(assert_store_matches_index(&home, &reader, false), 3);
}
