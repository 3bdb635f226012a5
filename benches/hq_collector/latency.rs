//! 2. Publish → commit latency at a steady rate.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::fleet::{Fleet, TOPIC};
use crate::mqtt::{commit_latencies, committed_sql, poll_commits, publish};
use crate::postgres::Postgres;
use crate::servers::{tail, Mosq, Service, Sql, HQ_CLIENT};
use crate::{fail, met, pct, verify_eq, Knobs};

pub fn part(k: &Knobs, pg: &mut Option<Postgres>, fleet: &Fleet) {
    let n = k.rate * k.latency_s;
    eprintln!("== latency: signing {n} events");
    let events = fleet.events(n, k.cameras);
    println!("## 2. Publish → commit latency at {} messages/s\n", k.rate);
    println!(
        "Command: `cargo bench --bench hq_collector -- latency` (HQC_RATE={}, HQC_LATENCY_S={}, HQC_CAMERAS={}); \
         the first second is left out (start-up).\n",
        k.rate, k.latency_s, k.cameras
    );
    println!("| database | measured | p50 ms | p99 ms | max ms | goal |");
    println!("|---|---|---:|---:|---:|---|");
    for &backend in &k.backends {
        eprintln!("== latency {}", backend.name());
        let dir = k.dir.join(format!("latency-{}", backend.tag()));
        let _ = std::fs::remove_dir_all(&dir);
        let broker = Mosq::start(&dir.join("broker"), &k.broker_extra);
        let url = format!("mqtt://127.0.0.1:{}", broker.port);
        let svc = Service::new(k, &dir.join("hq"), backend, pg, "hq_latency", &url);
        svc.enrol(fleet);
        let hq = svc.run();
        broker.wait_subscribed(HQ_CLIENT, "sargs/agents/+/events");
        // The anchor: a plain QoS 1 subscriber stamping each arrival.
        let stamps = dir.join("anchor-stamps.txt");
        let mut sub = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
            .args(["-V", "5", "-q", "1", "-i", "anchor-sub", "-t", TOPIC])
            .args(["-C", &n.to_string(), "-F", "%U"])
            .stdout(std::fs::File::create(&stamps).expect("stamps"))
            .spawn()
            .expect("mosquitto_sub");
        broker.wait_subscribed("anchor-sub", TOPIC);
        // Polls every 2 ms: when each message was first seen committed.
        let stop = Arc::new(AtomicBool::new(false));
        let poller = poll_commits(&svc.db, k.cameras, Duration::from_millis(2), stop.clone());
        let (port, inflight, rate, payloads) = (broker.port, k.inflight, k.rate, events.clone());
        let published =
            std::thread::spawn(move || publish(port, payloads, inflight, Some(rate), None))
                .join()
                .expect("publisher");
        let mut sql = Sql::open(&svc.db);
        let probe = committed_sql(k.cameras);
        let end = Instant::now() + Duration::from_secs(60);
        let mut h = sql.int(&probe);
        while h < n as i64 - 1 && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(5));
            h = sql.int(&probe);
        }
        std::thread::sleep(Duration::from_millis(20));
        stop.store(true, Ordering::SeqCst);
        let seen = poller.join().expect("poller");
        if h < n as i64 - 1 {
            let _ = sub.kill();
            let _ = sub.wait();
            let e = format!(
                "{} of {n} committed 60 s after the last publish; its log ends:\n{}",
                h + 1,
                tail(&hq.log(), 20)
            );
            println!(
                "| {} | **not all committed: {} of {n}** | | | | |",
                backend.name(),
                h + 1
            );
            fail(format!("latency {}: {e}", backend.name()));
            continue;
        }
        assert!(sub.wait().expect("mosquitto_sub").success());
        let what = format!("latency {}", backend.name());
        verify_eq(
            &format!("{what}: records"),
            sql.int("SELECT COUNT(*) FROM records;"),
            n as i64,
        );
        verify_eq(
            &format!("{what}: quarantined"),
            sql.int("SELECT COUNT(*) FROM quarantine;"),
            0,
        );
        // received_at of every record, by message index.
        let rows = sql.lines("SELECT camera, sequence, received_at FROM records;");
        drop(sql);
        hq.stop();
        let mut received = vec![0i64; n];
        for r in rows {
            let f: Vec<&str> = r.split('|').collect();
            let c: usize = f[0].trim_start_matches("cam-").parse().expect("camera");
            let seq: usize = f[1].parse().expect("sequence");
            received[(seq - 1) * k.cameras + c] = f[2].parse().expect("received_at");
        }
        let skip = k.rate.min(n / 2);
        let polled = commit_latencies(&published.at, &seen, skip);
        let began: Vec<f64> = (skip..n)
            .map(|i| (received[i] as i128 * 1_000_000 - published.unix_ns[i]) as f64 / 1e6)
            .collect();
        let anchor: Vec<f64> = std::fs::read_to_string(&stamps)
            .expect("stamps")
            .lines()
            .enumerate()
            .skip(skip)
            .map(|(i, l)| {
                let t: f64 = l.trim().parse().expect("%U");
                (t * 1e9 - published.unix_ns[i] as f64) / 1e6
            })
            .collect();
        // Per message, for a look at when the slow ones came.
        let csv: String = polled
            .iter()
            .zip(&began)
            .enumerate()
            .map(|(i, (p, b))| format!("{},{p:.3},{b:.3}\n", i + skip))
            .collect();
        std::fs::write(
            dir.join("latency.csv"),
            format!("message,commit_seen_ms,received_at_ms\n{csv}"),
        )
        .expect("latency.csv");
        let p99 = pct(&polled, 0.99);
        let row = |what: &str, v: &[f64], goal: &str| {
            println!(
                "| {} | {what} | {:.2} | {:.2} | {:.2} | {goal} |",
                backend.name(),
                pct(v, 0.5),
                pct(v, 0.99),
                pct(v, 1.0)
            )
        };
        row(
            "publish → commit seen (poll every 2 ms: upper bound)",
            &polled,
            &format!("p99 < 50 ms: {}", met(p99 < 50.0)),
        );
        row(
            "publish → `received_at` (batch began: lower bound, ms resolution)",
            &began,
            "",
        );
        row("anchor: publish → `mosquitto_sub` received", &anchor, "");
    }
    println!();
}
