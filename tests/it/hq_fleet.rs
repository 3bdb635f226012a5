//! A fleet over 120 simulated days, kept by the HQ service on PostgreSQL:
//! three real agents — one in process with an accelerated retention clock,
//! the demo agent as a process of its own (accelerated too, killed with
//! kill -9 and restarted), and one whose retention clock the test keeps at
//! real time, so its sweeper never reaches a deadline (stopped on purpose)
//! — with a hold and a data-subject request answered by an erasure issued
//! through the API, the service killed with kill -9 mid-stream and the
//! broker restarted without persistence. At the end the report accounts for
//! every record the agents made, every deletion has its verified receipt,
//! and the only overdue records are those of the agent whose sweeper was
//! stopped, named one by one.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::harness::*;
use crate::hq_service::{hq, hq_json, http, start_hq_with};
use crate::mqtt::hq_tables;
use crate::support::mosquitto::{free_port, Broker, Watcher};
use crate::support::postgres::Postgres;
use sargs_core::command::{Action, Command, Target};

const T: Duration = Duration::from_secs(90);
/// 120 days in 90 s of recording.
const FACTOR: u32 = 115_200;

/// An agent's config in `dir` (its own data directory and policy).
fn agent_config(
    dir: &Path,
    id: &str,
    broker: &str,
    command_key: &str,
    recipient: &str,
) -> sargs::config::Config {
    std::fs::create_dir_all(dir).expect("agent dir");
    std::fs::write(dir.join("policy.toml"), sargs::demo::POLICY_PRESET).expect("policy");
    let text = format!(
        "[agent]\nid = \"{id}\"\ndata_dir = \"data\"\npolicy = \"policy.toml\"\nsegment_seconds = 2\nmin_free_mb = 1\n\n[seal]\nrecipients = [\"{recipient}\"]\n\n{}{}",
        hq_tables(broker, command_key, None),
        test_camera("cam-1", "cctv", "")
    );
    let path = dir.join("sargs.toml");
    std::fs::write(&path, text).expect("config");
    sargs::config::Config::load(&path).expect("config loads")
}

fn device_key_b64(config: &sargs::config::Config) -> String {
    let key = sargs_core::seal::sign::DeviceKey::load_or_create(&config.agent.signing_key)
        .expect("device key");
    key.public_key_b64()
}

/// Segment records on an agent's disk that started before `cut`: ids.
fn segments_before(data: &Path, cut: DateTime<Utc>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Ok(cams) = std::fs::read_dir(data.join("cameras")) else {
        return out;
    };
    for cam in cams.flatten() {
        for f in std::fs::read_dir(cam.path()).expect("camera dir").flatten() {
            if !f.file_name().to_string_lossy().ends_with(".json") {
                continue;
            }
            let bytes = std::fs::read(f.path()).expect("manifest");
            let env = sargs_core::seal::sign::Envelope::open(&bytes, None).expect("envelope");
            let m: sargs_core::seal::manifest::Manifest =
                serde_json::from_str(&env.payload).expect("manifest");
            if m.record == sargs_core::seal::manifest::RecordKind::Segment && m.start < cut {
                out.insert(m.segment_id);
            }
        }
    }
    out
}

/// Receipts on an agent's disk for segments that started before `cut`.
fn receipts_before(data: &Path, cut: DateTime<Utc>) -> usize {
    let Ok(rd) = std::fs::read_dir(data.join("receipts")) else {
        return 0;
    };
    rd.flatten()
        .filter(|f| f.file_name().to_string_lossy().ends_with(".json"))
        .filter(|f| {
            let bytes = std::fs::read(f.path()).expect("receipt");
            let env = sargs_core::seal::sign::Envelope::open(&bytes, None).expect("envelope");
            let r: sargs_core::retention::receipt::Receipt =
                serde_json::from_str(&env.payload).expect("receipt");
            r.segment_start < cut
        })
        .count()
}

fn start_demo(dir: &Path, broker: &str) -> Spawned {
    Spawned(
        bin_command(env!("CARGO_BIN_EXE_sargs"))
            .args([
                "demo",
                "--seconds",
                "300",
                "--accelerate",
                &FACTOR.to_string(),
                "--mqtt",
                broker,
                "--dir",
            ])
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("sargs demo"),
    )
}

#[test]
fn a_fleet_over_120_simulated_days_is_accounted_for() {
    let pg = Postgres::start();
    let db = pg.create_db("hq");
    let home = Home::new();
    let root = home.path();
    let mut broker = Broker::start(root, None);
    let url = broker.url();
    let key = hq_keygen(root);
    let api = free_port();
    // The agents' retention clocks run ahead of the recording clock their
    // deadlines come from, so deletions are compared over a bound longer
    // than the simulation; the ledger's other states do not depend on it.
    std::fs::write(
        root.join("hq.toml"),
        format!(
            "[broker]\nurl = \"{url}\"\nclient_id = \"hq-fleet\"\nkeep_alive_s = 5\n\n[database]\nurl = \"{db}\"\n\n[commands]\ntrusted_keys = [\"{key}\"]\nkey_file = \"hq/signing.pk8\"\n\n[api]\nlisten = \"127.0.0.1:{api}\"\n\n[ledger]\ncheck_interval_s = 1\nclaim_grace_s = 3\ndeletion_bound_s = 31536000\n"
        ),
    )
    .expect("hq.toml");
    let hq_toml = root.join("hq.toml");
    let mut service = start_hq_with(root, &hq_toml, "hq.log");

    let a_dir = root.join("gw-a");
    let c_dir = root.join("gw-c");
    let b_dir = root.join("demo");
    let a_cfg = agent_config(&a_dir, "gw-a", &url, &key, &home.recipient());
    let c_cfg = agent_config(&c_dir, "gw-c", &url, &key, &home.recipient());
    for (id, cfg) in [("gw-a", &a_cfg), ("gw-c", &c_cfg)] {
        hq(
            root,
            &[
                "agent",
                "add",
                id,
                "--device-key",
                &device_key_b64(cfg),
                "--site",
                "Jēkabpils",
            ],
        );
    }
    let token = |role: &str| {
        hq(root, &["token", "add", "--owner", "tests", "--role", role])
            .trim()
            .to_owned()
    };
    let (duty, dpo, auditor) = (token("duty-officer"), token("dpo"), token("auditor"));
    let t0 = Utc::now();
    let started = Instant::now();
    let a_clock = (Instant::now(), Utc::now());
    let gw_a = sargs::agent::Agent::start_with(&a_cfg, sargs::clock::Clock::accelerated(FACTOR))
        .expect("gw-a");
    // Its retention clock keeps real time: no deadline comes in the test.
    let gw_c = sargs::agent::Agent::start(&c_cfg).expect("gw-c");
    let mut demo = start_demo(&b_dir, &url);

    // Valid for the longest window a command may have (31 days): gw-a's
    // clock passes 31 days about 23 s in.
    let issue = |token: &str, mut body: Value| {
        body["valid_hours"] = json!(31 * 24);
        let (status, r) = http(
            api,
            "POST",
            "/api/v1/commands",
            Some(token),
            &body.to_string(),
        );
        assert_eq!(status, 202, "{r}");
        r["id"].as_str().expect("id").to_owned()
    };
    let applied = |id: &str| {
        wait_until(T, || {
            let (_, c) = http(api, "GET", "/api/v1/commands", Some(&auditor), "");
            c.as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["id"] == id && c["responses"]["gw-a"] == "applied")
            })
        })
    };
    let range = |from: DateTime<Utc>, to: DateTime<Utc>| json!({"cameras": ["cam-1"], "from": from, "to": to});
    // Once gw-a is connected (its session queues commands from then on):
    // a legal hold on its first 4 s, before their deadline comes (22 s).
    assert!(
        wait_until(T, || hq(root, &["agent", "list"])
            .contains("gw-a\tenrolled\tonline")),
        "gw-a online"
    );
    let hold = issue(
        &duty,
        json!({"target": {"agent": "gw-a"}, "kind": "hold.place",
        "args": {"hold": "H-1", "case": "KP 2026/1", "scope": range(t0, t0 + chrono::Duration::seconds(4))}}),
    );
    assert!(
        applied(&hold),
        "the hold is applied: {}\n{}",
        http(api, "GET", "/api/v1/commands", Some(&auditor), "").1,
        std::fs::read_to_string(root.join("hq.log")).unwrap_or_default()
    );
    // A data-subject request over the next 4 s, answered by an erasure.
    let (f, t) = (
        t0 + chrono::Duration::seconds(4),
        t0 + chrono::Duration::seconds(8),
    );
    let request = issue(
        &dpo,
        json!({"target": {"agent": "gw-a"}, "kind": "request.open",
        "args": {"request": "R-1", "scope": range(f, t)}}),
    );
    assert!(applied(&request), "the request is open");
    while started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let erase = issue(
        &dpo,
        json!({"target": {"agent": "gw-a"}, "kind": "erase",
        "args": {"scope": range(f, t), "request": "R-1"}}),
    );
    assert!(applied(&erase), "the erasure is applied");
    let close = issue(
        &dpo,
        json!({"target": {"agent": "gw-a"}, "kind": "request.close", "args": {"request": "R-1"}}),
    );
    assert!(applied(&close), "the request is closed");

    // The demo agent announces itself and is approved by an operator.
    assert!(
        wait_until(T, || hq(root, &["agent", "list"])
            .contains("demo-gateway\tpending")),
        "the demo agent is pending"
    );
    hq(root, &["agent", "approve", "demo-gateway"]);
    // The demo agent dies with kill -9 among its sweeps and comes back.
    // SAFETY: SIGKILL to our own child.
    unsafe { libc::kill(demo.id() as i32, libc::SIGKILL) };
    demo.wait().expect("killed");
    let mut demo = start_demo(&b_dir, &url);
    let b_clock = (Instant::now(), Utc::now());

    // The service dies mid-stream; the broker restarts without persistence
    // while it is away (what it held for the service is lost).
    std::thread::sleep(Duration::from_secs(5));
    // SAFETY: SIGKILL to our own child.
    unsafe { libc::kill(service.id() as i32, libc::SIGKILL) };
    service.wait().expect("killed");
    std::thread::sleep(Duration::from_secs(4));
    let port = broker.port;
    broker.stop();
    let broker = Broker::start_on(root, None, port);
    let mut service = start_hq_with(root, &hq_toml, "hq.log");
    // The service heals gw-c's holes by itself. The accelerated agents
    // judge a command's validity by their clocks, months ahead of HQ's:
    // the operator of this simulation asks them, in their time.
    std::thread::sleep(Duration::from_secs(5));
    let mut w = Watcher::connect(
        broker.port,
        "hq-operator",
        None,
        &["sargs/agents/+/responses"],
    );
    let hq_key =
        sargs_core::seal::sign::DeviceKey::load(&root.join("hq/signing.pk8")).expect("HQ key");
    // The demo agent trusts its own HQ key, made beside its config.
    let demo_key = sargs_core::seal::sign::DeviceKey::load(&b_dir.join("hq-signing.pk8"))
        .expect("demo's HQ key");
    for (agent, (origin, wall), cameras, key) in [
        ("gw-a", a_clock, &["cam-1"][..], &hq_key),
        (
            "demo-gateway",
            b_clock,
            &["demo-cctv", "demo-police-car"][..],
            &demo_key,
        ),
    ] {
        // A command published before the agent is back on the restarted
        // broker (its session was lost with the broker's state) reaches
        // nobody: sent again until the agent applies it (its answer waits
        // behind what its outbox holds). The test knows the agent's clock
        // only to within its start-up (a second is 1.3 simulated days), so
        // the command is valid from 10 days before to 20 days after it; a
        // rejection is asked again under a new id (a replay would repeat it).
        let asked = Instant::now();
        let mut answered = false;
        let mut attempt = 0;
        let mut last = None;
        while !answered && asked.elapsed() < T {
            attempt += 1;
            let id = format!("c-resend-{agent}-{attempt}");
            let agent_now =
                wall + chrono::Duration::from_std(origin.elapsed() * FACTOR).expect("duration");
            let cmd = Command {
                id: id.clone(),
                issued_at: agent_now - chrono::Duration::days(10),
                expires_at: agent_now + chrono::Duration::days(20),
                target: Target::Agent(agent.to_owned()),
                issuer: "HQ operator (simulation)".to_owned(),
                action: Action::Resend {
                    receipts_from: Some(1),
                    records_from: cameras.iter().map(|c| ((*c).to_owned(), 1)).collect(),
                },
            };
            w.publish(
                &format!("sargs/agents/{agent}/commands"),
                sargs_core::command::sign(key, &cmd),
            );
            last = w.wait("/responses", Duration::from_secs(5), |v| {
                v["command_id"] == id.as_str()
            });
            answered = last.as_ref().is_some_and(|r| r["status"] == "applied");
        }
        assert!(answered, "{agent} applies the operator's resend: {last:?}");
    }

    // 120 days on the accelerated clocks.
    while started.elapsed() < Duration::from_secs(90) {
        std::thread::sleep(Duration::from_millis(500));
    }
    let cut = Utc::now();
    // Every record that started before the cut is sealed within a segment
    // (10 s for the demo's) and on its way; the outboxes drain while the
    // agents run.
    std::thread::sleep(Duration::from_secs(14));
    let data = |d: &Path| -> PathBuf { d.join("data") };
    let made: BTreeSet<String> = [&a_dir, &b_dir, &c_dir]
        .iter()
        .flat_map(|d| segments_before(&data(d), cut))
        .collect();
    let receipts = receipts_before(&data(&a_dir), cut) + receipts_before(&data(&b_dir), cut);
    let at = (t0 + chrono::Duration::days(130)).to_rfc3339();
    let to = cut.to_rfc3339();
    let report = || {
        hq_json(
            root,
            &["report", "--format", "json", "--to", &to, "--at", &at],
        )
    };
    assert!(
        wait_until(T, || {
            let t = &report()["totals"];
            t["recorded"] == made.len()
                && t["missing"] == 0
                && t["on_time"].as_u64().unwrap_or(0) + t["late"].as_u64().unwrap_or(0)
                    == receipts as u64
        }),
        "every record ({}) and receipt ({receipts}) reaches the ledger: {}; missing: {}; per agent and class: {}",
        made.len(),
        report()["totals"],
        report()["missing"],
        report()["rows"]
    );
    gw_a.stop().expect("gw-a stops");
    gw_c.stop().expect("gw-c stops");
    // SAFETY: SIGINT to our own child: the demo stops cleanly.
    unsafe { libc::kill(demo.id() as i32, libc::SIGINT) };
    demo.wait().expect("demo stops");

    let r = report();
    let t = &r["totals"];
    assert_eq!(t["recorded"], made.len(), "{t}");
    assert_eq!(t["missing"], 0, "{t}");
    // The only overdue records: gw-c's, every one of them, by name.
    let overdue: BTreeSet<String> = r["overdue"]
        .as_array()
        .expect("overdue")
        .iter()
        .filter_map(|n| n["segment_id"].as_str().map(str::to_owned))
        .collect();
    let of_c: BTreeSet<String> = made
        .iter()
        .filter(|id| id.starts_with("gw-c/"))
        .cloned()
        .collect();
    assert!(!of_c.is_empty());
    assert_eq!(overdue, of_c, "{t}");
    // The held records are protected; the erased ones deleted on time.
    assert!(t["protected"].as_u64() >= Some(1), "{t}");
    assert!(
        r["protected"]
            .as_array()
            .expect("protected")
            .iter()
            .all(|n| n["segment_id"]
                .as_str()
                .is_some_and(|s| s.starts_with("gw-a/cam-1/"))),
        "{r}"
    );
    assert!(t["on_time"].as_u64() >= Some(1), "{t}");
    let alarms = hq(root, &["alarms", "--all"]);
    for bad in ["chain.break", "receipt.mismatch"] {
        assert!(!alarms.contains(bad), "{alarms}");
    }
    // The holes the broker left were found, and closed.
    assert!(alarms.contains("records.missing"), "{alarms}");
    assert!(
        !hq(root, &["alarms"]).contains("records.missing"),
        "all healed"
    );
    let healed = hq_json(root, &["commands", "--json"]);
    assert!(
        healed
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["kind"] == "resend"
                && c["issuer"] == "sargs-hq (ledger healing)"
                && c["responses"]["gw-c"] == "applied")),
        "the service asked gw-c itself: {healed}"
    );
    // SAFETY: SIGTERM to our own child: a clean stop.
    unsafe { libc::kill(service.id() as i32, libc::SIGTERM) };
    assert!(service.wait().expect("stops").success());
}
