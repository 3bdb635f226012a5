//! The ledger's periodic check: what no single message shows.
//!
//! - `agent.offline`: an enrolled agent silent (no status, telemetry or
//!   event) longer than `offline_after_s`, or whose last status is `offline`
//!   for that long; cleared when it reports again.
//! - `chain.break`: a record whose `prev_manifest_sha256` is not its
//!   predecessor's manifest hash, or a receipt whose `prev_receipt_sha256` is
//!   not its predecessor's; `receipt.mismatch`: a receipt that names another
//!   manifest or ciphertext than the record HQ kept.
//! - `records.overdue` and `records.missing`: per agent, with the count and
//!   the first named (the report names them all), cleared when none is left.
//! - `deletions.late`: per agent and count of late deletions, raised once:
//!   a late deletion stays late, so an operator clears the alarm
//!   (`sargs-hq alarms --clear KEY`) and hears again only of new ones.
//!
//! Checks run on whole tables with joins, so they also catch what two
//! replicas kept at the same instant without seeing each other.

use chrono::{DateTime, Duration, Utc};
use sqlx::AnyPool;

use super::alarms;
use super::config::Ledger;
use super::db::ms;
use super::report;

/// Runs every check once.
pub async fn run(pool: &AnyPool, ledger: &Ledger, now: DateTime<Utc>) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    let quiet = ms(now - Duration::seconds(ledger.offline_after_s as i64));
    let agents: Vec<(String, i64, Option<i64>, Option<i64>)> = sqlx::query_as(
        "SELECT id, online, status_at, last_seen FROM agents WHERE state = 'enrolled'",
    )
    .fetch_all(&mut *tx)
    .await?;
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
    let breaks: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT b.agent, b.camera, b.sequence FROM records a JOIN records b
           ON a.agent = b.agent AND a.camera = b.camera AND b.sequence = a.sequence + 1
         WHERE b.prev_manifest_sha256 <> a.manifest_sha256",
    )
    .fetch_all(&mut *tx)
    .await?;
    for (agent, camera, seq) in breaks {
        let key = format!("chain.break:{agent}/{camera}/{seq}");
        let detail =
            format!("record {agent}/{camera}/{seq} does not name its predecessor's manifest");
        alarms::raise(&mut tx, &key, Some(&agent), "chain.break", &detail, now).await?;
    }
    let breaks: Vec<(String, i64)> = sqlx::query_as(
        "SELECT b.agent, b.sequence FROM receipts a JOIN receipts b
           ON a.agent = b.agent AND b.sequence = a.sequence + 1
         WHERE b.prev_receipt_sha256 <> a.payload_sha256",
    )
    .fetch_all(&mut *tx)
    .await?;
    for (agent, seq) in breaks {
        let key = format!("chain.break:{agent}/receipts/{seq}");
        let detail = format!("receipt {seq} of {agent} does not name its predecessor");
        alarms::raise(&mut tx, &key, Some(&agent), "chain.break", &detail, now).await?;
    }
    let mismatched: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT c.agent, c.segment_id, c.sequence FROM receipts c JOIN records r
           ON r.agent = c.agent AND r.segment_id = c.segment_id
         WHERE r.manifest_sha256 <> c.manifest_sha256
            OR COALESCE(r.ciphertext_sha256, '') <> c.ciphertext_sha256",
    )
    .fetch_all(&mut *tx)
    .await?;
    for (agent, segment, seq) in mismatched {
        let key = format!("receipt.mismatch:{agent}/{seq}");
        let detail = format!("receipt {seq} names another manifest than record {segment}");
        alarms::raise(
            &mut tx,
            &key,
            Some(&agent),
            "receipt.mismatch",
            &detail,
            now,
        )
        .await?;
    }
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
    let mut tx = pool.begin().await?;
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
