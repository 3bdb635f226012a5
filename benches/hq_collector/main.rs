//! The HQ service (`sargs-hq run`, the release binary) with a real
//! Mosquitto, on SQLite and on PostgreSQL 15.
//!
//! ```text
//! cargo bench --bench hq_collector                      # everything, both databases
//! cargo bench --bench hq_collector -- throughput sqlite # parts: throughput latency report; sqlite postgres
//! cargo bench --bench hq_collector -- quick             # small sizes, every part (CI)
//! scripts/bench-hq [MESSAGES [RECORDS]]                 # builds the binary first
//! ```
//!
//! Knobs (environment; the quick mode's value in brackets): `HQC_MESSAGES`
//! (50000 [2000]), `HQC_ROUNDS` (3 [1]), `HQC_CAMERAS` (10), `HQC_INFLIGHT`
//! (256, the publisher's QoS 1 window), `HQC_WINDOW` (1000: the publisher's
//! lead over the commits), `HQC_BURST` (5000 [3000]: events published at
//! once in the burst check), `HQC_RATE` (1000 messages/s) and
//! `HQC_LATENCY_S` (20 [2]) for the latency run, `HQC_RECORDS` (10000000
//! [100000]) and `HQC_REPORT_RUNS` (3 [1]) for the report, `HQC_LIVE_RATE`
//! (100 events/s) and `HQC_LIVE_S` (90 [2]) for the service on the filled
//! database, `HQC_ENVELOPES` (`real`: the records' and receipts' envelopes
//! at their real size; `short`: 100 bytes, for a small disk), `HQC_BROKER`
//! (extra `mosquitto.conf` lines, `\n` between them; default
//! `max_queued_messages 1000000`: with Mosquitto's default of 1000 the
//! broker drops what queues up for a subscriber that is behind), `HQC_DIR`
//! (`target/tmp/hq-collector-bench`), `HQC_BIN` (`target/release/sargs-hq`),
//! `HQC_KEEP` (set: the report's databases are kept; by default they are
//! deleted after their part).
//!
//! 1. **Throughput** ([`throughput`]). One enrolled agent (`bench-gw`, its
//!    Ed25519 device key made here) and `HQC_MESSAGES` `segment.sealed`
//!    events, exactly as the agent publishes them ([`fleet`]: `HQC_CAMERAS`
//!    cameras, each a proper chain of one-minute segments ending now, so
//!    every message is a new record), made and signed before the clock
//!    starts. A publisher (rumqttc, MQTT 3.1.1) keeps `HQC_INFLIGHT` QoS 1
//!    messages in flight on `sargs/agents/bench-gw/events`. Timed from the
//!    first publish to the instant a poll of the database (every 10 ms, a
//!    primary-key lookup per camera: the highest record committed) sees the
//!    last one committed. Then verified: `records` and `messages` hold N
//!    rows, the quarantine none, and `sargs-hq report` counts N recorded,
//!    none missing. Anchor, in the same rounds (alternating order, a fresh
//!    broker each): `mosquitto_sub -V 5 -q 1 -C N` receiving the same
//!    stream into a file. Beside it, the database alone ([`alone`]). Then a
//!    **burst**: `HQC_BURST` events published at once, with no window; a
//!    run where nothing more is committed for 15 s is reported as stalled
//!    (what the broker had sent the service unacknowledged, whether SIGTERM
//!    still stops it) and fails the verification.
//! 2. **Latency** ([`latency`]). The same messages paced at `HQC_RATE`/s
//!    for `HQC_LATENCY_S` seconds; publish → commit per message, seen by
//!    polling every 2 ms (an upper bound: includes up to one poll
//!    interval), and publish → `received_at` (the instant the service began
//!    the batch's transaction: a lower bound). Anchor in the same run: a
//!    `mosquitto_sub -F %U` subscriber's receipt instant of each message.
//! 3. **Report over `HQC_RECORDS` records** ([`report`], [`fill`]). A
//!    database made by `sargs-hq check-config` (every migration applied),
//!    filled with SQL in bulk: 5 agents × 10 cameras × segments tiling the
//!    139 days before now (8 cameras CCTV, 30 days; 2 municipal police, 3
//!    months), receipts for every segment past its deadline (≈ 70 % of them)
//!    and a few exceptions (late, overdue, gaps, holes). The fill writes
//!    `records` and `receipts` only; what the service derives from them on
//!    ingest (since migration 0004: `ledger_days`, `ledger_cameras`, the hole
//!    tables, `records.deleted_at_ms` / `deletion_reason`) is then made by
//!    the migration's own backfill, read at run time from
//!    `crates/hq/migrations/0004_rollups.sql` (`HQC_MIGRATION`: another
//!    file): the statements between a line `-- backfill:begin` and the next
//!    line `-- backfill:end` (one such block or several, taken in order, so
//!    the markers can go around each `INSERT … SELECT` / `UPDATE` between
//!    the `CREATE`s). **What the bench expects of them:** portable SQL (run as they are by `sqlite3` and
//!    `psql`, in one transaction), deriving everything from `records` and
//!    `receipts` into derived tables that are empty (as the migration finds
//!    them on an empty ledger, and as the fill leaves them: the fill drops
//!    the two tables' secondary indexes and SQLite triggers and disables
//!    PostgreSQL triggers while it writes, and makes them again before the
//!    backfill). Without that file (the service before 0004) no backfill
//!    runs; with the file and no markers the part fails. Timed: `sargs-hq
//!    report --format json` (median of `HQC_REPORT_RUNS`) and the anchor
//!    `SELECT COUNT(*), SUM(bytes) FROM records` (one pass over every
//!    record); verified: the report's totals against counts made from
//!    `records` and `receipts` themselves. Bytes per record: the file's
//!    size (SQLite) or `pg_database_size` over the records. Then ([`live`])
//!    `sargs-hq run` on that database (its periodic check included) with one
//!    enrolled agent publishing `HQC_LIVE_RATE` events/s for `HQC_LIVE_S`
//!    seconds: every one kept, none quarantined, and the report counts them
//!    on top of the fill's.
//!
//! Results are printed as Markdown; the goals (≥ 5,000 msg/s, ≥ 0.5× the
//! anchor, p99 < 50 ms, report < 2 s) as met or NOT met, which never fails
//! the run. A failed verification does: it is printed where it happened,
//! the run goes on, and the bench exits 1 at the end listing them. Everything
//! listens on 127.0.0.1 only; every broker, service and database server
//! started is stopped at the end.

// Test and measurement code: a panic here is a failed run with its reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tests/support/mosquitto.rs"]
#[allow(dead_code)]
mod mosquitto;
#[path = "../../tests/support/postgres.rs"]
#[allow(dead_code)]
mod postgres;

mod alone;
mod fill;
mod fleet;
mod latency;
mod live;
mod mqtt;
mod report;
mod servers;
mod throughput;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use postgres::Postgres;

use crate::fleet::Fleet;
use crate::servers::pg_bin;

// --- knobs ---------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        }
    }
    pub fn tag(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "pg",
        }
    }
}

pub struct Knobs {
    pub quick: bool,
    pub parts: Vec<String>,
    pub backends: Vec<Backend>,
    pub messages: usize,
    pub rounds: usize,
    pub cameras: usize,
    pub inflight: u16,
    pub window: i64,
    pub burst: usize,
    pub rate: usize,
    pub latency_s: usize,
    pub records: u64,
    pub report_runs: usize,
    pub live_rate: usize,
    pub live_s: usize,
    pub real_envelopes: bool,
    pub broker_extra: String,
    pub dir: PathBuf,
    pub bin: PathBuf,
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} does not parse")),
        Err(_) => default,
    }
}

impl Knobs {
    fn read() -> Knobs {
        // `cargo bench` passes `--bench`; the rest are ours.
        let args: Vec<String> = std::env::args()
            .skip(1)
            .filter(|a| !a.starts_with("--"))
            .collect();
        let quick = args.iter().any(|a| a == "quick");
        let mut parts: Vec<String> = args
            .iter()
            .filter(|a| ["throughput", "latency", "report"].contains(&a.as_str()))
            .cloned()
            .collect();
        if parts.is_empty() {
            parts = vec!["throughput".into(), "latency".into(), "report".into()];
        }
        let mut backends: Vec<Backend> = args
            .iter()
            .filter_map(|a| match a.as_str() {
                "sqlite" => Some(Backend::Sqlite),
                "postgres" | "pg" => Some(Backend::Postgres),
                _ => None,
            })
            .collect();
        if backends.is_empty() {
            backends = vec![Backend::Sqlite, Backend::Postgres];
        }
        let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        Knobs {
            quick,
            parts,
            backends,
            messages: env("HQC_MESSAGES", if quick { 2_000 } else { 50_000 }),
            rounds: env("HQC_ROUNDS", if quick { 1 } else { 3 }),
            cameras: env("HQC_CAMERAS", 10),
            inflight: env("HQC_INFLIGHT", 256),
            window: env("HQC_WINDOW", 1_000),
            burst: env("HQC_BURST", if quick { 3_000 } else { 5_000 }),
            rate: env("HQC_RATE", 1_000),
            latency_s: env("HQC_LATENCY_S", if quick { 2 } else { 20 }),
            records: env("HQC_RECORDS", if quick { 100_000 } else { 10_000_000 }),
            report_runs: env("HQC_REPORT_RUNS", if quick { 1 } else { 3 }),
            live_rate: env("HQC_LIVE_RATE", 100),
            live_s: env("HQC_LIVE_S", if quick { 2 } else { 90 }),
            real_envelopes: std::env::var("HQC_ENVELOPES").as_deref() != Ok("short"),
            // Mosquitto's default (1000) drops what is queued beyond it for
            // a subscriber that is behind, PUBACKed to the publisher all the
            // same (docs/BENCHMARKS.md, "HQ service").
            broker_extra: std::env::var("HQC_BROKER")
                .unwrap_or_else(|_| "max_queued_messages 1000000".into())
                .replace("\\n", "\n"),
            dir: std::path::absolute(
                std::env::var("HQC_DIR")
                    .map(PathBuf::from)
                    .unwrap_or_else(|_| root.join(&target).join("tmp/hq-collector-bench")),
            )
            .expect("dir"),
            bin: std::path::absolute(
                std::env::var("HQC_BIN")
                    .map(PathBuf::from)
                    .unwrap_or_else(|_| root.join(&target).join("release/sargs-hq")),
            )
            .expect("HQC_BIN"),
        }
    }
}

// --- verification ----------------------------------------------------------------

/// The verifications that failed so far; the run goes on and exits 1.
static FAILED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Records a failed verification (and says so on stderr at once).
pub fn fail(what: String) {
    eprintln!("!! verification failed: {what}");
    FAILED.lock().unwrap_or_else(|e| e.into_inner()).push(what);
}

/// `fail(what())` unless `ok`; returns `ok`.
pub fn verify(ok: bool, what: impl FnOnce() -> String) -> bool {
    if !ok {
        fail(what());
    }
    ok
}

/// `got == want` as a verification of `what`.
pub fn verify_eq<T: PartialEq + std::fmt::Debug>(what: &str, got: T, want: T) -> bool {
    verify(got == want, || {
        format!("{what}: {got:?}, expected {want:?}")
    })
}

// --- figures ---------------------------------------------------------------------

pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

pub fn pct(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// "**met**" or "**NOT met**".
pub fn met(ok: bool) -> &'static str {
    if ok {
        "**met**"
    } else {
        "**NOT met**"
    }
}

// --- main ----------------------------------------------------------------------------

fn version(program: &str, arg: &str) -> String {
    Command::new(program)
        .arg(arg)
        .output()
        .ok()
        .map(|o| {
            let s = String::from_utf8_lossy(&o.stdout).into_owned()
                + &String::from_utf8_lossy(&o.stderr);
            s.lines().next().unwrap_or("").trim().to_owned()
        })
        .unwrap_or_default()
}

fn main() {
    let k = Knobs::read();
    assert!(
        k.bin.is_file(),
        "{} is missing: cargo build --release -p sargs-hq (scripts/bench-hq does)",
        k.bin.display()
    );
    std::fs::create_dir_all(&k.dir).expect("dir");
    let started = std::time::Instant::now();
    println!("# HQ service benchmarks\n");
    println!(
        "`{}` ({}); {}; SQLite {} (bundled in the service; `sqlite3` CLI {}); {}; {} cores.{}\n",
        k.bin.display(),
        version(k.bin.to_str().expect("utf-8"), "--version"),
        version("/usr/sbin/mosquitto", "-h"),
        rusqlite::version(),
        version("sqlite3", "--version")
            .split(' ')
            .next()
            .unwrap_or(""),
        version(pg_bin("postgres").to_str().expect("utf-8"), "--version"),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        if k.quick {
            " **Quick mode** (CI: small sizes, figures not comparable)."
        } else {
            ""
        }
    );
    let fleet = Fleet::new();
    let mut pg: Option<Postgres> = None;
    for part in &k.parts {
        match part.as_str() {
            "throughput" => throughput::part(&k, &mut pg, &fleet),
            "latency" => latency::part(&k, &mut pg, &fleet),
            "report" => report::part(&k, &mut pg, &fleet),
            _ => unreachable!(),
        }
    }
    drop(pg);
    let failed = std::mem::take(&mut *FAILED.lock().unwrap_or_else(|e| e.into_inner()));
    println!("## Verification\n");
    if failed.is_empty() {
        println!(
            "All passed ({:.0} s in all).",
            started.elapsed().as_secs_f64()
        );
    } else {
        println!(
            "**{} failed** ({:.0} s in all):\n",
            failed.len(),
            started.elapsed().as_secs_f64()
        );
        for f in &failed {
            println!("- {f}");
        }
        std::process::exit(1);
    }
}
