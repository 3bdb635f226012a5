//! The ledger's periodic check: what no single message shows.
//!
//! - `agent.offline`: an enrolled agent silent (no status, telemetry or
//!   event) longer than `offline_after_s`, or whose last status is `offline`
//!   for that long; cleared when it reports again.
//! - `chain.break`: a record whose `prev_manifest_sha256` is not its
//!   predecessor's manifest hash, or a receipt whose `prev_receipt_sha256` is
//!   not its predecessor's; `receipt.mismatch`: a receipt that names another
//!   manifest or ciphertext than the record HQ kept; `object.mismatch`: a
//!   media object in the evidence store, as an agent reported it, whose
//!   SHA-256 is not the one the record's signed manifest names.
//! - `records.overdue` and `records.missing`: per agent, with the count and
//!   the first named (the report names them all), cleared when none is left.
//! - `deletions.late`: per agent and count of late deletions, raised once:
//!   a late deletion stays late, so an operator clears the alarm
//!   (`sargs-hq alarms --clear KEY`) and hears again only of new ones.
//!
//! No check reads every record. The chains and the receipts' match are
//! checked for what arrived since the last check (`received_at`, with a
//! margin, [`MARGIN_MS`]): a link is between two rows, and the pair is
//! looked at once the later of them has arrived, from either side, so a
//! break between two rows that two replicas kept at the same instant
//! without seeing each other is caught too. The overdue, missing and late
//! come from the report, which reads the rollups (`rollup.rs`).

use chrono::{DateTime, Duration, Utc};
use sqlx::{AnyConnection, AnyPool};

use super::alarms;
use super::config::Ledger;
use super::db::ms;
use super::report;

/// Runs every check once.
///
/// Everything is read before the write transaction opens, which then only
/// raises and clears alarms: reading takes no lock (SQLite's WAL,
/// PostgreSQL's snapshots), so however long the reading, the collector is
/// never kept waiting for it.
pub async fn run(pool: &AnyPool, ledger: &Ledger, now: DateTime<Utc>) -> anyhow::Result<()> {
    let quiet = ms(now - Duration::seconds(ledger.offline_after_s as i64));
    let agents: Vec<(String, i64, Option<i64>, Option<i64>)> = sqlx::query_as(
        "SELECT id, online, status_at, last_seen FROM agents WHERE state = 'enrolled'",
    )
    .fetch_all(pool)
    .await?;
    let found = chains(pool).await?;
    let mut tx = super::db::write(pool).await?;
    for (id, online, status_at, last_seen) in &agents {
        let key = format!("agent.offline:{id}");
        let silent = last_seen.is_none_or(|t| t < quiet);
        let gone = *online == 0 && status_at.is_some_and(|t| t < quiet);
        if silent || gone {
            let detail = format!(
                "agent {id} has not reported for {} s",
                ledger.offline_after_s
            );
            alarms::raise(&mut tx, &key, Some(id), "agent.offline", &detail, now).await?;
        } else {
            alarms::clear(&mut tx, &key, now).await?;
        }
    }
    found.write(&mut tx, now).await?;
    tx.commit().await?;

    let all = report::make(
        pool,
        &report::Query {
            from: DateTime::<Utc>::MIN_UTC,
            to: DateTime::<Utc>::MAX_UTC,
            agent: None,
            now,
            bound_ms: ledger.deletion_bound_s as i64 * 1000,
            grace_ms: ledger.grace_hours as i64 * 3_600_000,
        },
    )
    .await?;
    let mut tx = super::db::write(pool).await?;
    for (id, ..) in &agents {
        let late = all
            .late
            .iter()
            .filter(|n| n.segment_id.split('/').next() == Some(id.as_str()))
            .count();
        if late > 0 {
            // Late stays late: one alarm per count, raised once, so that an
            // operator who cleared it hears again only of new ones.
            let key = format!("deletions.late:{id}:{late}");
            let detail =
                format!("{late} deletion(s) past the bound in all (the report names them)");
            alarms::raise_once(&mut tx, &key, Some(id), "deletions.late", &detail, now).await?;
            alarms::supersede(&mut tx, "deletions.late", id, &key, now).await?;
        }
        for (kind, list) in [
            ("records.overdue", &all.overdue),
            ("records.missing", &all.missing),
        ] {
            let mine: Vec<&str> = list
                .iter()
                .filter(|n| n.segment_id.split('/').next() == Some(id.as_str()))
                .map(|n| n.segment_id.as_str())
                .collect();
            let key = format!("{kind}:{id}");
            if let Some(first) = mine.first() {
                let detail = format!("{} record(s), first {first}", mine.len());
                alarms::raise(&mut tx, &key, Some(id), kind, &detail, now).await?;
            } else {
                alarms::clear(&mut tx, &key, now).await?;
            }
        }
    }
    tx.commit().await?;
    Ok(())
}

/// How far before the newest arrival seen by the last check the next one
/// looks again. `received_at` is the instant a collector began the batch's
/// transaction, on its replica's clock; a row becomes visible when that
/// transaction commits. A row the last check could not see yet (its
/// transaction still open, or written by a replica whose clock is behind)
/// has a `received_at` at most the transaction's length plus the clocks'
/// difference before the newest the check saw: a batch commits in well
/// under a minute (SQLite's busy timeout is 10 s), and replicas' clocks
/// agree to a second under NTP. Ten minutes covers both many times over;
/// what it costs is looking at ten minutes of arrivals again (a few
/// thousand rows at a fleet's rate).
pub const MARGIN_MS: i64 = 600_000;

/// `chain.break`, `receipt.mismatch` and `object.mismatch` for the rows that arrived since the
/// last check (less [`MARGIN_MS`]), both sides of each link; then the
/// watermark moves to the newest arrival seen before looking.
async fn chains(pool: &AnyPool) -> Result<Findings, sqlx::Error> {
    let mut found = Findings::default();
    let last: Option<(i64,)> =
        sqlx::query_as("SELECT received_at FROM ledger_checks WHERE what = 'chains'")
            .fetch_optional(pool)
            .await?;
    // The newest arrival now, read before the rows (index-only maxima).
    let newest: (Option<i64>, Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT (SELECT MAX(received_at) FROM records), (SELECT MAX(received_at) FROM receipts),
                (SELECT MAX(received_at) FROM objects)",
    )
    .fetch_one(pool)
    .await?;
    let since = last.map_or(i64::MIN, |(w,)| w.saturating_sub(MARGIN_MS));
    let breaks: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT b.agent, b.camera, b.sequence FROM records b JOIN records a
           ON a.agent = b.agent AND a.camera = b.camera AND a.sequence = b.sequence - 1
         WHERE b.received_at >= $1 AND b.prev_manifest_sha256 <> a.manifest_sha256
         UNION
         SELECT b.agent, b.camera, b.sequence FROM records a JOIN records b
           ON b.agent = a.agent AND b.camera = a.camera AND b.sequence = a.sequence + 1
         WHERE a.received_at >= $1 AND b.prev_manifest_sha256 <> a.manifest_sha256",
    )
    .bind(since)
    .fetch_all(pool)
    .await?;
    for (agent, camera, seq) in breaks {
        let key = format!("chain.break:{agent}/{camera}/{seq}");
        let detail =
            format!("record {agent}/{camera}/{seq} does not name its predecessor's manifest");
        found.alarms.push((key, agent, "chain.break", detail));
    }
    let breaks: Vec<(String, i64)> = sqlx::query_as(
        "SELECT b.agent, b.sequence FROM receipts b JOIN receipts a
           ON a.agent = b.agent AND a.sequence = b.sequence - 1
         WHERE b.received_at >= $1 AND b.prev_receipt_sha256 <> a.payload_sha256
         UNION
         SELECT b.agent, b.sequence FROM receipts a JOIN receipts b
           ON b.agent = a.agent AND b.sequence = a.sequence + 1
         WHERE a.received_at >= $1 AND b.prev_receipt_sha256 <> a.payload_sha256",
    )
    .bind(since)
    .fetch_all(pool)
    .await?;
    for (agent, seq) in breaks {
        let key = format!("chain.break:{agent}/receipts/{seq}");
        let detail = format!("receipt {seq} of {agent} does not name its predecessor");
        found.alarms.push((key, agent, "chain.break", detail));
    }
    let mismatched: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT c.agent, c.segment_id, c.sequence FROM receipts c JOIN records r
           ON r.agent = c.agent AND r.segment_id = c.segment_id
         WHERE c.received_at >= $1 AND (r.manifest_sha256 <> c.manifest_sha256
            OR COALESCE(r.ciphertext_sha256, '') <> c.ciphertext_sha256)
         UNION
         SELECT c.agent, c.segment_id, c.sequence FROM records r JOIN receipts c
           ON c.agent = r.agent AND c.segment_id = r.segment_id
         WHERE r.received_at >= $1 AND (r.manifest_sha256 <> c.manifest_sha256
            OR COALESCE(r.ciphertext_sha256, '') <> c.ciphertext_sha256)",
    )
    .bind(since)
    .fetch_all(pool)
    .await?;
    for (agent, segment, seq) in mismatched {
        let key = format!("receipt.mismatch:{agent}/{seq}");
        let detail = format!("receipt {seq} names another manifest than record {segment}");
        found.alarms.push((key, agent, "receipt.mismatch", detail));
    }
    // The media object an agent reports against the digest the record's
    // signed manifest names, from either side, like the receipts.
    let mismatched: Vec<(String, String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT o.agent, o.segment_id, o.ciphertext_sha256, r.ciphertext_sha256
           FROM objects o JOIN records r
           ON r.agent = o.agent AND r.camera = o.camera AND r.sequence = o.sequence
         WHERE o.received_at >= $1 AND o.media_key IS NOT NULL
           AND COALESCE(o.ciphertext_sha256, '') <> COALESCE(r.ciphertext_sha256, '')
         UNION
         SELECT o.agent, o.segment_id, o.ciphertext_sha256, r.ciphertext_sha256
           FROM records r JOIN objects o
           ON o.agent = r.agent AND o.camera = r.camera AND o.sequence = r.sequence
         WHERE r.received_at >= $1 AND o.media_key IS NOT NULL
           AND COALESCE(o.ciphertext_sha256, '') <> COALESCE(r.ciphertext_sha256, '')",
    )
    .bind(since)
    .fetch_all(pool)
    .await?;
    for (agent, segment, object, manifest) in mismatched {
        let key = format!("object.mismatch:{segment}");
        let detail = format!(
            "the object reported for {segment} has SHA-256 {}, its signed manifest names {}",
            object.as_deref().unwrap_or("none"),
            manifest.as_deref().unwrap_or("none")
        );
        found.alarms.push((key, agent, "object.mismatch", detail));
    }
    let newest = [newest.0, newest.1, newest.2].into_iter().flatten().max();
    found.newest = newest;
    Ok(found)
}

/// What [`chains`] found: alarms `(key, agent, kind, detail)` to raise, and
/// the newest arrival it looked at.
#[derive(Default)]
struct Findings {
    alarms: Vec<(String, String, &'static str, String)>,
    newest: Option<i64>,
}

impl Findings {
    /// Raises the alarms and moves the watermark, in the caller's
    /// transaction.
    async fn write(self, tx: &mut AnyConnection, now: DateTime<Utc>) -> Result<(), sqlx::Error> {
        for (key, agent, kind, detail) in &self.alarms {
            alarms::raise(tx, key, Some(agent), kind, detail, now).await?;
        }
        if let Some(w) = self.newest {
            sqlx::query(
                "INSERT INTO ledger_checks (what, received_at) VALUES ('chains', $1)
                 ON CONFLICT (what) DO UPDATE SET received_at = CASE
                   WHEN excluded.received_at > ledger_checks.received_at THEN excluded.received_at
                   ELSE ledger_checks.received_at END",
            )
            .bind(w)
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }
}
