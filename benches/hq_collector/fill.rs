//! The report's database: filled with SQL in bulk ([`fill_sql`]), then what
//! the service derives from records and receipts made by the migration's
//! own backfill ([`backfill_sql`]), and the totals a report of it must give
//! ([`Totals`]).

use std::path::Path;

use chrono::Utc;
use sargs_core::seal::manifest;

use crate::servers::{DbRef, Sql};
use crate::Backend;

/// The migration whose backfill makes the derived tables, from the root of
/// the workspace; its backfill is the lines between these two.
pub const MIGRATION: &str = "crates/hq/migrations/0004_rollups.sql";
const BEGIN: &str = "-- backfill:begin";
const END: &str = "-- backfill:end";

/// Settings for writing in bulk, per session.
const SQLITE_BULK: &str =
    "PRAGMA journal_mode = OFF;\nPRAGMA synchronous = OFF;\nPRAGMA cache_size = -1000000;\n";
const PG_BULK: &str =
    "SET synchronous_commit = off;\nSET maintenance_work_mem = '1GB';\nSET work_mem = '256MB';\n";

/// The fill's layout: 5 agents × 10 cameras, each camera's segments
/// tiling the 200,000 minutes (≈ 139 days) before `t`: one minute long
/// for 10,000,000 records, longer for fewer, so that the same share of
/// records is past its deadline at any size.
pub struct Layout {
    records: u64,
    pub per_camera: u64,
    pub seg_ms: i64,
    /// Period of the exceptions in a camera's numbering.
    every: u64,
    t_ms: i64,
}

pub const AGENTS: u64 = 5;
pub const CAMS: u64 = 10;
const DAY_MS: i64 = 86_400_000;
const SPAN_MS: i64 = 200_000 * 60_000;

impl Layout {
    pub fn new(records: u64) -> Layout {
        let now = Utc::now().timestamp_millis();
        let per_camera = records.div_ceil(AGENTS * CAMS);
        Layout {
            records,
            per_camera,
            seg_ms: SPAN_MS / per_camera as i64,
            every: (per_camera / 2).max(10),
            t_ms: now - now % 60_000,
        }
    }
}

/// The fill, over `i` (0-based record number): agent `a`, camera `c`,
/// sequence `q`. Every `every / 2`th record of a camera is a gap; on camera
/// 0 of each agent, sequence ≡ 7 (mod `every`) is a hole, ≡ 5 overdue (past
/// its deadline, no receipt), ≡ 3 deleted an hour late; every other segment
/// an hour past its deadline has a receipt 30 s after it. `records` and
/// `receipts` only, their secondary indexes dropped meanwhile (made again
/// at the end) and their triggers off (on again after the backfill).
pub fn fill_sql(
    backend: Backend,
    l: &Layout,
    record_env: &str,
    receipt_env: &str,
    deferred: &Deferred,
) -> String {
    let (m, t, d, e, g) = (
        l.per_camera,
        l.t_ms,
        l.seg_ms,
        l.every,
        (l.every / 2).max(1),
    );
    let esc = |s: &str| s.replace('\'', "''");
    let (rec, rct) = (esc(record_env), esc(receipt_env));
    let hex = |e: &str| match backend {
        Backend::Sqlite => format!("printf('%064x', {e})"),
        Backend::Postgres => format!("lpad(to_hex({e}), 64, '0')"),
    };
    let (series, prelude) = match backend {
        Backend::Sqlite => (
            format!(
                "(WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < {}) SELECT i FROM s)",
                l.records - 1
            ),
            SQLITE_BULK,
        ),
        Backend::Postgres => (
            format!(
                "(SELECT i FROM generate_series(0::bigint, {}) AS i)",
                l.records - 1
            ),
            PG_BULK,
        ),
    };
    let prelude = format!("{prelude}{}BEGIN;\n", deferred.off());
    let post = format!("COMMIT;\n{}", deferred.indexes());
    let keep = format!(
        "(CASE WHEN c < 8 THEN {} ELSE {} END)",
        30 * DAY_MS,
        92 * DAY_MS
    );
    // The receipt's number in its agent's chain; chains link their neighbours.
    let rs = format!(
        "(sequence + {m} * (CASE camera WHEN 'cam-0' THEN 0 WHEN 'cam-1' THEN 1 WHEN 'cam-2' THEN 2 \
         WHEN 'cam-3' THEN 3 WHEN 'cam-4' THEN 4 WHEN 'cam-5' THEN 5 WHEN 'cam-6' THEN 6 \
         WHEN 'cam-7' THEN 7 WHEN 'cam-8' THEN 8 ELSE 9 END))"
    );
    format!(
        "{prelude}\
INSERT INTO records (agent, camera, sequence, segment_id, kind, start_ms, end_ms, class, delete_after_ms,
  manifest_sha256, prev_manifest_sha256, ciphertext_sha256, bytes, truncated, gap_reason, envelope, received_at)
SELECT 'gw-' || a, 'cam-' || c, q, 'gw-' || a || '/cam-' || c || '/' || q,
  CASE WHEN q % {g} = 0 THEN 'gap' ELSE 'segment' END,
  {t} - ({m} - q + 1) * {d}, {t} - ({m} - q) * {d},
  CASE WHEN c < 8 THEN 'cctv' ELSE 'municipal-police' END,
  {t} - ({m} - q + 1) * {d} + {keep},
  {mh}, CASE WHEN q = 1 THEN '{genesis}' ELSE {ph} END,
  CASE WHEN q % {g} = 0 THEN NULL ELSE {ch} END,
  CASE WHEN q % {g} = 0 THEN NULL ELSE 30000000 + q % 100000 END,
  0, CASE WHEN q % {g} = 0 THEN 'source-lost' ELSE NULL END,
  '{rec}', {t} - ({m} - q) * {d} + 2000
FROM (SELECT i, i / ({CAMS} * {m}) AS a, (i / {m}) % {CAMS} AS c, i % {m} + 1 AS q FROM {series} AS s) AS g
WHERE NOT (c = 0 AND q % {e} = 7);
INSERT INTO receipts (agent, sequence, segment_id, camera, class, delete_after_ms, deleted_at_ms, reason,
  command_id, manifest_sha256, ciphertext_sha256, payload_sha256, prev_receipt_sha256, envelope, received_at)
SELECT agent, {rs},
  segment_id, camera, class, delete_after_ms,
  delete_after_ms + CASE WHEN camera = 'cam-0' AND sequence % {e} = 3 THEN 3600000 ELSE 30000 END,
  'retention-expired', NULL, manifest_sha256, ciphertext_sha256, {rh}, {rph}, '{rct}',
  delete_after_ms + 40000
FROM records
WHERE kind = 'segment' AND delete_after_ms + 3600000 < {t}
  AND NOT (camera = 'cam-0' AND sequence % {e} = 5);
{post}",
        mh = hex("i * 2 + 1"),
        ph = hex("(i - 1) * 2 + 1"),
        genesis = manifest::GENESIS,
        ch = hex("i + 1000000000000"),
        rh = hex(&format!("{rs} + 2000000000000")),
        rph = hex(&format!("{rs} - 1 + 2000000000000")),
    )
}

/// What of `records` and `receipts` slows a bulk write or would count it
/// twice: their secondary indexes (whatever the migrations made), and their
/// triggers if the service keeps anything up to date by trigger.
pub struct Deferred {
    backend: Backend,
    /// (kind, name, its `CREATE` statement): SQLite's indexes and
    /// triggers, PostgreSQL's indexes that back no constraint.
    objects: Vec<(String, String, String)>,
}

impl Deferred {
    pub fn read(db: &DbRef) -> Deferred {
        let mut sql = Sql::open(db);
        let (backend, rows) = match db {
            DbRef::Sqlite(_) => (
                Backend::Sqlite,
                sql.lines(
                    "SELECT type, name, hex(sql) FROM sqlite_master WHERE type IN ('index', 'trigger') \
                     AND tbl_name IN ('records', 'receipts') AND sql IS NOT NULL ORDER BY type, name;",
                ),
            ),
            DbRef::Postgres { .. } => (
                Backend::Postgres,
                sql.lines(
                    "SELECT 'index', c.relname, encode(convert_to(pg_get_indexdef(i.indexrelid), 'UTF8'), 'hex') \
                     FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
                     WHERE i.indrelid IN ('records'::regclass, 'receipts'::regclass) \
                     AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid) \
                     ORDER BY c.relname;",
                ),
            ),
        };
        let objects = rows
            .iter()
            .map(|r| {
                let f: Vec<&str> = r.split('|').collect();
                assert_eq!(f.len(), 3, "{r:?}");
                (f[0].to_owned(), f[1].to_owned(), unhex(f[2]))
            })
            .collect();
        Deferred { backend, objects }
    }

    /// Dropped, and PostgreSQL's triggers disabled.
    fn off(&self) -> String {
        let mut s: String = self
            .objects
            .iter()
            .map(|(kind, name, _)| format!("DROP {} \"{name}\";\n", kind.to_uppercase()))
            .collect();
        if self.backend == Backend::Postgres {
            s += "ALTER TABLE records DISABLE TRIGGER USER;\nALTER TABLE receipts DISABLE TRIGGER USER;\n";
        }
        s
    }

    /// The indexes made again.
    fn indexes(&self) -> String {
        self.made("index")
    }

    /// The triggers made again or enabled.
    pub fn triggers(&self) -> String {
        match self.backend {
            Backend::Sqlite => self.made("trigger"),
            Backend::Postgres => {
                "ALTER TABLE records ENABLE TRIGGER USER;\nALTER TABLE receipts ENABLE TRIGGER USER;\n"
                    .to_owned()
            }
        }
    }

    fn made(&self, kind: &str) -> String {
        self.objects
            .iter()
            .filter(|(k, ..)| k == kind)
            .map(|(.., create)| format!("{create};\n"))
            .collect()
    }

    /// Names, for the report: "`records_start`, …".
    pub fn names(&self) -> String {
        let v: Vec<String> = self
            .objects
            .iter()
            .map(|(kind, name, _)| format!("{kind} `{name}`"))
            .collect();
        v.join(", ")
    }
}

fn unhex(s: &str) -> String {
    let bytes: Vec<u8> = (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex"))
        .collect();
    String::from_utf8(bytes).expect("utf-8")
}

/// The backfill of [`MIGRATION`] (or of the file `HQC_MIGRATION` names), to
/// run after the fill: the lines between each `-- backfill:begin` and the
/// next `-- backfill:end`, in order. `Ok(None)` without that file (a service
/// from before it), `Err` when it has no such block or the database lacks
/// the migration.
pub fn backfill_sql(db: &DbRef) -> Result<Option<String>, String> {
    let path = match std::env::var_os("HQC_MIGRATION") {
        Some(p) => std::path::PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join(MIGRATION),
    };
    let shown = path.display();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{shown}: {e}")),
    };
    let (mut body, mut blocks, mut open) = (Vec::new(), 0, false);
    for (i, line) in text.lines().enumerate() {
        match (line.trim(), open) {
            (BEGIN, false) => open = true,
            (END, true) => (open, blocks) = (false, blocks + 1),
            (BEGIN | END, _) => {
                return Err(format!("{shown}:{}: `{}` out of turn", i + 1, line.trim()))
            }
            (_, true) => body.push(line),
            (_, false) => {}
        }
    }
    if open {
        return Err(format!("{shown}: a `{BEGIN}` without its `{END}`"));
    }
    if blocks == 0 {
        return Err(format!(
            "{shown} has no lines `{BEGIN}` and `{END}` around its backfill: the bench cannot make \
             the derived tables of its bulk fill (benches/hq_collector/main.rs says what it expects)"
        ));
    }
    let body = body.join("\n");
    let applied = Sql::open(db).int("SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations;");
    if applied < 4 {
        return Err(format!(
            "{MIGRATION} is there but the database has migrations up to {applied} only: the \
             service binary predates it (cargo build --release -p sargs-hq)"
        ));
    }
    Ok(Some(body))
}

/// The script that runs `backfill` after the fill, then puts the triggers
/// back.
pub fn backfill_script(backend: Backend, backfill: &str, deferred: &Deferred) -> String {
    let prelude = match backend {
        Backend::Sqlite => SQLITE_BULK,
        Backend::Postgres => PG_BULK,
    };
    format!(
        "{prelude}BEGIN;\n{backfill}\n;\nCOMMIT;\n{}",
        deferred.triggers()
    )
}

/// A report's totals, `overdue` and `protected` together (the fill has no
/// holds, so it is all overdue).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub recorded: i64,
    pub on_time: i64,
    pub late: i64,
    pub past_deadline: i64,
    pub gaps: i64,
    pub missing: i64,
}

impl Totals {
    /// The totals of `sargs-hq report --format json`.
    pub fn of_report(report: &serde_json::Value) -> Totals {
        let t = &report["totals"];
        let n = |k: &str| t[k].as_i64().unwrap_or_else(|| panic!("totals.{k}: {t}"));
        Totals {
            recorded: n("recorded"),
            on_time: n("on_time"),
            late: n("late"),
            past_deadline: n("overdue") + n("protected"),
            gaps: n("gaps"),
            missing: n("missing"),
        }
    }

    /// What the report must count for the fill, from `records` and
    /// `receipts` themselves (scans, no joins: every receipt is of one
    /// segment and carries its deadline), with the service's defaults
    /// (deletion bound 120 s, grace 24 h).
    pub fn of_fill(db: &DbRef) -> Totals {
        let now = Utc::now().timestamp_millis();
        let (bound, grace) = (120_000, 86_400_000);
        let late =
            format!("reason = 'retention-expired' AND deleted_at_ms > delete_after_ms + {bound}");
        let row = Sql::open(db).one(&format!(
            "SELECT (SELECT COUNT(*) FROM records WHERE kind = 'segment'),
               (SELECT COUNT(*) FROM receipts WHERE NOT ({late})),
               (SELECT COUNT(*) FROM receipts WHERE {late}),
               (SELECT COUNT(*) FROM records WHERE kind = 'segment' AND delete_after_ms + {grace} < {now})
                 - (SELECT COUNT(*) FROM receipts WHERE delete_after_ms + {grace} < {now}),
               (SELECT COUNT(*) FROM records WHERE kind = 'gap'),
               (SELECT COALESCE(SUM(m - n), 0) FROM
                 (SELECT MAX(sequence) AS m, COUNT(*) AS n FROM records GROUP BY agent, camera) AS h);"
        ));
        let v: Vec<i64> = row
            .split('|')
            .map(|x| {
                x.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("totals: {row:?}"))
            })
            .collect();
        assert_eq!(v.len(), 6, "totals: {row:?}");
        Totals {
            recorded: v[0],
            on_time: v[1],
            late: v[2],
            past_deadline: v[3],
            gaps: v[4],
            missing: v[5],
        }
    }
}

impl std::fmt::Display for Totals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "recorded {}, on_time {}, late {}, overdue or protected {}, gaps {}, missing {}",
            self.recorded, self.on_time, self.late, self.past_deadline, self.gaps, self.missing
        )
    }
}
