//! 3. The compliance report over many records: `sargs-hq report` against
//!    one pass over the records, then the service running on that database
//!    ([`crate::live`]).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use crate::fill::{
    backfill_script, backfill_sql, fill_sql, Deferred, Layout, Totals, AGENTS, CAMS, MIGRATION,
};
use crate::fleet::Fleet;
use crate::postgres::Postgres;
use crate::servers::{DbRef, Service, Sql};
use crate::{fail, live, median, met, verify, Backend, Knobs};

/// One pass over every record: what any report must at least read.
const ANCHOR: &str = "SELECT COUNT(*), SUM(bytes) FROM records";

/// Seconds a statement takes in a fresh `sqlite3` / `psql` (its output
/// discarded).
fn time_sql(db: &DbRef, sql: &str) -> f64 {
    let mut s = Sql::open(db);
    s.lines("SELECT 1;");
    let t = Instant::now();
    s.lines(&format!("{sql};"));
    t.elapsed().as_secs_f64()
}

/// `sargs-hq report --format json` (from the beginning to now) `runs`
/// times: the seconds of each, and the last report.
fn time_report(svc: &Service, runs: usize) -> (Vec<f64>, serde_json::Value) {
    let mut times = Vec::new();
    let mut last = serde_json::Value::Null;
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        let out = svc.cli(&["report", "--format", "json"]);
        times.push(t.elapsed().as_secs_f64());
        last = serde_json::from_str(&out).expect("report json");
    }
    (times, last)
}

/// Bytes free on the file system holding `dir`.
fn free_bytes(dir: &Path) -> u64 {
    let out = Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(dir)
        .output()
        .expect("df");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0)
}

pub fn part(k: &Knobs, pg: &mut Option<Postgres>, fleet: &Fleet) {
    let (record_env, receipt_env) = if k.real_envelopes {
        fleet.stored_envelopes()
    } else {
        (
            "{\"short\":\"".to_owned() + &"e".repeat(86) + "\"}",
            "{\"short\":\"".to_owned() + &"r".repeat(86) + "\"}",
        )
    };
    let l = Layout::new(k.records);
    println!("## 3. Compliance report over {} records\n", k.records);
    println!(
        "Command: `cargo bench --bench hq_collector -- report` (HQC_RECORDS={}, HQC_REPORT_RUNS={}, \
         HQC_ENVELOPES={}); envelopes as stored: record {} bytes, receipt {} bytes. Layout: {AGENTS} \
         agents × {CAMS} cameras × {} segments of {} s tiling the 139 days before now (cameras 0–7 \
         CCTV 30 days, 8–9 municipal police 3 months).\n",
        k.records,
        k.report_runs,
        if k.real_envelopes { "real" } else { "short" },
        record_env.len(),
        receipt_env.len(),
        l.per_camera,
        l.seg_ms / 1000
    );
    for &backend in &k.backends {
        println!("### {}\n", backend.name());
        let dir = k.dir.join(format!("report-{}", backend.tag()));
        let _ = std::fs::remove_dir_all(&dir);
        // Records with their receipts and indexes take about this much.
        let need = k.records as f64 * (1.9 * record_env.len() as f64 + 900.0);
        let free = free_bytes(&k.dir) as f64;
        if need > 0.8 * free {
            println!(
                "Skipped: about {:.1} GB needed, {:.1} GB free (HQC_ENVELOPES=short needs less).\n",
                need / 1e9,
                free / 1e9
            );
            continue;
        }
        let svc = Service::new(k, &dir, backend, pg, "hq_report", "mqtt://127.0.0.1:1");
        let backfill = match backfill_sql(&svc.db) {
            Ok(b) => b,
            Err(e) => {
                println!("**Not run**: {e}\n");
                fail(format!("report {}: {e}", backend.name()));
                continue;
            }
        };
        fill_and_time(
            k,
            backend,
            &svc,
            &l,
            fleet,
            (&record_env, &receipt_env),
            backfill,
        );
        drop(svc);
        if std::env::var_os("HQC_KEEP").is_none() {
            // Many GB on a shared disk: kept only if asked (HQC_KEEP=1).
            let _ = std::fs::remove_dir_all(&dir);
            if let (Backend::Postgres, Some(pg)) = (backend, pg.as_ref()) {
                pg.psql("postgres", "DROP DATABASE hq_report");
            }
        }
    }
}

/// Fills the service's database, times its report against the anchor,
/// verifies it, then runs the service on it.
fn fill_and_time(
    k: &Knobs,
    backend: Backend,
    svc: &Service,
    l: &Layout,
    fleet: &Fleet,
    (record_env, receipt_env): (&str, &str),
    backfill: Option<String>,
) {
    eprintln!(
        "== report {}: filling {} records",
        backend.name(),
        k.records
    );
    let deferred = Deferred::read(&svc.db);
    let script = svc.dir.join("fill.sql");
    let text = fill_sql(backend, l, record_env, receipt_env, &deferred);
    std::fs::write(&script, text).expect("fill.sql");
    let fill_s = svc.db.run_script(&script);
    let backfill_s = backfill.as_ref().map(|b| {
        eprintln!("== report {}: the backfill of {MIGRATION}", backend.name());
        let script = svc.dir.join("backfill.sql");
        std::fs::write(&script, backfill_script(backend, b, &deferred)).expect("backfill.sql");
        svc.db.run_script(&script)
    });
    let t = Instant::now();
    let mut sql = Sql::open(&svc.db);
    match backend {
        // Back to WAL, as the service keeps it (the fill ran without a journal).
        Backend::Sqlite => {
            sql.lines("PRAGMA journal_mode = WAL;");
        }
        // What autovacuum would have done by now.
        Backend::Postgres => {
            sql.lines("VACUUM ANALYZE;");
        }
    }
    let settle_s = t.elapsed().as_secs_f64();
    let records = sql.int("SELECT COUNT(*) FROM records;");
    let receipts = sql.int("SELECT COUNT(*) FROM receipts;");
    drop(sql);
    let bytes = svc.db.bytes();
    eprintln!("   filled: {records} records, {receipts} receipts, {bytes} bytes");
    let expected = Totals::of_fill(&svc.db);
    // Warm: the anchor once, untimed (the report's first run is timed).
    time_sql(&svc.db, ANCHOR);
    eprintln!("== report {}: timing", backend.name());
    let (times, r) = time_report(svc, k.report_runs);
    let anchor: Vec<f64> = (0..k.report_runs.max(1))
        .map(|_| time_sql(&svc.db, ANCHOR))
        .collect();
    let med = median(&times);
    let got = Totals::of_report(&r);
    println!(
        "{records} records, {receipts} receipts; filled in {fill_s:.1} s ({}), {} in {settle_s:.1} s. \
         Database: {bytes} bytes = **{:.0} bytes per record** ({}; receipts and everything derived \
         included).\n",
        match backfill_s {
            Some(s) => format!("then the backfill of `{MIGRATION}` in {s:.1} s"),
            None => format!("no `{MIGRATION}`: nothing derived to backfill"),
        },
        match backend {
            Backend::Sqlite => "back to WAL",
            Backend::Postgres => "`VACUUM ANALYZE`",
        },
        bytes as f64 / records as f64,
        match backend {
            Backend::Sqlite => "the file and its WAL",
            Backend::Postgres => "`pg_database_size`",
        }
    );
    println!("| figure | runs (s) | median | goal |");
    println!("|---|---|---:|---|");
    let list = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "| `sargs-hq report --format json` | {} | **{med:.2} s** | < 2 s: {} |",
        list(&times),
        met(med < 2.0)
    );
    println!(
        "| anchor: `{ANCHOR}` (one pass over the records) | {} | {:.2} s | ratio report / anchor: {:.1}× |",
        list(&anchor),
        median(&anchor),
        med / median(&anchor)
    );
    let right = verify(got == expected, || {
        format!(
            "report {}: the report counts {got}; the fill holds {expected}",
            backend.name()
        )
    });
    println!(
        "\nTotals: {got}{}. Indexes and triggers of `records` and `receipts` dropped while the fill \
         wrote, made again after it: {}.\n",
        if right {
            " (verified against `records` and `receipts`)".to_owned()
        } else {
            format!("; **expected** from `records` and `receipts`: {expected}")
        },
        if deferred.names().is_empty() {
            "none".to_owned()
        } else {
            deferred.names()
        }
    );
    live::run(k, svc, fleet, expected);
}
