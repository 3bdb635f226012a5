//! The HQ service (`sargs-hq`) against a real Mosquitto, a real agent and a
//! real database (its SQLite file, and PostgreSQL started for the test):
//! enrolment by approval, every record and receipt kept from its signed
//! envelope, kill -9 of the service mid-stream losing nothing, a broker
//! restarted without persistence leaving holes that the service heals by
//! asking the agent to resend, the API with its roles issuing a hold, bad
//! input quarantined with its reason, and the report accounting for every
//! record the agent made.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::harness::*;
use crate::mqtt::{hq_tables, response, sargsctl_command, topic};
use crate::support::mosquitto::{free_port, Broker, Watcher};
use crate::support::postgres::Postgres;

const T: Duration = Duration::from_secs(60);

pub fn hq_bin() -> String {
    let p = Path::new(env!("CARGO_BIN_EXE_sargs")).with_file_name("sargs-hq");
    assert!(
        p.is_file(),
        "{} is missing: build the workspace",
        p.display()
    );
    p.to_string_lossy().into_owned()
}

/// `sargs-hq ARGS --config hq.toml`, its stdout; panics on failure.
pub fn hq(dir: &Path, args: &[&str]) -> String {
    let conf = dir.join("hq.toml");
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--config", conf.to_str().expect("utf-8 path")]);
    let (ok, out, err) = run_in(&hq_bin(), &all, dir);
    assert!(ok, "sargs-hq {args:?}: {err}");
    out
}

pub fn hq_json(dir: &Path, args: &[&str]) -> Value {
    let out = hq(dir, args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

pub fn start_hq(dir: &Path) -> Spawned {
    start_hq_with(dir, &dir.join("hq.toml"), "hq.log")
}

/// `sargs-hq run --config CONFIG`, its log in `dir/log` (appended).
pub fn start_hq_with(dir: &Path, config: &Path, log: &str) -> Spawned {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(log))
        .expect("log");
    Spawned(
        bin_command(&hq_bin())
            .args(["run", "--config"])
            .arg(config)
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("sargs-hq run"),
    )
}

pub fn write_hq_toml(dir: &Path, broker: &str, db: &str, command_key: &str, api: u16) {
    std::fs::write(
        dir.join("hq.toml"),
        format!(
            "[broker]\nurl = \"{broker}\"\nclient_id = \"hq-test\"\nkeep_alive_s = 5\n\n[database]\nurl = \"{db}\"\n\n[commands]\ntrusted_keys = [\"{command_key}\"]\nkey_file = \"hq/signing.pk8\"\n\n[api]\nlisten = \"127.0.0.1:{api}\"\n\n[ledger]\ncheck_interval_s = 1\n"
        ),
    )
    .expect("hq.toml");
}

/// One HTTP/1.1 request to the API on 127.0.0.1: (status, JSON body).
pub fn http(port: u16, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, Value) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("API connects");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("response");
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("a status line: {text}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// Records on the agent's disk (its signed manifests, which outlive
/// deleted media), by camera: (sequence, record kind).
fn on_disk(home: &Home, camera: &str) -> Vec<(u64, String)> {
    let key = home.device_key();
    let mut v: Vec<(u64, String)> = std::fs::read_dir(home.camera_dir(camera))
        .expect("camera dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let bytes = std::fs::read(&p).expect("manifest");
            let env = sargs_core::seal::sign::Envelope::open(&bytes, Some(&key)).expect("signed");
            let m: sargs_core::seal::manifest::Manifest =
                serde_json::from_str(&env.payload).expect("manifest");
            (m.sequence, format!("{:?}", m.record).to_lowercase())
        })
        .collect();
    v.sort();
    v
}

fn the_fleet_is_kept(db: &str) {
    let home = Home::new();
    let dir = home.path();
    let mut broker = Broker::start(dir, None);
    let key = hq_keygen(dir);
    let cams = hq_tables(&broker.url(), &key, None)
        + &test_camera("cam-1", "cctv", "")
        + &test_camera("cam-old", "cctv", "enabled = false");
    let config = home.config_with(2, "min_free_mb = 1", &cams);
    let api = free_port();
    write_hq_toml(dir, &broker.url(), db, &key, api);
    let mut service = start_hq(dir);

    // An unknown gateway is pending, never trusted, until approved.
    let agent = sargs::agent::Agent::start(&config).expect("agent");
    assert!(
        wait_until(T, || {
            hq_json(dir, &["agent", "list", "--json"])
                .as_array()
                .is_some_and(|a| {
                    a.iter()
                        .any(|a| a["id"] == "test-gw" && a["state"] == "pending")
                })
        }),
        "the agent's status makes it pending: {}",
        std::fs::read_to_string(dir.join("hq.log")).unwrap_or_default()
    );
    assert!(wait_until(T, || sealed_count(&home.camera_dir("cam-1")) >= 1));
    let out = hq(dir, &["agent", "approve", "test-gw"]);
    assert!(out.contains("approved"), "{out}");

    // Recording goes on; the service is killed mid-stream and restarted.
    assert!(wait_until(T, || sealed_count(&home.camera_dir("cam-1")) >= 3));
    // SAFETY: SIGKILL to our own child.
    unsafe { libc::kill(service.id() as i32, libc::SIGKILL) };
    service.wait().expect("killed");
    let sealed_while_down = sealed_count(&home.camera_dir("cam-1")) + 1;
    assert!(wait_until(T, || sealed_count(&home.camera_dir("cam-1"))
        >= sealed_while_down));
    let mut service = start_hq(dir);

    // Killed again, and the broker restarts without persistence while the
    // records sealed meanwhile wait for the service: they are lost on the
    // way. The service sees the hole and asks the agent to send them again.
    // SAFETY: SIGKILL to our own child.
    unsafe { libc::kill(service.id() as i32, libc::SIGKILL) };
    service.wait().expect("killed");
    let lost_from = sealed_count(&home.camera_dir("cam-1")) + 2;
    assert!(wait_until(T, || sealed_count(&home.camera_dir("cam-1")) >= lost_from));
    let port = broker.port;
    broker.stop();
    let mut broker = Broker::start_on(dir, None, port);
    let mut service = start_hq(dir);
    let mut w = Watcher::connect(broker.port, "hq-watch", None, &["sargs/agents/test-gw/#"]);
    assert!(
        wait_until(T, || {
            hq_json(dir, &["commands", "--json"])
                .as_array()
                .is_some_and(|c| {
                    c.iter().any(|c| {
                        c["kind"] == "resend"
                            && c["issuer"] == "sargs-hq (ledger healing)"
                            && c["responses"]["test-gw"] == "applied"
                    })
                })
        }),
        "the service asks for what it lost: {}\n{}",
        hq(dir, &["commands"]),
        std::fs::read_to_string(dir.join("hq.log")).unwrap_or_default()
    );

    // The API: a token per role, checked on the server for every call.
    let token = |role: &str| {
        hq(
            dir,
            &["token", "add", "--owner", "A. Bērziņa", "--role", role],
        )
        .trim()
        .to_owned()
    };
    let (duty, auditor) = (token("duty-officer"), token("auditor"));
    assert_eq!(http(api, "GET", "/api/v1/fleet", None, "").0, 401);
    assert_eq!(
        http(api, "GET", "/api/v1/fleet", Some("sargs_t0_bad"), "").0,
        401
    );
    let (status, fleet) = http(api, "GET", "/api/v1/fleet", Some(&auditor), "");
    assert_eq!(status, 200, "{fleet}");
    assert_eq!(fleet[0]["agent"]["id"], "test-gw", "{fleet}");
    let hold = serde_json::json!({
        "target": {"agent": "test-gw"},
        "kind": "hold.place",
        "args": {"hold": "H-API", "case": "KP 2026/7", "scope": {"cameras": ["cam-1"], "from": "2026-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}},
    })
    .to_string();
    let (status, refused) = http(api, "POST", "/api/v1/commands", Some(&auditor), &hold);
    assert_eq!(status, 403, "an auditor only reads: {refused}");
    let (status, issued) = http(api, "POST", "/api/v1/commands", Some(&duty), &hold);
    assert_eq!(status, 202, "{issued}");
    let id = issued["id"].as_str().expect("command id").to_owned();
    assert!(
        issued["issuer"]
            .as_str()
            .is_some_and(|i| i.contains("A. Bērziņa") && i.contains("duty-officer")),
        "{issued}"
    );
    assert!(
        wait_until(T, || {
            let (_, holds) = http(api, "GET", "/api/v1/holds", Some(&auditor), "");
            holds.as_array().is_some_and(|h| {
                h.iter()
                    .any(|c| c["id"] == id && c["responses"]["test-gw"] == "applied")
            })
        }),
        "the agent's response reaches the API"
    );
    // The same through sargs-hq's own verbs (sargsctl's flags; the key and
    // the broker from its config): recorded, published, answered.
    let out = hq(
        dir,
        &[
            "release",
            "--hold",
            "H-API",
            "--agent",
            "test-gw",
            "--issuer",
            "duty officer",
        ],
    );
    assert!(out.contains("test-gw") && out.contains("applied"), "{out}");

    // Records HQ never heard of (made by hand, 40 days old) are deleted by
    // the agent with receipts; HQ asks for the records again.
    old_segments(&home, "cam-old", 3, 40);
    let mut deleted = 0;
    w.wait("/events", T, |v| {
        deleted += usize::from(v["event"] == "segment.deleted");
        deleted >= 3
    });
    let resend = sargsctl_command(dir, "c-resend", &["resend", "--records-from", "cam-old=1"]);
    w.publish(&topic("commands"), resend);
    assert_eq!(response(&mut w, "c-resend")["status"], "applied");

    // Bad input: each quarantined with its reason, the ledger unchanged.
    let forged = {
        let other = sargs_core::seal::sign::DeviceKey::generate().expect("key");
        let env: Value =
            serde_json::from_slice(&other.sign_envelope(r#"{"forged":true}"#)).expect("json");
        serde_json::json!({"v":1,"agent":"test-gw","event":"segment.deleted","at":"2026-01-01T00:00:00Z","envelope":env})
    };
    w.publish(&topic("events"), forged.to_string().into_bytes());
    w.publish(&topic("events"), b"{not json".to_vec());
    w.publish(
        "sargs/agents/stranger/events",
        br#"{"v":1,"agent":"stranger","event":"camera.up"}"#.to_vec(),
    );
    w.publish(&topic("events"), vec![b' '; 2 << 20]);
    w.publish(
        &topic("events"),
        br#"{"v":1,"agent":"other-gw","event":"camera.up"}"#.to_vec(),
    );
    // A status from the past (a replay) and one announcing another device
    // key: neither changes what HQ believes of the agent.
    let key_b64 = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(home.device_key())
    };
    let other_key = sargs_core::seal::sign::DeviceKey::generate()
        .expect("key")
        .public_key_b64();
    let status = |at: &str, key: &str| {
        serde_json::json!({"v":1,"agent":"test-gw","state":"offline","at":at,"version":"0","device_key":key})
            .to_string()
            .into_bytes()
    };
    w.publish(&topic("status"), status("2026-01-01T00:00:00Z", &key_b64));
    w.publish(
        &topic("status"),
        status(&chrono::Utc::now().to_rfc3339(), &other_key),
    );
    // A record event sent again (re-serialised: other bytes, same record).
    let sealed = w
        .seen
        .iter()
        .filter(|(t, ..)| t.ends_with("/events"))
        .filter_map(|(_, bytes, _)| serde_json::from_slice::<Value>(bytes).ok())
        .find(|v| v["event"] == "segment.sealed")
        .map(|v| v.to_string())
        .expect("a segment.sealed event seen");
    w.publish(&topic("events"), format!(" {sealed}").into_bytes());
    let codes = || -> Vec<String> {
        let mut c: Vec<String> = hq_json(dir, &["quarantine", "--json"])
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|q| q["code"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        c.sort();
        c
    };
    assert!(
        wait_until(T, || codes().len() >= 7),
        "seven quarantined: {:?}",
        codes()
    );
    assert_eq!(
        codes(),
        [
            "agent-mismatch",
            "key-changed",
            "malformed",
            "oversized",
            "stale-status",
            "unenrolled",
            "wrong-key"
        ],
    );

    agent.stop().expect("clean stop");
    // A command for an agent that is away waits, and is listed as waiting.
    let conf = dir.join("hq.toml");
    let (ok, _, err) = run_in(
        &hq_bin(),
        &[
            "inventory",
            "--cameras",
            "cam-1",
            "--from",
            "2026-01-01",
            "--to",
            "2100-01-01",
            "--agent",
            "test-gw",
            "--issuer",
            "DPO",
            "--wait",
            "1",
            "--config",
            conf.to_str().expect("utf-8"),
        ],
        dir,
    );
    assert!(!ok && err.contains("no response"), "{err}");
    let pending = hq_json(dir, &["commands", "--pending", "--json"]);
    assert!(
        pending.as_array().is_some_and(|p| p.len() == 1
            && p[0]["kind"] == "inventory"
            && p[0]["waiting"] == serde_json::json!(["test-gw"])),
        "{pending}"
    );
    // Every record on the agent's disk, and every receipt, reached the ledger.
    let live = on_disk(&home, "cam-1");
    let old = on_disk(&home, "cam-old");
    let segments_made = live
        .iter()
        .chain(&old)
        .filter(|(_, k)| k == "segment")
        .count();
    let gaps_made = live.iter().chain(&old).filter(|(_, k)| k == "gap").count();
    let report = || {
        hq_json(
            dir,
            &["report", "--format", "json", "--to", "2100-01-01T00:00:00Z"],
        )
    };
    assert!(
        wait_until(T, || report()["totals"]["recorded"] == segments_made),
        "the report counts every segment the agent made ({segments_made}): {}",
        report()
    );
    let r = report();
    let t = &r["totals"];
    assert_eq!(t["gaps"], gaps_made, "{r}");
    assert_eq!(t["missing"], 0, "{r}");
    assert_eq!(t["overdue"], 0, "{r}");
    // The three old records were deleted ten days past their deadline.
    assert_eq!(t["late"], 3, "{r}");
    assert_eq!(r["late"].as_array().map(Vec::len), Some(3), "{r}");
    assert!(
        r["late"][0]["segment_id"]
            .as_str()
            .is_some_and(|s| s.starts_with("test-gw/cam-old/")),
        "{r}"
    );
    assert_eq!(t["on_time"], 0, "{r}");
    let alarms = hq(dir, &["alarms"]);
    assert!(alarms.contains("message.quarantined"), "{alarms}");
    assert!(alarms.contains("agent.key_changed"), "{alarms}");
    let agents = hq_json(dir, &["agent", "list", "--json"]);
    assert_eq!(agents[0]["device_key"], key_b64.as_str(), "{agents}");
    assert!(!alarms.contains("chain.break"), "{alarms}");
    // Late stays late: the operator clears the alarm once seen.
    let late = hq_json(dir, &["alarms", "--json"])
        .as_array()
        .and_then(|a| a.iter().find(|a| a["kind"] == "deletions.late").cloned())
        .unwrap_or_else(|| panic!("a deletions.late alarm: {alarms}"));
    assert!(
        late["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("3 deletion")),
        "{late}"
    );
    let key = late["key"].as_str().expect("key");
    hq(dir, &["alarms", "--clear", key]);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !hq(dir, &["alarms"]).contains("deletions.late"),
        "cleared, and not raised again"
    );
    let csv = hq(
        dir,
        &["report", "--format", "csv", "--to", "2100-01-01T00:00:00Z"],
    );
    assert!(
        csv.starts_with(
            "agent,class,recorded,on_time,late,overdue,protected,gaps,missing\ntest-gw,cctv,"
        ),
        "{csv}"
    );
    // Every segment of cam-1 is under the API's hold now.
    let (_, r) = http(
        api,
        "GET",
        "/api/v1/report?to=2100-01-01T00:00:00Z",
        Some(&auditor),
        "",
    );
    assert_eq!(r["totals"]["recorded"], segments_made, "{r}");
    // SAFETY: SIGTERM to our own child: a clean stop.
    unsafe { libc::kill(service.id() as i32, libc::SIGTERM) };
    assert!(service.wait().expect("stops").success());
    broker.stop();
}

#[test]
fn hq_keeps_the_fleet_in_sqlite() {
    // Relative to hq.toml's directory.
    the_fleet_is_kept("sqlite://hq.db");
}

#[test]
fn hq_keeps_the_fleet_in_postgresql() {
    let pg = Postgres::start();
    the_fleet_is_kept(&pg.create_db("hq"));
}

/// Thousands of messages published at once, far more than the service's
/// Receive Maximum (Mosquitto forwards them all the same): every one is
/// committed and acknowledged. A collector whose broker poller waited for
/// its committing task stalled here after about a thousand.
#[test]
fn a_burst_far_beyond_the_receive_maximum_is_kept_whole() {
    const N: usize = 4000;
    let home = Home::new();
    let dir = home.path();
    let mut broker = Broker::start_with_conf(dir, "max_queued_messages 100000\n");
    let key = hq_keygen(dir);
    write_hq_toml(dir, &broker.url(), "sqlite://hq.db", &key, free_port());
    let _service = start_hq(dir);
    let w = Watcher::connect(broker.port, "burst", None, &[]);
    // Wait for the service's subscription: a first message is kept.
    let quarantined = || {
        hq_json(dir, &["quarantine", "--json"])
            .as_array()
            .map_or(0, Vec::len)
    };
    let one = |i: usize| {
        format!(r#"{{"v":1,"agent":"stranger","event":"camera.up","camera":"c","at":"{i}"}}"#)
            .into_bytes()
    };
    assert!(
        wait_until(T, || {
            w.publish("sargs/agents/stranger/events", one(0));
            quarantined() > 0
        }),
        "the service subscribed"
    );
    for i in 1..=N {
        w.publish("sargs/agents/stranger/events", one(i));
    }
    assert!(
        wait_until(T, || quarantined() == N + 1),
        "{} of {} kept; log: {}",
        quarantined(),
        N + 1,
        std::fs::read_to_string(dir.join("hq.log")).unwrap_or_default()
    );
    broker.stop();
}

#[test]
fn the_demo_runs_with_hq_and_its_ledger_reports_afterwards() {
    let home = Home::new();
    let dir = home.path().join("demo");
    let out = bin_command(env!("CARGO_BIN_EXE_sargs"))
        .args(["demo", "--hq", "--seconds", "12", "--dir"])
        .arg(&dir)
        .stderr(std::process::Stdio::null())
        .output()
        .expect("sargs demo --hq");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{printed}");
    for what in [
        "HQ API: http://127.0.0.1:",
        "# Compliance report",
        "| demo-gateway | cctv |",
    ] {
        assert!(printed.contains(what), "{what} in {printed}");
    }
    let r = hq_json(&dir, &["report", "--format", "json"]);
    let totals = r["totals"].as_object().expect("totals");
    let mut names: Vec<&str> = totals.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "gaps",
            "late",
            "missing",
            "on_time",
            "overdue",
            "protected",
            "recorded"
        ]
    );
    assert!(r["totals"]["recorded"].as_u64() >= Some(2), "{r}");
    assert_eq!(r["totals"]["missing"], 0, "{r}");
}
