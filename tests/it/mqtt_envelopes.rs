//! What an agent reports of its records over MQTT carries the records' signed
//! envelopes, so HQ verifies each report against the device key the status
//! names — and `resend` publishes them again from the agent's files. Against
//! a real Mosquitto, with real recording.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;
use sargs_core::retention::receipt::Receipt;
use sargs_core::seal::manifest::{sha256_hex, Manifest};
use sargs_core::seal::sign::Envelope;
use serde_json::Value;

use crate::harness::*;
use crate::mqtt::{setup, AGENT, T};
use crate::support::mosquitto::Watcher;

/// The device key a status message names, checked against the agent's key file.
fn status_key(w: &mut Watcher, home: &Home, state: &str) -> [u8; 32] {
    let status = w
        .wait("/status", T, |v| v["state"] == state)
        .unwrap_or_else(|| panic!("status {state}"));
    let b64 = status["device_key"]
        .as_str()
        .unwrap_or_else(|| panic!("a device_key: {status}"));
    let key: [u8; 32] = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .ok()
        .and_then(|k| k.try_into().ok())
        .unwrap_or_else(|| panic!("a Base64 Ed25519 key: {status}"));
    assert_eq!(key, home.device_key(), "the agent's own key");
    key
}

/// Checks one record event against `key` and the agent's files; returns
/// (event, sequence).
fn verified(v: &Value, key: &[u8; 32], data: &Path) -> (String, u64) {
    let event = v["event"].as_str().unwrap_or_default().to_owned();
    let bytes = serde_json::to_vec(&v["envelope"]).expect("json");
    let env = Envelope::open(&bytes, Some(key)).unwrap_or_else(|e| panic!("{e}: {v}"));
    let sha = sha256_hex(env.payload.as_bytes());
    let (fields, file) = match event.as_str() {
        "segment.deleted" => {
            // The receipt's fields are the signed receipt's, every one.
            let signed: Receipt = serde_json::from_str(&env.payload).expect("a receipt");
            let told: Receipt = serde_json::from_value(v["receipt"].clone()).expect("receipt");
            assert_eq!(told, signed, "{v}");
            let file = data.join(format!("receipts/{:010}.json", signed.sequence));
            (&v["receipt"], file)
        }
        "segment.sealed" | "gap.recorded" => {
            let fields = &v[if event == "gap.recorded" {
                "gap"
            } else {
                "segment"
            }];
            assert_eq!(fields["manifest_sha256"], sha.as_str(), "{v}");
            let m: Manifest = serde_json::from_str(&env.payload).expect("a manifest");
            assert_eq!(fields["segment_id"], m.segment_id.as_str(), "{v}");
            assert_eq!(fields["sequence"], m.sequence, "{v}");
            assert_eq!(fields["class"], m.retention.class.as_str(), "{v}");
            match &m.gap {
                Some(gap) => {
                    assert_eq!(event, "gap.recorded", "{v}");
                    assert_eq!(fields["reason"], gap.reason.as_str(), "{v}");
                }
                None => {
                    let media = m.media.as_ref().expect("a segment has media");
                    assert_eq!(event, "segment.sealed", "{v}");
                    assert_eq!(
                        fields["ciphertext_sha256"],
                        media.ciphertext_sha256.as_str()
                    );
                }
            }
            let file = data.join(format!("cameras/{}/{:010}.json", m.camera_id, m.sequence));
            (fields, file)
        }
        other => panic!("not a record event: {other}"),
    };
    // The envelope is the one its file holds.
    let on_disk: Value =
        serde_json::from_slice(&std::fs::read(&file).expect("the record's file")).expect("json");
    assert_eq!(v["envelope"], on_disk, "{}", file.display());
    (event, fields["sequence"].as_u64().expect("sequence"))
}

/// The record events seen so far, verified, as (event, sequence).
fn seen_records(w: &Watcher, key: &[u8; 32], data: &Path) -> Vec<(String, u64)> {
    w.seen
        .iter()
        .filter(|(t, _, _)| t.ends_with("/events"))
        .filter_map(|(_, p, _)| serde_json::from_slice::<Value>(p).ok())
        .filter(|v| v.get("envelope").is_some())
        .map(|v| verified(&v, key, data))
        .collect()
}

fn count(events: &[(String, u64)], kind: &str) -> usize {
    events.iter().filter(|(e, _)| e == kind).count()
}

#[test]
fn sealed_gap_and_deleted_events_carry_envelopes_that_verify_against_the_status_key() {
    let home = Home::new();
    let (_broker, config, mut w) = setup(&home, None, "cam-1", "");
    assert!(w.wait_answered(T), "the watcher is connected");
    // Recorded 40 days ago (past the 30-day deadline) while no agent ran:
    // deleted with receipts once the agent runs, and the time since is a gap.
    old_segments(&home, "cam-1", 3, 40);
    let agent = sargs::agent::Agent::start(&config).expect("agent");
    let key = status_key(&mut w, &home, "online");
    let data = config.agent.data_dir.clone();
    let mut events = Vec::new();
    let all_kinds = w.wait("/events", RECORDING, |v| {
        if let Some(kind) = v["event"].as_str() {
            events.push(kind.to_owned());
        }
        events.iter().filter(|e| *e == "segment.deleted").count() >= 3
            && events.iter().any(|e| e == "gap.recorded")
            && events.iter().any(|e| e == "segment.sealed")
    });
    agent.stop().expect("stop");
    assert!(all_kinds.is_some(), "events seen: {events:?}");
    status_key(&mut w, &home, "offline");
    let seen = seen_records(&w, &key, &data);
    assert_eq!(count(&seen, "segment.deleted"), 3, "{seen:?}");
    assert!(seen.contains(&("gap.recorded".into(), 4)), "{seen:?}");
    assert!(count(&seen, "segment.sealed") >= 1, "{seen:?}");
}

#[test]
fn resend_publishes_receipts_and_records_again_from_the_files() {
    let home = Home::new();
    let dir = home.path();
    let (broker, config, mut w) = setup(&home, None, "cam-old", "enabled = false");
    // A chain recorded while no agent ran: segments 1, 2, a gap of a day (3),
    // segments 4, 5 — all past their deadline.
    old_segments(&home, "cam-old", 2, 41);
    old_segments(&home, "cam-old", 2, 40);
    let agent = sargs::agent::Agent::start(&config).expect("agent");
    let key = status_key(&mut w, &home, "online");
    let data = config.agent.data_dir.clone();
    let deleted = w.wait("/events", T, |v| {
        v["event"] == "segment.deleted" && v["receipt"]["sequence"] == 4
    });
    assert!(deleted.is_some(), "the four segments are deleted");
    assert!(wait_until(T, || segments(&home.camera_dir("cam-old")).is_empty()));
    // A record's manifest HQ asks for is no longer on disk.
    std::fs::remove_file(home.camera_dir("cam-old").join("0000000001.json")).expect("remove");
    w.seen.clear();

    let url = broker.url();
    let args = [
        "resend",
        "--receipts-from",
        "2",
        "--records-from",
        "cam-old=1",
        "--records-from",
        "cam-none=1",
        "--agent",
        AGENT,
        "--id",
        "c-resend",
        "--key",
        "hq/signing.pk8",
        "--issuer",
        "HQ duty officer",
        "--broker",
        &url,
        "--wait",
        "15",
        "--json",
    ];
    let (ok, out, err) = sargsctl_in(&args, dir);
    assert!(ok, "{out} {err}");
    let r: Value = serde_json::from_str(out.lines().next().unwrap_or_default()).expect("JSON line");
    assert_eq!(r["status"], "applied", "{r}");
    let result = &r["result"];
    assert_eq!(
        result["receipts"],
        serde_json::json!({"from": 2, "head": 4, "queued": 3, "missing": [], "unreadable": []}),
        "{result}"
    );
    assert_eq!(
        result["records"]["cam-old"],
        serde_json::json!({"from": 1, "head": 5, "queued": 4, "missing": [1], "unreadable": []}),
        "{result}"
    );
    assert_eq!(result["records"]["cam-none"]["queued"], 0, "{result}");
    assert_eq!(result["queued"], 7, "{result}");
    assert_eq!(result["truncated"], false, "{result}");

    // Every one arrives, verified against the key and equal to its file.
    let mut got = BTreeMap::new();
    let arrived = w.wait("/events", T, |v| {
        if let (Some(kind), Some(_)) = (v["event"].as_str(), v.get("envelope")) {
            *got.entry(kind.to_owned()).or_insert(0) += 1;
        }
        got.values().sum::<usize>() >= 7
    });
    assert!(arrived.is_some(), "{got:?}");
    let mut seen = seen_records(&w, &key, &data);
    seen.sort();
    let expected: Vec<(String, u64)> = [
        ("gap.recorded", 3),
        ("segment.deleted", 2),
        ("segment.deleted", 3),
        ("segment.deleted", 4),
        ("segment.sealed", 2),
        ("segment.sealed", 4),
        ("segment.sealed", 5),
    ]
    .iter()
    .map(|(e, n)| ((*e).to_owned(), *n))
    .collect();
    assert_eq!(seen, expected);
    agent.stop().expect("stop");
}

#[test]
fn the_last_will_names_the_device_key_too() {
    let home = Home::new();
    let (_broker, _config, mut w) = setup(&home, None, "cam-1", "enabled = false");
    let mut child = spawn_agent(&home);
    status_key(&mut w, &home, "online");
    child.kill().expect("kill -9");
    let _ = child.wait();
    // The broker publishes the Will: the agent had no say in it.
    status_key(&mut w, &home, "offline");
}
