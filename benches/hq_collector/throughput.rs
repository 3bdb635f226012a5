//! 1. The collector's throughput, against `mosquitto_sub` and the database
//!    alone; and a burst.

use std::process::Command;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::alone::database_alone;
use crate::fleet::{Fleet, TOPIC};
use crate::mqtt::{committed_sql, publish, ABANDON};
use crate::postgres::Postgres;
use crate::servers::{Mosq, Service, Sql, HQ_CLIENT};
use crate::{fail, median, met, verify_eq, Backend, Knobs};

struct HqRun {
    secs: f64,
    publish_secs: f64,
    rows_per_commit: f64,
    bytes_per_record: f64,
}

/// How the publisher is held back.
#[derive(Clone, Copy)]
enum Flow {
    /// At most this many messages published beyond the last one seen
    /// committed (a fleet's total in flight).
    Window(i64),
    /// Everything at once, as a backlog arrives (a broker's queue after an
    /// outage, an agent's outbox after a reconnection).
    Burst,
}

/// How a run of the service is made and judged.
struct Run<'a> {
    /// Its directory and database (`-` made `_`).
    name: &'a str,
    flow: Flow,
    /// No progress this long: stalled.
    stall: Duration,
    /// The broker's extra configuration.
    broker_extra: &'a str,
}

/// One run of the service alone, verified (failures recorded): `Err` says
/// where it stopped.
fn hq_throughput(
    k: &Knobs,
    backend: Backend,
    pg: &mut Option<Postgres>,
    events: &[Vec<u8>],
    fleet: &Fleet,
    run: &Run,
) -> Result<HqRun, String> {
    let Run {
        name,
        flow,
        stall,
        broker_extra,
    } = *run;
    let n = events.len();
    let dir = k.dir.join(format!("{name}-{}", backend.tag()));
    // The broker lives in the run's directory, made after it is cleaned.
    let _ = std::fs::remove_dir_all(&dir);
    let broker = Mosq::start(&dir.join("broker"), broker_extra);
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    let svc = Service::new(
        k,
        &dir.join("hq"),
        backend,
        pg,
        &name.replace('-', "_"),
        &url,
    );
    svc.enrol(fleet);
    let empty = svc.db.bytes();
    let mut hq = svc.run();
    broker.wait_subscribed(HQ_CLIENT, "sargs/agents/+/events");
    let mut sql = Sql::open(&svc.db);
    let probe = committed_sql(k.cameras);
    assert_eq!(sql.int(&probe), -1, "an empty ledger");
    let committed = Arc::new(AtomicI64::new(-1));
    let gate = match flow {
        Flow::Window(w) => Some((committed.clone(), w)),
        Flow::Burst => None,
    };
    let payloads = events.to_vec();
    let (port, inflight) = (broker.port, k.inflight);
    let t0 = Instant::now();
    let publisher = std::thread::spawn(move || publish(port, payloads, inflight, None, gate));
    let mut last = (-1, Instant::now());
    let mut log_at_last = hq.log_len();
    let outcome = loop {
        std::thread::sleep(Duration::from_millis(10));
        let h = sql.int(&probe);
        committed.store(h, Ordering::SeqCst);
        let now = Instant::now();
        if h == n as i64 - 1 {
            break Ok(now);
        }
        if h != last.0 {
            last = (h, now);
            log_at_last = hq.log_len();
        }
        if now - last.1 > stall.min(Duration::from_secs(2)) && publisher.is_finished() {
            let drops = broker.drops();
            if drops > 0 {
                break Err(format!(
                    "Mosquitto dropped messages for {HQ_CLIENT} ({drops} line(s) in its log): {} of {n} \
                     committed; raise max_queued_messages (HQC_BROKER)",
                    last.0 + 1
                ));
            }
        }
        if now - last.1 > stall {
            let unacked = broker.unacked(HQ_CLIENT);
            let alive = if hq.alive() { "alive" } else { "exited" };
            let logged = hq.log_len() - log_at_last.min(hq.log_len());
            break Err(format!(
                "stalled: {} of {n} committed, nothing more for {} s; the broker had sent it {unacked} \
                 it had not acknowledged; `sargs-hq run` {alive}, {}",
                last.0 + 1,
                stall.as_secs(),
                if logged == 0 {
                    "its log silent since".to_owned()
                } else {
                    format!("{logged} bytes logged since")
                }
            ));
        }
    };
    let done = match outcome {
        Ok(done) => done,
        Err(e) => {
            committed.store(ABANDON, Ordering::SeqCst);
            drop(sql);
            let stops = hq.stops_within(Duration::from_secs(10));
            publisher.join().expect("publisher");
            return Err(format!(
                "{e}; {}",
                if stops {
                    "it stopped on SIGTERM"
                } else {
                    "SIGTERM did not stop it in 10 s (killed)"
                }
            ));
        }
    };
    let secs = (done - t0).as_secs_f64();
    let published = publisher.join().expect("publisher");
    // Verified: every message kept once, as a record, nothing refused.
    let what = format!("{name} {}", backend.name());
    let count = |sql: &mut Sql, table: &str| sql.int(&format!("SELECT COUNT(*) FROM {table};"));
    verify_eq(
        &format!("{what}: records"),
        count(&mut sql, "records"),
        n as i64,
    );
    verify_eq(
        &format!("{what}: messages"),
        count(&mut sql, "messages"),
        n as i64,
    );
    verify_eq(
        &format!("{what}: quarantined"),
        count(&mut sql, "quarantine"),
        0,
    );
    // One `received_at` per committed batch (the batch's start instant, ms).
    let batches = sql.int("SELECT COUNT(DISTINCT received_at) FROM records;");
    drop(sql);
    hq.stop();
    let r = svc.report();
    let t = &r["totals"];
    verify_eq(
        &format!("{what}: report recorded"),
        t["recorded"].as_u64(),
        Some(n as u64),
    );
    verify_eq(
        &format!("{what}: report missing"),
        t["missing"].as_u64(),
        Some(0),
    );
    verify_eq(
        &format!("{what}: report overdue"),
        t["overdue"].as_u64(),
        Some(0),
    );
    let bytes = svc.db.bytes();
    Ok(HqRun {
        secs,
        publish_secs: published.elapsed.as_secs_f64(),
        rows_per_commit: n as f64 / batches.max(1) as f64,
        bytes_per_record: (bytes.saturating_sub(empty)) as f64 / n as f64,
    })
}

/// `mosquitto_sub -V 5 -q 1 -C N` receiving the same stream: seconds from
/// the first publish to its exit.
fn anchor_throughput(k: &Knobs, events: &[Vec<u8>], round: usize) -> f64 {
    let n = events.len();
    let dir = k.dir.join(format!("anchor-{round}"));
    let _ = std::fs::remove_dir_all(&dir);
    let broker = Mosq::start(&dir, &k.broker_extra);
    let out = dir.join("received.txt");
    let mut sub = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
        .args(["-V", "5", "-q", "1", "-i", "anchor-sub", "-t", TOPIC])
        .args(["-C", &n.to_string()])
        .stdout(std::fs::File::create(&out).expect("out"))
        .spawn()
        .expect("mosquitto_sub (Debian package mosquitto-clients)");
    broker.wait_subscribed("anchor-sub", TOPIC);
    let payloads = events.to_vec();
    let (port, inflight) = (broker.port, k.inflight);
    let t0 = Instant::now();
    let publisher = std::thread::spawn(move || publish(port, payloads, inflight, None, None));
    let status = sub.wait().expect("mosquitto_sub");
    let secs = t0.elapsed().as_secs_f64();
    publisher.join().expect("publisher");
    assert!(status.success(), "mosquitto_sub: {status}");
    let lines = std::fs::read_to_string(&out)
        .expect("received")
        .lines()
        .count();
    assert_eq!(lines, n, "mosquitto_sub received every message");
    secs
}

pub fn part(k: &Knobs, pg: &mut Option<Postgres>, fleet: &Fleet) {
    let n = k.messages;
    eprintln!("== throughput: signing {n} segment.sealed events");
    let (events, rows) = fleet.events_and_rows(n, k.cameras);
    let mean = events.iter().map(Vec::len).sum::<usize>() / n.max(1);
    println!("## 1. Collector throughput: {n} `segment.sealed` events, committed\n");
    println!(
        "Command: `cargo bench --bench hq_collector -- throughput` (HQC_MESSAGES={n}, HQC_ROUNDS={}, \
         HQC_CAMERAS={}, HQC_INFLIGHT={}{}). Events of {mean} bytes on average (a real signed \
         manifest envelope each).\n",
        k.rounds,
        k.cameras,
        k.inflight,
        if k.broker_extra.trim().is_empty() {
            String::new()
        } else {
            format!(", HQC_BROKER={:?}", k.broker_extra.trim())
        }
    );
    println!(
        "| database | round | sargs-hq: msg/s (s) | rows per commit | DB bytes per record | \
         publisher: s to last PUBACK | anchor mosquitto_sub: msg/s (s) | ratio | DB alone, the \
         service's statements: msg/s | DB alone, one statement of each kind per batch: msg/s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut summary = Vec::new();
    for &backend in &k.backends {
        let (mut hq_rates, mut anchor_rates, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        let (mut alone_rates, mut batched_rates) = (Vec::new(), Vec::new());
        for round in 1..=k.rounds {
            let hq_first = round % 2 == 1;
            let mut a = 0.0;
            if !hq_first {
                eprintln!("== throughput {} round {round}: anchor", backend.name());
                a = anchor_throughput(k, &events, round);
            }
            eprintln!("== throughput {} round {round}: sargs-hq", backend.name());
            let run = Run {
                name: &format!("throughput-{round}"),
                flow: Flow::Window(k.window),
                stall: Duration::from_secs(60),
                broker_extra: &k.broker_extra,
            };
            let h = hq_throughput(k, backend, pg, &events, fleet, &run);
            if hq_first {
                eprintln!("== throughput {} round {round}: anchor", backend.name());
                a = anchor_throughput(k, &events, round);
            }
            let ar = n as f64 / a;
            anchor_rates.push(ar);
            eprintln!(
                "== throughput {} round {round}: the database alone",
                backend.name()
            );
            let alone = database_alone(k, backend, pg, fleet, &rows, false, round);
            let batched = database_alone(k, backend, pg, fleet, &rows, true, round);
            alone_rates.push(alone);
            batched_rates.push(batched);
            match h {
                Ok(h) => {
                    let hr = n as f64 / h.secs;
                    hq_rates.push(hr);
                    ratios.push(hr / ar);
                    println!(
                        "| {} | {round} | {hr:.0} ({:.2} s) | {:.1} | {:.0} | {:.2} | {ar:.0} ({a:.2} s) | \
                         {:.2}× | {alone:.0} | {batched:.0} |",
                        backend.name(),
                        h.secs,
                        h.rows_per_commit,
                        h.bytes_per_record,
                        h.publish_secs,
                        hr / ar
                    );
                }
                Err(e) => {
                    println!(
                        "| {} | {round} | **{e}** | | | | {ar:.0} ({a:.2} s) | | {alone:.0} | {batched:.0} |",
                        backend.name()
                    );
                    fail(format!("throughput {} round {round}: {e}", backend.name()));
                }
            }
        }
        let (hm, rm) = (median(&hq_rates), median(&ratios));
        println!(
            "| **{}** | median | **{hm:.0}** | | | | **{:.0}** | **{rm:.2}×** | {:.0} | {:.0} |",
            backend.name(),
            median(&anchor_rates),
            median(&alone_rates),
            median(&batched_rates),
        );
        summary.push(format!(
            "{}: **{hm:.0} msg/s** (goal ≥ 5,000: {}), **{rm:.2}×** the anchor (goal ≥ 0.5×: {})",
            backend.name(),
            met(hm >= 5000.0),
            met(rm >= 0.5)
        ));
    }
    println!(
        "\nEach round: a fresh broker, database and `sargs-hq run`; timed from the first publish to \
         the poll that sees the last record committed; then verified (N records, N messages, \
         nothing quarantined, the report counts N recorded and none missing). The publisher keeps \
         at most {} messages beyond the last one seen committed (HQC_WINDOW; see the burst below), \
         {} QoS 1 in flight. \"rows per commit\": records over distinct `received_at` (one per \
         batch). \"DB bytes per record\": growth of the database over the run / N. The anchor's \
         publisher is not held back. \"DB alone\": the rows the service wrote, as SQL fed to \
         `sqlite3` / `psql` (512 messages per transaction, `synchronous = FULL`; psql waits for \
         each statement as the service does): the five statements `ingest` issued per message \
         before migration 0004 (not its rollups), then the same rows in one statement of each \
         kind per batch (`IN (…)` for the duplicate check, multi-row `INSERT`s).\n\n{}.\n",
        k.window,
        k.inflight,
        summary.join("; ")
    );
    burst(k, pg, fleet);
}

/// A backlog arriving at once: the broker forwards it as fast as it comes.
fn burst(k: &Knobs, pg: &mut Option<Postgres>, fleet: &Fleet) {
    println!("### Burst: {} events published at once\n", k.burst);
    let events = fleet.events(k.burst, k.cameras);
    let debug = format!("{}\nlog_type debug", k.broker_extra);
    let run = Run {
        name: "burst",
        flow: Flow::Burst,
        stall: Duration::from_secs(15),
        broker_extra: &debug,
    };
    println!("| database | outcome |");
    println!("|---|---|");
    for &backend in &k.backends {
        eprintln!("== burst {}", backend.name());
        let out = match hq_throughput(k, backend, pg, &events, fleet, &run) {
            Ok(h) => format!(
                "all committed in {:.2} s ({:.0} msg/s), verified",
                h.secs,
                k.burst as f64 / h.secs
            ),
            Err(e) => {
                fail(format!("burst {}: {e}", backend.name()));
                format!("**{e}**")
            }
        };
        println!("| {} | {out} |", backend.name());
    }
    println!(
        "\nThe publisher is not held back: the broker forwards the backlog to the service as fast \
         as it comes (Mosquitto 2.0.11 does not hold to the service's Receive Maximum of 512). \
         Stalled: nothing more committed for {} s; what the broker had sent the service \
         unacknowledged is counted from its debug log.\n",
        run.stall.as_secs()
    );
}
