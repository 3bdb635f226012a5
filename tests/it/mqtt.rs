//! The HQ link against a real Mosquitto on a free 127.0.0.1 port: commands in
//! (plain and TLS with client certificates), responses and receipts out,
//! nothing lost across broker outages and restarts, `offline` through the
//! Last Will after kill -9.

use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use sargs_core::command::{Action, Command as Cmd, Scope, Target};
use sargs_core::seal::sign::DeviceKey;
use serde_json::Value;

use crate::harness::*;
use crate::support::mosquitto::{Broker, Pki, Watcher};

pub const T: Duration = Duration::from_secs(20);
pub const AGENT: &str = "test-gw";

/// `[retention]` + `[hq]` tables for the broker at `url`, trusting `command_key`.
pub fn hq_tables(url: &str, command_key: &str, tls: Option<&Pki>) -> String {
    let mut s = format!(
        "[retention]\nsweep_interval_s = 1\nfree_space_floor_mb = 1\ntrust_unsynchronised_clock = true\n\n[hq]\nbroker = \"{url}\"\ncommand_keys = [\"{command_key}\"]\ntelemetry_interval_s = 1\nkeep_alive_s = 5\n"
    );
    if let Some(p) = tls {
        s += &format!(
            "ca_file = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\n",
            p.ca.display(),
            p.client_cert.display(),
            p.client_key.display()
        );
    }
    s + "\n"
}

/// A broker, HQ keys (`sargsctl keygen`), an agent config with one camera
/// (`camera_extra` in its block) and a watcher on the agent's topics.
pub fn setup(
    home: &Home,
    pki: Option<&Pki>,
    camera: &str,
    extra: &str,
) -> (Broker, sargs::config::Config, Watcher) {
    let broker = Broker::start(home.path(), pki);
    let key = hq_keygen(home.path());
    let cams = hq_tables(&broker.url(), &key, pki) + &test_camera(camera, "cctv", extra);
    let config = home.config_with(2, "min_free_mb = 1", &cams);
    let w = Watcher::connect(broker.port, "hq-test", pki, &["sargs/agents/test-gw/#"]);
    (broker, config, w)
}

/// A signed command file written by `sargsctl`, read back.
pub fn sargsctl_command(dir: &Path, name: &str, verb: &[&str]) -> Vec<u8> {
    let out = format!("{name}.json");
    let common = [
        "--key",
        "hq/signing.pk8",
        "--agent",
        AGENT,
        "--issuer",
        "HQ duty officer",
        "--id",
        name,
        "--out",
        &out,
    ];
    let (ok, _, err) = sargsctl_in(&[verb, &common[..]].concat(), dir);
    assert!(ok, "sargsctl {verb:?}: {err}");
    std::fs::read(dir.join(out)).expect("command file")
}

pub fn topic(t: &str) -> String {
    format!("sargs/agents/{AGENT}/{t}")
}

pub fn response(w: &mut Watcher, id: &str) -> Value {
    w.wait("/responses", T, |v| v["command_id"] == id)
        .unwrap_or_else(|| panic!("no response to {id}; seen {:?}", w.seen.len()))
}

/// Waits until the agent has finished `n` retention sweeps that began after
/// `after` (each indexes what was sealed, then deletes what is due).
pub fn sweeps_after(agent: &sargs::agent::Agent, after: chrono::DateTime<Utc>, n: usize) -> bool {
    let last = || {
        agent
            .retention()
            .status(Utc::now())
            .ok()
            .and_then(|s| s.last_sweep)
            .and_then(|s| s.at)
    };
    let mut after = after;
    for _ in 0..n {
        if !wait_until(T, || last().is_some_and(|at| at > after)) {
            return false;
        }
        after = last().unwrap_or(after);
    }
    true
}

fn deleted_ids(w: &mut Watcher, want: usize) -> Vec<String> {
    let mut ids = std::collections::BTreeSet::new();
    w.wait("/events", T, |v| {
        if v["event"] == "segment.deleted" {
            if let Some(id) = v["receipt"]["segment_id"].as_str() {
                ids.insert(id.to_owned());
            }
        }
        ids.len() >= want
    });
    ids.into_iter().collect()
}

#[test]
fn a_hold_placed_over_mqtt_survives_a_restart_and_its_release_deletes_with_receipts() {
    let home = Home::new();
    let dir = home.path();
    let (mut broker, config, mut w) = setup(&home, None, "cam-old", "enabled = false");
    let agent = sargs::agent::Agent::start(&config).expect("agent");
    assert!(
        w.wait("/status", T, |v| v["state"] == "online").is_some(),
        "birth"
    );

    // Evidence from 40 days ago (past its 30-day deadline) is held first…
    let from = (Utc::now() - chrono::Duration::days(41)).to_rfc3339();
    let to = (Utc::now() - chrono::Duration::days(39)).to_rfc3339();
    let hold = sargsctl_command(
        dir,
        "c-hold",
        &[
            "hold",
            "--hold",
            "H-1",
            "--case",
            "KP 1",
            "--cameras",
            "cam-old",
            "--from",
            &from,
            "--to",
            &to,
        ],
    );
    w.publish(&topic("commands"), hold);
    let r = response(&mut w, "c-hold");
    assert_eq!(r["status"], "applied", "{r}");
    // …then it reaches the store (the running agent indexes it at its next sweep).
    old_segments(&home, "cam-old", 3, 40);
    let media = home.camera_dir("cam-old");
    assert!(
        sweeps_after(&agent, Utc::now(), 2),
        "two sweeps after the old segments were sealed"
    );
    assert_eq!(segments(&media).len(), 3, "held: nothing deleted");

    agent.stop().expect("stop");
    assert!(
        w.wait("/status", T, |v| v["state"] == "offline").is_some(),
        "clean stop says offline"
    );
    w.seen.clear();
    let agent = sargs::agent::Agent::start(&config).expect("agent again");
    assert!(w.wait("/status", T, |v| v["state"] == "online").is_some());
    assert!(
        sweeps_after(&agent, Utc::now(), 2),
        "two sweeps after the restart"
    );
    assert_eq!(segments(&media).len(), 3, "the hold survived the restart");
    // Telemetry states what HQ watches, as counts and identifiers only.
    let tel = w
        .wait("/telemetry", T, |v| {
            v["storage"]["holds"] == serde_json::json!(["H-1"])
        })
        .expect("telemetry with the hold");
    let mut keys: Vec<&str> = tel
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "agent",
            "at",
            "cameras",
            "clock",
            "cpu_percent",
            "disk",
            "memory",
            "outbox",
            "storage",
            "temperature_c",
            "v"
        ],
        "{tel}"
    );
    let cctv = tel["storage"]["classes"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["class"] == "cctv"))
        .unwrap_or_else(|| panic!("the cctv class: {tel}"));
    assert_eq!(cctv["segments"], 3, "{tel}");
    assert_eq!(cctv["keep"], "30 days", "{tel}");
    assert_eq!(cctv["past_deadline"], 3, "held past the deadline: {tel}");
    assert!(cctv["oldest_age_days"].as_i64() >= Some(40), "{tel}");
    assert!(cctv["bytes"].as_u64() > Some(0), "{tel}");
    assert_eq!(tel["storage"]["holds_active"], 1, "{tel}");
    assert_eq!(tel["storage"]["requests_open"], 0, "{tel}");
    assert_eq!(
        tel["cameras"],
        serde_json::json!([{"id": "cam-old", "enabled": false, "state": "disabled"}]),
        "{tel}"
    );
    assert!(tel["outbox"]["depth"].is_u64(), "{tel}");
    assert!(tel["disk"]["total_bytes"].as_u64() > Some(0), "{tel}");
    assert!(tel["disk"]["free_bytes"].is_u64(), "{tel}");
    assert!(tel["clock"].is_string(), "{tel}");
    assert!(tel["cpu_percent"].is_number(), "{tel}");
    assert!(
        tel["temperature_c"].is_number() || tel["temperature_c"].is_null(),
        "a board without sensors says null: {tel}"
    );

    let release = sargsctl_command(dir, "c-release", &["release", "--hold", "H-1"]);
    w.publish(&topic("commands"), release);
    assert_eq!(response(&mut w, "c-release")["status"], "applied");
    let ids = deleted_ids(&mut w, 3);
    assert_eq!(ids.len(), 3, "a receipt per deleted segment: {ids:?}");
    // A receipt is durable, and on its way to HQ, before the media goes.
    assert!(
        wait_until(T, || segments(&media).is_empty()),
        "deleted after their receipts"
    );
    // Telemetry flows, with counts only.
    let tel = w
        .wait("/telemetry", T, |v| {
            v["storage"]["deleted"]["retention-expired"] == 3
        })
        .expect("telemetry with the deletions");
    assert_eq!(tel["storage"]["holds"], serde_json::json!([]), "{tel}");
    assert!(tel["memory"]["total_bytes"].as_u64() > Some(0), "{tel}");
    agent.stop().expect("stop");
    broker.stop();
}

#[test]
fn tls_with_client_certificates_carries_commands_and_responses() {
    let home = Home::new();
    let dir = home.path();
    let pki = Pki::make(&dir.join("pki"));
    let (_broker, config, mut w) = setup(&home, Some(&pki), "cam-1", "enabled = false");
    let agent = sargs::agent::Agent::start(&config).expect("agent");
    assert!(
        w.wait("/status", T, |v| v["state"] == "online").is_some(),
        "connected over TLS"
    );
    let from = (Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let to = Utc::now().to_rfc3339();
    let inv = sargsctl_command(
        dir,
        "c-inv",
        &[
            "inventory",
            "--cameras",
            "cam-1",
            "--from",
            &from,
            "--to",
            &to,
        ],
    );
    w.publish(&topic("commands"), inv);
    let r = response(&mut w, "c-inv");
    assert_eq!(r["status"], "applied", "{r}");
    assert!(r["result"]["records"].is_array());
    agent.stop().expect("stop");
    // A config without the client certificate cannot get in.
    let text = std::fs::read_to_string(home.config_path()).expect("config");
    let no_cert: String = text
        .lines()
        .filter(|l| !l.starts_with("client_"))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(home.config_path(), no_cert).expect("config");
    let config = sargs::config::Config::load(&home.config_path()).expect("config");
    w.seen.clear();
    let agent = sargs::agent::Agent::start(&config).expect("agent starts; the link keeps trying");
    assert!(w
        .wait("/status", Duration::from_secs(4), |v| v["state"]
            == "online")
        .is_none());
    agent.stop().expect("stop");
}

#[test]
fn bad_commands_are_rejected_with_their_reason_and_change_nothing() {
    let home = Home::new();
    let dir = home.path();
    let (_broker, config, mut w) = setup(&home, None, "cam-1", "enabled = false");
    let agent = sargs::agent::Agent::start(&config).expect("agent");
    assert!(w.wait("/status", T, |v| v["state"] == "online").is_some());
    let hq = DeviceKey::load(&dir.join("hq/signing.pk8")).expect("hq key");
    let intruder = DeviceKey::generate().expect("key");
    let now = Utc::now();
    let cmd = |id: &str,
               target: &str,
               issued: chrono::DateTime<Utc>,
               expires: chrono::DateTime<Utc>| Cmd {
        id: id.into(),
        issued_at: issued,
        expires_at: expires,
        target: Target::Agent(target.into()),
        issuer: "x".into(),
        action: Action::HoldPlace {
            hold: format!("H-{id}"),
            case: "c".into(),
            scope: Scope::Segments(vec!["test-gw/cam-1/1".into()]),
            until: None,
            offload: false,
        },
    };
    let day = chrono::Duration::days(1);
    let good = cmd("c-good", AGENT, now, now + day);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "c-bare",
            sargs_core::command::to_payload(&cmd("c-bare", AGENT, now, now + day)).into_bytes(),
            "unsigned",
        ),
        (
            "c-intruder",
            sargs_core::command::sign(&intruder, &cmd("c-intruder", AGENT, now, now + day)),
            "untrusted-key",
        ),
        (
            "c-old",
            sargs_core::command::sign(&hq, &cmd("c-old", AGENT, now - day * 2, now - day)),
            "expired",
        ),
        (
            "c-other",
            sargs_core::command::sign(&hq, &cmd("c-other", "gw-elsewhere", now, now + day)),
            "wrong-target",
        ),
        (
            "c-tampered",
            String::from_utf8(sargs_core::command::sign(
                &hq,
                &cmd("c-tampered", AGENT, now, now + day),
            ))
            .expect("utf8")
            .replace("H-c-tampered", "H-c-tamperex")
            .into_bytes(),
            "bad-signature",
        ),
        ("", b"{not json".to_vec(), "malformed"),
    ];
    for (id, bytes, code) in cases {
        w.publish(&topic("commands"), bytes);
        let r = w
            .wait("/responses", T, |v| v["code"] == code)
            .unwrap_or_else(|| panic!("no {code} response"));
        assert_eq!(r["status"], "rejected", "{r}");
        assert_eq!(r["command_id"], id, "{r}");
        assert!(r["reason"].as_str().is_some_and(|s| !s.is_empty()), "{r}");
        assert!(w
            .wait("/events", T, |v| v["event"] == "command.rejected"
                && v["code"] == code)
            .is_some());
    }
    let bytes = sargs_core::command::sign(&hq, &good);
    w.publish(&topic("commands"), bytes.clone());
    assert_eq!(response(&mut w, "c-good")["status"], "applied");
    w.publish(&topic("commands"), bytes);
    let r = w
        .wait("/responses", T, |v| v["code"] == "replayed")
        .expect("replayed");
    assert_eq!(r["command_id"], "c-good");
    agent.stop().expect("stop");
    // Only the good command changed anything.
    let cfg = home.config_path();
    let (ok, out, err) = sargs(&["status", "--json", "--config", cfg.to_str().expect("utf8")]);
    assert!(ok, "{err}");
    let st: Value = serde_json::from_str(&out).expect("status");
    assert_eq!(st["holds"], serde_json::json!(["H-c-good"]), "{st}");
}

#[test]
fn receipts_made_while_the_broker_is_down_all_arrive_after_it_returns() {
    let home = Home::new();
    let dir = home.path();
    let (mut broker, config, mut w) = setup(&home, None, "cam-old", "enabled = false");
    let port = broker.port;
    let agent = sargs::agent::Agent::start(&config).expect("agent");
    assert!(w.wait("/status", T, |v| v["state"] == "online").is_some());
    broker.stop();
    // While HQ is unreachable: 5 segments past their deadline are deleted…
    old_segments(&home, "cam-old", 5, 40);
    let media = home.camera_dir("cam-old");
    assert!(
        wait_until(T, || segments(&media).is_empty()),
        "deleted while offline"
    );
    // …and the agent restarts meanwhile.
    agent.stop().expect("stop");
    let agent = sargs::agent::Agent::start(&config).expect("agent again");
    // The broker stays away for a while after the restart, so the receipts
    // arrive through the restarted link's reconnecting (back-off 1 s, 2 s),
    // not its first attempt: a clock to let pass.
    std::thread::sleep(Duration::from_secs(2));
    let _broker = Broker::start_on(dir, None, port);
    let ids = deleted_ids(&mut w, 5);
    assert_eq!(ids.len(), 5, "every receipt arrived: {ids:?}");
    for i in 1..=5 {
        assert!(ids.contains(&format!("{AGENT}/cam-old/{i}")), "{ids:?}");
    }
    agent.stop().expect("stop");
}

#[test]
fn kill_9_shows_offline_through_the_last_will() {
    let home = Home::new();
    let (_broker, _config, mut w) = setup(&home, None, "cam-1", "enabled = false");
    let mut child = spawn_agent(&home);
    assert!(w.wait("/status", T, |v| v["state"] == "online").is_some());
    child.kill().expect("kill -9");
    let _ = child.wait();
    // keep_alive_s = 5: the broker gives up after 1.5 × 5 s.
    let off = w.wait("/status", Duration::from_secs(15), |v| {
        v["state"] == "offline"
    });
    assert!(off.is_some(), "the Will says offline");
}

#[test]
fn camera_up_down_and_sealed_segments_reach_hq_as_events() {
    let home = Home::new();
    let broker = Broker::start(home.path(), None);
    let key = hq_keygen(home.path());
    // Nothing listens on this port: the RTSP camera is down from the start.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let gone = format!(
        "[[camera]]\nid = \"cam-gone\"\nkind = \"vehicle\"\npurpose = \"public-order\"\nclass = \"municipal-police\"\n[camera.source]\ntype = \"rtsp\"\nurl = \"rtsp://127.0.0.1:{closed}/cam\"\ntransport = \"tcp\"\n\n"
    );
    let cams = hq_tables(&broker.url(), &key, None) + &test_camera("cam-up", "cctv", "") + &gone;
    let config = home.config_with(2, "min_free_mb = 1", &cams);
    let mut w = Watcher::connect(broker.port, "hq-cams", None, &["sargs/agents/test-gw/#"]);
    let agent = sargs::agent::Agent::start(&config).expect("agent");
    let up = w.wait("/events", T, |v| {
        v["event"] == "camera.up" && v["camera"] == "cam-up"
    });
    let down = w.wait("/events", T, |v| {
        v["event"] == "camera.down" && v["camera"] == "cam-gone"
    });
    let sealed = w.wait("/events", T, |v| {
        v["event"] == "segment.sealed" && v["segment"]["camera_id"] == "cam-up"
    });
    // Telemetry states each camera's live state.
    let state = |v: &Value, id: &str| {
        v["cameras"]
            .as_array()
            .and_then(|cams| cams.iter().find(|c| c["id"] == id))
            .map(|c| c["state"].clone())
    };
    let telemetry = w.wait("/telemetry", T, |v| {
        state(v, "cam-up") == Some("up".into()) && state(v, "cam-gone") == Some("down".into())
    });
    assert!(
        telemetry.is_some(),
        "telemetry shows cam-up up and cam-gone down"
    );
    // Several retries (back-off 0.2–1 s) while it stays down: the check below
    // is that they are not reported, so this time has to pass.
    std::thread::sleep(Duration::from_secs(3));
    w.wait("/events", Duration::from_millis(500), |_| false);
    agent.stop().expect("stop");
    // A sealed segment is reported with the hashes its manifest states.
    let sealed = sealed.expect("segment.sealed for the recording camera");
    let seg = &sealed["segment"];
    let seq = seg["sequence"].as_u64().expect("sequence");
    let m = manifests(&home.camera_dir("cam-up"), &home.device_key())
        .into_iter()
        .find(|m| m.sequence == seq)
        .expect("the manifest of the reported segment");
    let media = m.media.as_ref().expect("a segment record");
    assert_eq!(seg["segment_id"], m.segment_id.as_str(), "{sealed}");
    assert_eq!(seg["ciphertext_sha256"], media.ciphertext_sha256.as_str());
    assert_eq!(seg["ciphertext_bytes"], media.ciphertext_bytes);
    assert_eq!(seg["class"], "cctv");
    assert!(up.is_some(), "camera.up for the test camera");
    let down = down.expect("camera.down for the unreachable camera");
    assert!(
        down["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{down}"
    );
    // Reported once per change, not once per retry.
    let downs = w
        .seen
        .iter()
        .filter(|(t, p, _)| {
            t.ends_with("/events") && String::from_utf8_lossy(p).contains("\"camera.down\"")
        })
        .count();
    assert_eq!(downs, 1, "one camera.down while it stays down");
}
