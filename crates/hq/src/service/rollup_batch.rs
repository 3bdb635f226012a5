//! The rollups of a batch of records or receipts ([`bulk`](super::bulk)),
//! kept with a few statements per batch: the rollups of [`rollup`] with
//! the work of many messages added up first.
//!
//! Invariant: the same rollups as keeping the rows one at a time
//! (`crates/hq/tests/hq_rollups.rs` compares both with a full scan). The common case is
//! batched: days are counted in memory and written once per day; a
//! numbering that only grows (the next records of a camera, the next
//! receipts of an agent) is read once and its new holes and highest number
//! written once. What is rare — a record whose receipt came first, a
//! receipt for a record that already has one, a number that falls into a
//! hole (after a resend) — goes through the per-row functions, which are
//! the reference. The agents' rows are locked when the batch begins
//! ([`Batch::begin`](super::ingest::Batch::begin)), so the numbering read
//! here is not changed by another replica before this transaction commits.

use std::collections::{BTreeMap, HashMap};

use sqlx::{AnyConnection, AssertSqlSafe};

use super::marks::Marks;
use super::rollup::{self, day_of, Chain};
use super::rows::{ReceiptRow, RecordRow};

/// Most values bound in one `IN (…)` list.
const IN_CHUNK: usize = 200;

/// Records just inserted (each exactly once).
pub(super) async fn records_kept(
    tx: &mut AnyConnection,
    rows: &[&RecordRow],
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let marks = Marks::of(tx);
    // Receipts that came before their record (after a resend).
    let mut first: HashMap<(&str, &str), (i64, i64, String)> = HashMap::new();
    for (agent, ids) in by_agent(
        rows.iter()
            .map(|r| (r.agent.as_str(), r.segment_id.as_str())),
    ) {
        for chunk in ids.chunks(IN_CHUNK) {
            let sql = format!(
                "SELECT segment_id, sequence, deleted_at_ms, reason FROM receipts
                 WHERE agent = {} AND segment_id IN ({})",
                marks.one(1),
                marks.list(2, chunk.len())
            );
            let mut q =
                sqlx::query_as::<_, (String, i64, i64, String)>(AssertSqlSafe(sql)).bind(agent);
            for id in chunk {
                q = q.bind(*id);
            }
            for (segment, seq, at, reason) in q.fetch_all(&mut *tx).await? {
                let Some(id) = chunk.iter().find(|i| **i == segment) else {
                    continue;
                };
                let e = first
                    .entry((agent, id))
                    .or_insert((seq, at, reason.clone()));
                if seq < e.0 {
                    *e = (seq, at, reason);
                }
            }
        }
    }
    let mut days: BTreeMap<(&str, &str, i64), [i64; 3]> = BTreeMap::new();
    let mut numbers: BTreeMap<(&str, &str), Vec<i64>> = BTreeMap::new();
    for r in rows {
        let deletion = first.get(&(r.agent.as_str(), r.segment_id.as_str()));
        if let Some((_, at, reason)) = deletion {
            rollup::set_deletion(tx, &r.agent, &r.camera, r.sequence, *at, reason).await?;
        }
        let segment = r.kind == "segment";
        let d = days
            .entry((&r.agent, &r.class, day_of(r.start_ms)))
            .or_default();
        d[0] += i64::from(segment);
        d[1] += i64::from(r.kind == "gap");
        d[2] += i64::from(segment && deletion.is_some());
        numbers
            .entry((&r.agent, &r.camera))
            .or_default()
            .push(r.sequence);
    }
    add_days(tx, &days).await?;
    for ((agent, camera), seqs) in numbers {
        let chain = Chain {
            tops: "ledger_cameras",
            holes: "ledger_holes",
            key: &[("agent", agent), ("camera", camera)],
        };
        kept_in_chain(tx, &chain, seqs).await?;
    }
    Ok(())
}

/// Receipts just inserted (each exactly once).
pub(super) async fn receipts_kept(
    tx: &mut AnyConnection,
    rows: &[&ReceiptRow],
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let marks = Marks::of(tx);
    type Kept = (String, String, i64, String, String, i64, Option<i64>);
    let mut records: HashMap<(String, String), Kept> = HashMap::new();
    for (agent, ids) in by_agent(
        rows.iter()
            .map(|r| (r.agent.as_str(), r.segment_id.as_str())),
    ) {
        for chunk in ids.chunks(IN_CHUNK) {
            let sql = format!(
                "SELECT segment_id, camera, sequence, kind, class, start_ms, deleted_at_ms FROM records
                 WHERE agent = {} AND segment_id IN ({})",
                marks.one(1),
                marks.list(2, chunk.len())
            );
            let mut q = sqlx::query_as::<_, Kept>(AssertSqlSafe(sql)).bind(agent);
            for id in chunk {
                q = q.bind(*id);
            }
            for k in q.fetch_all(&mut *tx).await? {
                records.insert((agent.to_owned(), k.0.clone()), k);
            }
        }
    }
    let mut naming: HashMap<(&str, &str), usize> = HashMap::new();
    for r in rows {
        *naming.entry((&r.agent, &r.segment_id)).or_default() += 1;
    }
    let mut days: BTreeMap<(&str, &str, i64), [i64; 3]> = BTreeMap::new();
    let mut deletions = Vec::new();
    let mut numbers: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for r in rows {
        let key = (r.agent.clone(), r.segment_id.clone());
        let single = naming.get(&(r.agent.as_str(), r.segment_id.as_str())) == Some(&1);
        match records.get(&key) {
            // The rare cases, one by one (the record's deletion and the
            // receipt numbering both): a record deleted already, or named
            // by another receipt of this batch too.
            Some(k) if k.6.is_some() || !single => {
                rollup::receipt_kept(
                    tx,
                    &r.agent,
                    r.sequence,
                    &r.segment_id,
                    r.deleted_at_ms,
                    &r.reason,
                )
                .await?;
                continue;
            }
            Some((_, camera, sequence, kind, class, start_ms, _)) => {
                deletions.push((*r, camera.as_str(), *sequence));
                if kind == "segment" {
                    days.entry((&r.agent, class.as_str(), day_of(*start_ms)))
                        .or_default()[2] += 1;
                }
            }
            None => {}
        }
        numbers.entry(&r.agent).or_default().push(r.sequence);
    }
    set_deletions(tx, &deletions).await?;
    add_days(tx, &days).await?;
    for (agent, seqs) in numbers {
        let chain = Chain {
            tops: "ledger_receipt_chains",
            holes: "ledger_receipt_holes",
            key: &[("agent", agent)],
        };
        kept_in_chain(tx, &chain, seqs).await?;
    }
    Ok(())
}

/// `(agent, value)` pairs grouped by agent.
fn by_agent<'a>(
    pairs: impl Iterator<Item = (&'a str, &'a str)>,
) -> BTreeMap<&'a str, Vec<&'a str>> {
    let mut m: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (a, v) in pairs {
        m.entry(a).or_default().push(v);
    }
    m
}

/// Each record's deletion, from its (only) receipt.
async fn set_deletions(
    tx: &mut AnyConnection,
    deletions: &[(&ReceiptRow, &str, i64)],
) -> Result<(), sqlx::Error> {
    let marks = Marks::of(tx);
    for chunk in deletions.chunks(IN_CHUNK) {
        let values: Vec<String> = (0..chunk.len())
            .map(|i| {
                let n = i * 5;
                format!(
                    "(CAST({} AS TEXT), CAST({} AS TEXT), CAST({} AS BIGINT), CAST({} AS BIGINT), CAST({} AS TEXT))",
                    marks.one(n + 1),
                    marks.one(n + 2),
                    marks.one(n + 3),
                    marks.one(n + 4),
                    marks.one(n + 5)
                )
            })
            .collect();
        let sql = format!(
            "WITH v (agent, camera, sequence, at, reason) AS (VALUES {})
             UPDATE records SET deleted_at_ms = v.at, deletion_reason = v.reason, {} FROM v
             WHERE records.agent = v.agent AND records.camera = v.camera AND records.sequence = v.sequence",
            values.join(", "),
            rollup::CLOCK_FAULT_DEADLINE
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for (r, camera, sequence) in chunk {
            q = q
                .bind(&r.agent)
                .bind(*camera)
                .bind(*sequence)
                .bind(r.deleted_at_ms)
                .bind(&r.reason);
        }
        q.execute(&mut *tx).await?;
    }
    Ok(())
}

/// Adds each day's `[segments, gaps, deleted]`.
async fn add_days(
    tx: &mut AnyConnection,
    days: &BTreeMap<(&str, &str, i64), [i64; 3]>,
) -> Result<(), sqlx::Error> {
    let marks = Marks::of(tx);
    let days: Vec<_> = days.iter().collect();
    for chunk in days.chunks(IN_CHUNK) {
        let values: Vec<String> = (0..chunk.len())
            .map(|i| format!("({})", marks.list(i * 6 + 1, 6)))
            .collect();
        let sql = format!(
            "INSERT INTO ledger_days (agent, class, day, segments, gaps, deleted) VALUES {}
             ON CONFLICT (agent, class, day) DO UPDATE SET
               segments = ledger_days.segments + excluded.segments,
               gaps = ledger_days.gaps + excluded.gaps,
               deleted = ledger_days.deleted + excluded.deleted",
            values.join(", ")
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for ((agent, class, day), [s, g, d]) in chunk {
            q = q
                .bind(*agent)
                .bind(*class)
                .bind(*day)
                .bind(*s)
                .bind(*g)
                .bind(*d);
        }
        q.execute(&mut *tx).await?;
    }
    Ok(())
}

/// New numbers of one chain: when all lie above its highest number (the
/// common case), the holes between them and the new highest are written
/// at once; otherwise each goes through [`rollup::kept_in_chain`].
async fn kept_in_chain(
    tx: &mut AnyConnection,
    chain: &Chain<'_>,
    mut seqs: Vec<i64>,
) -> Result<(), sqlx::Error> {
    seqs.sort_unstable();
    let top = chain.top(tx).await?;
    let highest = top.unwrap_or(0).max(0);
    if seqs.first().is_none_or(|s| *s <= highest) {
        for s in seqs {
            rollup::kept_in_chain(tx, chain, s).await?;
        }
        return Ok(());
    }
    let mut h = highest;
    for s in &seqs {
        if *s > h + 1 {
            chain.add_hole(tx, h + 1, s - 1).await?;
        }
        h = *s;
    }
    chain.raise_top(tx, h).await
}
