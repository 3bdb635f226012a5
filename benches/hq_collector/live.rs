//! The service running on the report's filled database: its periodic
//! check over all of it, and one agent publishing meanwhile.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::fill::Totals;
use crate::fleet::{Fleet, AGENT};
use crate::mqtt::{commit_latencies, committed_sql, poll_commits, publish};
use crate::servers::{Mosq, Service, Sql, HQ_CLIENT};
use crate::{pct, verify, verify_eq, Knobs};

/// `sargs-hq run` on the filled database, its periodic check included (it
/// runs at start, then every `check_interval_s`): one enrolled agent
/// publishing `HQC_LIVE_RATE` events/s for `HQC_LIVE_S` seconds. Reported:
/// publish → commit (polled every 10 ms), what was quarantined, and what the
/// service logged about the database. Verified: every event kept, none
/// quarantined, and the report counting them on top of the fill's `fill`.
pub fn run(k: &Knobs, svc: &Service, fleet: &Fleet, fill: Totals) {
    let n = k.live_rate * k.live_s;
    if n == 0 {
        return;
    }
    eprintln!(
        "== live: {} events/s for {} s on the filled database",
        k.live_rate, k.live_s
    );
    let debug = format!("{}\nlog_type debug", k.broker_extra);
    let broker = Mosq::start(&svc.dir.join("broker"), &debug);
    let conf = svc.dir.join("hq.toml");
    let text = std::fs::read_to_string(&conf).expect("hq.toml").replace(
        "mqtt://127.0.0.1:1\"",
        &format!("mqtt://127.0.0.1:{}\"", broker.port),
    );
    std::fs::write(&conf, text).expect("hq.toml");
    svc.enrol(fleet);
    let events = fleet.events(n, k.cameras);
    let t0 = Instant::now();
    let hq = svc.run();
    broker.wait_subscribed(HQ_CLIENT, "sargs/agents/+/events");
    let subscribed = t0.elapsed().as_secs_f64();
    let stop = Arc::new(AtomicBool::new(false));
    let poller = poll_commits(&svc.db, k.cameras, Duration::from_millis(10), stop.clone());
    let (port, inflight, rate) = (broker.port, k.inflight, k.live_rate);
    let published = std::thread::spawn(move || publish(port, events, inflight, Some(rate), None))
        .join()
        .expect("publisher");
    let mut sql = Sql::open(&svc.db);
    let probe = committed_sql(k.cameras);
    let mut last = (sql.int(&probe), Instant::now());
    let quarantined = |sql: &mut Sql| sql.int("SELECT COUNT(*) FROM quarantine;");
    while last.0 < n as i64 - 1 && last.1.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(100));
        let h = sql.int(&probe);
        if h != last.0 {
            last = (h, Instant::now());
        }
        if last.0 + 1 + quarantined(&mut sql) >= n as i64 {
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(50));
    stop.store(true, Ordering::SeqCst);
    let seen = poller.join().expect("poller");
    let kept = sql.int(&format!(
        "SELECT COUNT(*) FROM records WHERE agent = '{AGENT}';"
    ));
    let by_code = sql.lines("SELECT reason_code, COUNT(*) FROM quarantine GROUP BY reason_code;");
    let log = hq.log();
    // Each one kept (the highest seen committed is the last) or quarantined,
    // unless it stopped.
    let stalled = last.0 + 1 + quarantined(&mut sql) < n as i64;
    let outcome = if !stalled {
        hq.stop();
        "all kept or quarantined".to_owned()
    } else {
        let unacked = broker.unacked(HQ_CLIENT);
        let stopped = hq.stops_within(Duration::from_secs(30));
        format!(
            "**stalled**: nothing committed in the last 60 s (the broker had sent it {unacked} it had \
             not acknowledged; {})",
            if stopped {
                "it stopped on SIGTERM"
            } else {
                "SIGTERM did not stop it in 30 s: killed"
            }
        )
    };
    drop(sql);
    // Verified: every event kept as a record, and counted by the report
    // beside the fill's (the service keeps what it derives up to date).
    let what = format!("live {}", svc.db.backend().name());
    verify_eq(&format!("{what}: records kept"), kept, n as i64);
    verify(by_code.is_empty(), || {
        format!("{what}: quarantined {}", by_code.join(", "))
    });
    verify(!stalled, || format!("{what}: {outcome}"));
    let after = Totals::of_report(&svc.report());
    let want = Totals {
        recorded: fill.recorded + kept,
        ..fill
    };
    let counted = verify(after == want, || {
        format!("{what}: the report counts {after}; expected {want}")
    });
    let count = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    // Latencies of the messages seen committed in order, up to the first
    // one missing (a quarantined one ends the in-order view).
    let committed_in_order = seen.last().map_or(0, |(_, h)| (*h + 1) as usize);
    let lat = commit_latencies(&published.at[..committed_in_order.min(n)], &seen, 0);
    println!(
        "`sargs-hq run` on this database (check at start, then every 60 s), one enrolled agent \
         publishing {} events/s for {} s (subscribed {subscribed:.1} s after start):\n",
        k.live_rate, k.live_s
    );
    println!("| kept | quarantined | publish → commit p50 / p99 / max | log: `database is locked` | log: `batch refused` | log: `ledger check` failed | outcome |");
    println!("|---:|---|---|---:|---:|---:|---|");
    println!(
        "| {kept} of {n} | {} | {} | {} | {} | {} | {outcome} |\n",
        if by_code.is_empty() {
            "0".to_owned()
        } else {
            by_code.join(", ")
        },
        if lat.is_empty() {
            "—".to_owned()
        } else {
            format!(
                "{:.0} / {:.0} / {:.0} ms",
                pct(&lat, 0.5),
                pct(&lat, 0.99),
                pct(&lat, 1.0)
            )
        },
        count("database is locked"),
        count("batch refused"),
        count("ledger check"),
    );
    println!(
        "Then `sargs-hq report`: {}.\n",
        if counted {
            format!("the fill's totals and the {kept} new records, verified")
        } else {
            format!("**{after}**, expected {want}")
        }
    );
}
