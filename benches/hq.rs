//! The HQ link with a real Mosquitto on loopback.
//!
//! ```text
//! cargo bench --bench hq                 # HQ_ROUNDS (default 300), HQ_FLEET (default "100,1000"), HQ_DIR
//! ```
//!
//! 1. Hold round trip: HQ publishes a signed `hold.place` to one agent and
//!    waits for its response; measured from publish to response received, so
//!    it includes verification, the journal write, the index commit (both
//!    fsynced), queueing the response in the durable outbox (fsynced) and the
//!    broker both ways. Anchor, interleaved in the same rounds: a bare MQTT
//!    round trip through the same broker (HQ publishes QoS 1 to a topic it is
//!    itself subscribed to).
//! 2. Fleet: N agents (retention engine + link, no cameras, each its own data
//!    directory and connection) in this process; HQ publishes one fleet-wide
//!    hold on `sargs/fleet/commands` and waits for all N responses.
//!
//! Everything listens on 127.0.0.1 only; the broker is stopped at the end.

// Test and measurement code: a panic here is a failed run with its reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/mosquitto.rs"]
#[allow(dead_code)]
mod mosquitto;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use mosquitto::Broker;
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use sargs::clock::Clock;
use sargs::config::Config;
use sargs::hq::outbox::Outbox;
use sargs::hq::telemetry::Telemetry;
use sargs::hq::Link;
use sargs::retention::{Retention, Setup};
use sargs_core::command::{Action, Command, Scope, Target};
use sargs_core::seal::sign::DeviceKey;

struct Agent {
    link: Link,
    _retention: Arc<Retention>,
}

fn config(dir: &Path, id: &str, port: u16, hq: &DeviceKey) -> Config {
    std::fs::create_dir_all(dir).expect("agent dir");
    let policy = dir.join("policy.toml");
    if !policy.exists() {
        std::fs::write(&policy, sargs::demo::POLICY_PRESET).expect("policy");
    }
    let recipient = "age19svl7cy7l5xmupd7mm4ez4mr6h9guwjkdy6kj7rj4rc8lw5gq9ysccrn9h";
    let text = format!(
        "[agent]\nid = \"{id}\"\ndata_dir = \"data\"\npolicy = \"policy.toml\"\nmin_free_mb = 1\n\n[seal]\nrecipients = [\"{recipient}\"]\n\n[retention]\nfree_space_floor_mb = 1\n\n[hq]\nbroker = \"mqtt://127.0.0.1:{port}\"\ncommand_keys = [\"{}\"]\ntelemetry_interval_s = 3600\n\n[[camera]]\nid = \"cam-1\"\nkind = \"stationary\"\npurpose = \"property-protection\"\nclass = \"cctv\"\nenabled = false\n[camera.source]\ntype = \"test\"\n",
        hq.public_key_b64()
    );
    Config::from_str(&text, &dir.join("sargs.toml")).expect("config")
}

fn start_agent(dir: &Path, id: &str, port: u16, hq: &DeviceKey) -> Agent {
    let cfg = config(dir, id, port, hq);
    let key = Arc::new(DeviceKey::load_or_create(&cfg.agent.signing_key).expect("device key"));
    let (events, outbox) = sargs::wiring::event_sink(&cfg).expect("sink");
    let outbox: Arc<Outbox> = outbox.expect("outbox");
    let retention = Arc::new(
        Retention::open(Setup {
            free_space: Box::new(|| Ok(u64::MAX / 2)),
            offload_store: false,
            ..sargs::wiring::retention_setup(&cfg, key, events)
        })
        .expect("retention"),
    );
    let link_cfg = cfg.link.clone().expect("link");
    let telemetry = Telemetry::new(
        id.into(),
        cfg.agent.data_dir.clone(),
        retention.clone(),
        outbox.clone(),
        Vec::new(),
        Default::default(),
        Clock::system(),
    );
    let link = Link::start(
        &link_cfg,
        id,
        retention.clone(),
        outbox,
        telemetry,
        Clock::system(),
    )
    .expect("link");
    Agent {
        link,
        _retention: retention,
    }
}

/// HQ's client: everything it receives goes to a channel.
fn hq_client(
    port: u16,
    name: &str,
    topics: &[&str],
) -> (Client, std::sync::mpsc::Receiver<(String, Vec<u8>)>) {
    let mut opts = MqttOptions::new(name, "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_max_packet_size(16 << 20, 16 << 20);
    let (client, mut conn) = Client::new(opts, 4096);
    let mut net = rumqttc::NetworkOptions::new();
    net.set_tcp_nodelay(true);
    conn.eventloop.set_network_options(net);
    for t in topics {
        client.subscribe(*t, QoS::AtLeastOnce).expect("subscribe");
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for ev in conn.iter() {
            if let Ok(Event::Incoming(Packet::Publish(p))) = ev {
                if tx.send((p.topic.clone(), p.payload.to_vec())).is_err() {
                    break;
                }
            }
        }
    });
    (client, rx)
}

fn hold(hq: &DeviceKey, id: &str, target: Target) -> Vec<u8> {
    let now = Utc::now();
    sargs_core::command::sign(
        hq,
        &Command {
            id: id.into(),
            issued_at: now,
            expires_at: now + chrono::Duration::hours(1),
            target,
            issuer: "bench".into(),
            action: Action::HoldPlace {
                hold: format!("H-{id}"),
                case: "bench".into(),
                scope: Scope::Range {
                    cameras: vec!["cam-1".into()],
                    from: now - chrono::Duration::hours(1),
                    to: now,
                },
                until: None,
                offload: false,
            },
        },
    )
}

fn wait_online(rx: &std::sync::mpsc::Receiver<(String, Vec<u8>)>, n: usize) {
    let mut online = std::collections::HashSet::new();
    let end = Instant::now() + Duration::from_secs(120);
    while online.len() < n {
        let left = end.saturating_duration_since(Instant::now());
        let (t, p) = rx.recv_timeout(left).expect("agents come online");
        if t.ends_with("/status") && p.windows(8).any(|w| w == b"\"online\"") {
            online.insert(t);
        }
    }
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn raise_fd_limit() {
    // SAFETY: plain getrlimit/setrlimit on this process.
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

fn main() {
    raise_fd_limit();
    let rounds: usize = std::env::var("HQ_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let fleet: Vec<usize> = std::env::var("HQ_FLEET")
        .unwrap_or_else(|_| "100,1000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let base = std::path::absolute(PathBuf::from(
        std::env::var("HQ_DIR").unwrap_or_else(|_| "target/tmp/hq-bench".into()),
    ))
    .expect("dir");
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).expect("dir");
    // Mosquitto's own file limit, for the fleet's connections.
    let broker_dir = base.join("broker");
    std::fs::create_dir_all(&broker_dir).expect("broker dir");
    let broker = Broker::start(&broker_dir, None);
    let port = broker.port;
    let hq = DeviceKey::generate().expect("hq key");

    // 1. Round trip.
    let agent = start_agent(&base.join("rt"), "rt-gw", port, &hq);
    let (client, rx) = hq_client(port, "bench-hq-rt", &["sargs/agents/rt-gw/#", "bench/echo"]);
    wait_online(&rx, 1);
    let mut hold_ms = Vec::new();
    let mut echo_ms = Vec::new();
    for i in 0..rounds + 20 {
        let t = Instant::now();
        client
            .publish("bench/echo", QoS::AtLeastOnce, false, vec![0u8; 400])
            .expect("publish");
        loop {
            let (topic, _) = rx.recv_timeout(Duration::from_secs(10)).expect("echo");
            if topic == "bench/echo" {
                break;
            }
        }
        let echo = t.elapsed();
        let id = format!("c-{i}");
        let bytes = hold(&hq, &id, Target::Agent("rt-gw".into()));
        let t = Instant::now();
        client
            .publish(
                "sargs/agents/rt-gw/commands",
                QoS::AtLeastOnce,
                false,
                bytes,
            )
            .expect("publish");
        loop {
            let (topic, p) = rx
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("no response to {id}: {e}"));
            if std::env::var_os("HQ_DEBUG").is_some() {
                eprintln!(
                    "{topic} {}",
                    String::from_utf8_lossy(&p)
                        .chars()
                        .take(120)
                        .collect::<String>()
                );
            }
            if topic.ends_with("/responses")
                && p.windows(id.len() + 2)
                    .any(|w| w == format!("\"{id}\"").as_bytes())
            {
                assert!(
                    p.windows(9).any(|w| w == b"\"applied\""),
                    "{}",
                    String::from_utf8_lossy(&p)
                );
                break;
            }
        }
        let d = t.elapsed();
        if std::env::var_os("HQ_DEBUG").is_some() {
            eprintln!("ROUND {i} {:.2} ms", d.as_secs_f64() * 1000.0);
        }
        if i >= 20 {
            hold_ms.push(d.as_secs_f64() * 1000.0);
            echo_ms.push(echo.as_secs_f64() * 1000.0);
        }
    }
    agent.link.stop();
    drop(client);

    println!(
        "# HQ link over MQTT (Mosquitto {} on 127.0.0.1)\n",
        mosquitto_version()
    );
    println!("Command: `cargo bench --bench hq` (HQ_ROUNDS={rounds}, HQ_FLEET={fleet:?}); data under {}.\n", base.display());
    let (h50, h99, hmax) = (
        pct(&mut hold_ms, 0.5),
        pct(&mut hold_ms, 0.99),
        pct(&mut hold_ms, 1.0),
    );
    let (e50, e99) = (pct(&mut echo_ms, 0.5), pct(&mut echo_ms, 0.99));
    println!("| figure | p50 | p99 | max | goal | |");
    println!("|---|---:|---:|---:|---|---|");
    println!(
        "| hold round trip: publish → durable → response received ({rounds} rounds) | {h50:.2} ms | {h99:.2} ms | {hmax:.2} ms | p99 < 20 ms | {} |",
        if h99 < 20.0 { "met" } else { "NOT met" }
    );
    println!(
        "| anchor: bare QoS 1 round trip through the broker | {e50:.2} ms | {e99:.2} ms | | | |"
    );
    println!(
        "\nRatio hold / bare round trip: {:.1}× at p50, {:.1}× at p99.\n",
        h50 / e50,
        h99 / e99
    );

    // 2. Fleet.
    println!("| fleet | agents online after | fleet hold: all responses after | goal | |");
    println!("|---|---:|---:|---|---|");
    for n in fleet {
        let dir = base.join(format!("fleet-{n}"));
        let (client, rx) = hq_client(
            port,
            &format!("bench-hq-{n}"),
            &["sargs/agents/+/status", "sargs/agents/+/responses"],
        );
        let t0 = Instant::now();
        let agents: Vec<Agent> = (0..n)
            .map(|i| {
                start_agent(
                    &dir.join(format!("a{i:04}")),
                    &format!("gw-{i:04}"),
                    port,
                    &hq,
                )
            })
            .collect();
        wait_online(&rx, n);
        let online = t0.elapsed();
        let id = format!("fleet-{n}");
        let bytes = hold(&hq, &id, Target::Fleet);
        let t = Instant::now();
        client
            .publish("sargs/fleet/commands", QoS::AtLeastOnce, false, bytes)
            .expect("publish");
        let mut got = std::collections::HashSet::new();
        while got.len() < n {
            let (topic, p) = rx.recv_timeout(Duration::from_secs(60)).expect("responses");
            if topic.ends_with("/responses") && p.windows(id.len()).any(|w| w == id.as_bytes()) {
                got.insert(topic);
            }
        }
        let all = t.elapsed().as_secs_f64();
        let goal = if n >= 1000 { "< 5 s" } else { "—" };
        let met = if n < 1000 {
            ""
        } else if all < 5.0 {
            "met"
        } else {
            "NOT met"
        };
        println!(
            "| {n} agents | {:.1} s | {all:.2} s | {goal} | {met} |",
            online.as_secs_f64()
        );
        for a in agents {
            a.link.stop();
        }
        drop(client);
    }
    drop(broker);
}

fn mosquitto_version() -> String {
    std::process::Command::new("/usr/sbin/mosquitto")
        .arg("-h")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| {
            s.lines()
                .next()
                .map(|l| l.replace("mosquitto version ", ""))
        })
        .unwrap_or_default()
}
