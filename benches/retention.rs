//! The retention index at scale: a store of 1,000,000 segments.
//!
//! ```text
//! cargo bench --bench retention          # RET_SEGMENTS (default 1000000), RET_DIR (default target/tmp/retention-bench)
//! ```
//!
//! Layout: 10 cameras × 100,000 consecutive one-minute segments ending at the
//! build instant `T`: cameras 0–7 are CCTV (30 days), 8–9 municipal police
//! (3 months, hold cap 3 years). 100,000 minutes are ~69 days, so the CCTV
//! segments older than 30 days are already past their deadline at `T`: they
//! are indexed as deleted (as a running agent would have left them), the rest
//! present. The rows are written straight into the index in large
//! transactions (the engine's one-by-one indexing fsyncs each commit); a
//! pristine copy is kept, and every run starts from a copy of it with an
//! empty receipt log. No media files exist: deleting a missing file is allowed.
//!
//! Measured, each as the median (and max) of several runs in one process:
//! - cold start: `Retention::open` on the 1M index;
//! - sweep pass: `Retention::sweep` at `T + k min`, k = 1…, each deleting the
//!   segments that became due in that minute (8: one per CCTV camera) with
//!   signed receipts (fsynced), and a pass with nothing due;
//! - a backlog sweep: one day of due segments at once (deletions per second);
//! - inventory: one police camera over 30 days (43,200 records) as JSON;
//! - index bytes per segment (after a WAL checkpoint).
//!
//! Anchors on the same database: a bare `SELECT COUNT(*)` of the due rows
//! through the deadline index, and a full table scan (`SUM(bytes)`).

// Test and measurement code: a panic here is a failed run with its reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sargs::clock::SyncState;
use sargs::config::Config;
use sargs::events::EventSink;
use sargs::retention::clockguard::Now;
use sargs::retention::{Retention, Setup};
use sargs_core::command::Scope;
use sargs_core::layout::INDEX_FILE;
use sargs_core::retention::index::{Deletion, Index, Row, Writer};
use sargs_core::seal::sign::DeviceKey;

const CAMERAS: usize = 10;
const POLICE_FROM: usize = 8;

struct Quiet;
impl EventSink for Quiet {
    fn emit(&self, _: sargs::events::Event) {}
}

fn env_or<T: std::str::FromStr>(k: &str, d: T) -> T {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn camera(c: usize) -> String {
    format!("cam-{c:02}")
}

fn config(dir: &Path) -> Config {
    let policy = include_str!("../deploy/policy/lv-jekabpils-2022.toml");
    std::fs::write(dir.join("policy.toml"), policy).expect("policy");
    let recipient = age::x25519::Identity::generate().to_public().to_string();
    let mut text = format!(
        "[agent]\nid = \"bench-gw\"\ndata_dir = \"data\"\npolicy = \"policy.toml\"\nmin_free_mb = 1\n\n[seal]\nrecipients = [\"{recipient}\"]\n\n[retention]\nfree_space_floor_mb = 1\ntrust_unsynchronised_clock = true\n\n"
    );
    for c in 0..CAMERAS {
        let (purpose, class) = if c < POLICE_FROM {
            ("property-protection", "cctv")
        } else {
            ("public-order", "municipal-police")
        };
        text += &format!(
            "[[camera]]\nid = \"{}\"\nkind = \"stationary\"\npurpose = \"{purpose}\"\nclass = \"{class}\"\nenabled = false\n[camera.source]\ntype = \"test\"\n\n",
            camera(c)
        );
    }
    Config::from_str(&text, &dir.join("sargs.toml")).expect("config")
}

/// Builds the pristine index once; returns `T`.
fn build(dir: &Path, n: usize, cfg: &Config) -> DateTime<Utc> {
    let marker = dir.join(format!("built-{n}"));
    if let Ok(t) = std::fs::read_to_string(&marker) {
        if let Ok(t) = t.trim().parse::<DateTime<Utc>>() {
            return t;
        }
    }
    let _ = std::fs::remove_file(dir.join("pristine.sqlite"));
    let t_build: DateTime<Utc> =
        DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap_or_else(Utc::now);
    eprintln!("building {n} segments in {} …", dir.display());
    let started = Instant::now();
    let per_cam = n / CAMERAS;
    let mut index = Index::open(&dir.join("pristine.sqlite")).expect("index");
    let mut hash = [0u8; 32];
    for c in 0..CAMERAS {
        let class = cfg.cameras[c].class.clone();
        let tx = index.tx().expect("tx");
        {
            let w = Writer { tx: &tx };
            for i in 0..per_cam {
                let start = t_build - chrono::Duration::minutes((per_cam - i) as i64);
                let delete_after = class.delete_after(start).expect("deadline");
                hash[..8].copy_from_slice(&((c * per_cam + i) as u64).to_le_bytes());
                let deleted = (delete_after <= t_build).then(|| Deletion {
                    at: delete_after,
                    receipt: 0,
                    reason: "retention-expired".into(),
                });
                w.insert(&Row {
                    camera: camera(c),
                    seq: i as u64 + 1,
                    gap: false,
                    start,
                    end: start + chrono::Duration::minutes(1),
                    sealed_at: start + chrono::Duration::minutes(1),
                    class: class.id.clone(),
                    delete_after,
                    cap_at: class.hold_limit(start),
                    bytes: 30 << 20,
                    manifest_sha256: hash,
                    ciphertext_sha256: Some(hash),
                    truncated: false,
                    deleted,
                })
                .expect("insert");
            }
        }
        tx.commit().expect("commit");
    }
    index
        .conn()
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .expect("checkpoint");
    drop(index);
    eprintln!("built in {:.1} s", started.elapsed().as_secs_f64());
    std::fs::write(&marker, t_build.to_rfc3339()).expect("marker");
    t_build
}

/// A fresh working store from the pristine index.
fn reset(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    let _ = std::fs::remove_dir_all(&data);
    for c in 0..CAMERAS {
        std::fs::create_dir_all(data.join("cameras").join(camera(c))).expect("camera dir");
    }
    std::fs::copy(dir.join("pristine.sqlite"), data.join(INDEX_FILE)).expect("copy index");
    data
}

fn setup(cfg: &Config, key: &Arc<DeviceKey>) -> Setup {
    Setup {
        agent_id: cfg.agent.id.clone(),
        data_dir: cfg.agent.data_dir.clone(),
        key: key.clone(),
        policy: cfg.policy.clone(),
        settings: cfg.retention,
        command_keys: Vec::new(),
        events: Arc::new(Quiet),
        free_space: Box::new(|| Ok(u64::MAX / 2)),
        offload_store: false,
    }
}

fn stats(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (ms(v[v.len() / 2]), ms(v[v.len() - 1]))
}

fn time<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let t = Instant::now();
    let out = f();
    (t.elapsed(), out)
}

fn main() {
    let n: usize = env_or("RET_SEGMENTS", 1_000_000);
    let dir = PathBuf::from(env_or("RET_DIR", "target/tmp/retention-bench".to_string()));
    std::fs::create_dir_all(&dir).expect("bench dir");
    let dir = std::path::absolute(&dir).expect("absolute");
    let cfg = config(&dir);
    let key = Arc::new(DeviceKey::load_or_create(&dir.join("device/signing.pk8")).expect("key"));
    let t = build(&dir, n, &cfg);
    let data = reset(&dir);
    let index_path = data.join(INDEX_FILE);
    let index_bytes = std::fs::metadata(&index_path).map(|m| m.len()).unwrap_or(0);

    // Anchors: bare SQL on the same database.
    let idx = Index::open_read_only(&index_path).expect("index");
    let present: i64 = idx
        .conn()
        .query_row(
            "SELECT COUNT(*) FROM records WHERE deleted_ms IS NULL",
            [],
            |r| r.get(0),
        )
        .expect("count");
    let mut due_sql = Vec::new();
    let mut scan_sql = Vec::new();
    for k in 1..=7i64 {
        let at = (t + chrono::Duration::minutes(k)).timestamp_millis();
        let (d, _) = time(|| {
            idx.conn()
                .query_row(
                    "SELECT COUNT(*) FROM records WHERE deleted_ms IS NULL AND gap = 0 AND delete_after_ms <= ?1",
                    [at],
                    |r| r.get::<_, i64>(0),
                )
                .expect("due")
        });
        due_sql.push(d);
        let (d, _) = time(|| {
            idx.conn()
                .query_row("SELECT SUM(bytes) FROM records", [], |r| r.get::<_, i64>(0))
                .expect("scan")
        });
        scan_sql.push(d);
    }
    drop(idx);

    // Cold start.
    let mut opens = Vec::new();
    for _ in 0..5 {
        let (d, r) = time(|| Retention::open(setup(&cfg, &key)).expect("open"));
        opens.push(d);
        drop(r);
    }

    // Sweeps.
    let engine = Retention::open(setup(&cfg, &key)).expect("open");
    let origin = Instant::now();
    let now = |k: i64| Now {
        wall: t + chrono::Duration::minutes(k) + chrono::Duration::seconds(1),
        mono: origin.elapsed() + Duration::from_secs(60 * k as u64),
        sync: SyncState::Synchronised,
    };
    // The first pass also warms the guard (its first observation).
    let first = engine.sweep(now(0)).expect("sweep");
    let mut sweeps = Vec::new();
    let mut deleted = 0;
    for k in 1..=9 {
        let (d, r) = time(|| engine.sweep(now(k)).expect("sweep"));
        assert!(r.paused.is_none(), "{r:?}");
        deleted += r.expired;
        sweeps.push(d);
    }
    let mut idle = Vec::new();
    for _ in 0..5 {
        let (d, r) = time(|| engine.sweep(now(9)).expect("sweep"));
        assert_eq!(r.expired, 0);
        idle.push(d);
    }

    // A backlog: one day of due segments at once (after a long clock pause).
    let (backlog, r) = time(|| engine.sweep(now(9 + 24 * 60)).expect("sweep"));
    let backlog_n = r.expired;

    // Inventory: one police camera over 30 days.
    let scope = Scope::Range {
        cameras: vec![camera(POLICE_FROM)],
        from: t - chrono::Duration::days(30),
        to: t,
    };
    let mut inv = Vec::new();
    let mut records = 0;
    let mut json_bytes = 0;
    for _ in 0..5 {
        let (d, v) = time(|| engine.inventory(&scope, t).expect("inventory"));
        records = v["records"].as_array().map_or(0, Vec::len);
        json_bytes = v.to_string().len();
        inv.push(d);
    }
    drop(engine);

    let (open_med, open_max) = stats(opens);
    let (sw_med, sw_max) = stats(sweeps);
    let (idle_med, idle_max) = stats(idle);
    let (inv_med, inv_max) = stats(inv);
    let (due_med, _) = stats(due_sql);
    let (scan_med, _) = stats(scan_sql);
    let met = |v: f64, goal: f64| if v < goal { "met" } else { "NOT met" };
    println!("# Retention index: {n} segments\n");
    println!(
        "Layout: {CAMERAS} cameras × {} one-minute segments ending at {t} ({} CCTV, {} municipal police); {present} present, {} already deleted at T. First sweep (guard warm-up) expired {}.\n",
        n / CAMERAS,
        POLICE_FROM,
        CAMERAS - POLICE_FROM,
        n as i64 - present,
        first.expired
    );
    println!("Command: `cargo bench --bench retention` (RET_SEGMENTS={n}).\n");
    println!("| figure | median | max | goal | |");
    println!("|---|---:|---:|---|---|");
    println!(
        "| cold start (`Retention::open`) | {open_med:.1} ms | {open_max:.1} ms | < 2 s | {} |",
        met(open_max, 2000.0)
    );
    println!(
        "| sweep pass, {:.0} due per pass (receipts fsynced) | {sw_med:.1} ms | {sw_max:.1} ms | < 1 s | {} |",
        deleted as f64 / 9.0,
        met(sw_max, 1000.0)
    );
    println!(
        "| sweep pass, nothing due | {idle_med:.1} ms | {idle_max:.1} ms | < 1 s | {} |",
        met(idle_max, 1000.0)
    );
    println!(
        "| backlog sweep: one day due at once ({backlog_n} segments, {:.0} deletions/s) | {:.0} ms | | — | |",
        backlog_n as f64 / backlog.as_secs_f64(),
        backlog.as_secs_f64() * 1000.0
    );
    println!(
        "| inventory, one camera × 30 days ({records} records, {:.1} MB JSON) | {inv_med:.1} ms | {inv_max:.1} ms | — | |",
        json_bytes as f64 / 1e6
    );
    println!(
        "| index size | {:.1} MB | | — | {:.0} bytes/segment |",
        index_bytes as f64 / 1e6,
        index_bytes as f64 / n as f64
    );
    println!("| anchor: bare `COUNT(*)` of due rows (deadline index) | {due_med:.2} ms | | | |");
    println!("| anchor: full table scan `SUM(bytes)` | {scan_med:.1} ms | | | |");
    println!(
        "\nA full table scan takes {:.0}× an idle sweep and {:.0}× a cold start: neither touches every row.",
        scan_med / idle_med,
        scan_med / open_med
    );
}
