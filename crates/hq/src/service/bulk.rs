//! Records and receipts kept a batch at a time: the bulk of what a fleet
//! publishes (a `segment.sealed` and, in steady state, a `segment.deleted`
//! per segment) written with one statement of each kind per batch instead
//! of several per message.
//!
//! [`Batch`](super::ingest::Batch) checks each record or receipt as it
//! comes (enrolment, key, signature, agent) and sets it aside here; before
//! any other kind of message, and at the batch's end, [`flush`] writes what
//! was set aside: the records in one multi-row `INSERT … ON CONFLICT DO
//! NOTHING RETURNING`, then the receipts likewise, the rollups of both
//! ([`rollup`](super::rollup), batched), and the messages. What the insert
//! did not return took a number already kept: the same record again (a
//! duplicate) or another one (quarantined, `conflict`), decided one by one
//! as before.
//!
//! Invariants: a record or receipt is kept only from an envelope that
//! verified against the agent's enrolled device key and names that agent
//! (checked before it is set aside); its number is its key, so the same
//! one again is a duplicate and another one under that number is refused
//! (`conflict`); the envelope is stored as received, so that anyone can
//! verify it again. The ledger after a flush is the ledger the same messages
//! would have made one at a time, in order. Records go before receipts;
//! the rollups do not depend on the order in which a record and its
//! receipt arrive (`rollup.rs`), so a flush that writes all records first
//! reaches the same state as one message after the other.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::{AnyConnection, AssertSqlSafe};

use super::db::ms;
use super::marks::Marks;
use super::message::{Outcome, Topic};
use super::quarantine::quarantine;
use super::refusal::refuse;
use super::rollup_batch;
use super::rows::{ReceiptRow, RecordRow};

/// Rows per multi-row statement (18 values each at most: far below both
/// databases' limits on bound values).
const ROWS: usize = 200;

/// The message a record or receipt came in, for `messages` (or the
/// quarantine, should its number be taken by another).
pub(super) struct MessageRow {
    pub id: String,
    pub topic: String,
    pub payload: Vec<u8>,
    pub agent: String,
    pub kind: Topic,
    pub event: Option<String>,
    pub at: Option<i64>,
    /// What `messages.payload` keeps: the event without its envelope, which
    /// the record's or receipt's row keeps.
    pub stored: String,
}

/// What is set aside.
pub(super) enum Row {
    Record(RecordRow),
    Receipt(ReceiptRow),
}

/// A record or receipt set aside, with its place in the batch.
pub(super) struct Pending {
    pub slot: usize,
    pub message: MessageRow,
    pub row: Row,
}

/// What became of a message set aside: its slot, outcome, and agent (heard
/// from unless quarantined).
pub(super) type Done = (usize, Outcome, String);

/// Writes what was set aside.
pub(super) async fn flush(
    tx: &mut AnyConnection,
    pending: Vec<Pending>,
    now: DateTime<Utc>,
) -> Result<Vec<Done>, sqlx::Error> {
    let (records, receipts): (Vec<Pending>, Vec<Pending>) = pending
        .into_iter()
        .partition(|p| matches!(p.row, Row::Record(_)));
    let mut done = Vec::new();
    let mut kept = Vec::new();
    let kept_records = insert_records(tx, &records, now).await?;
    let mut rows = Vec::new();
    for p in &records {
        let Row::Record(r) = &p.row else { continue };
        if kept_records.contains(&(r.agent.clone(), r.camera.clone(), r.sequence)) {
            rows.push(r);
            done.push((p.slot, Outcome::Kept, r.agent.clone()));
            kept.push(&p.message);
            continue;
        }
        let found: Option<(String,)> = sqlx::query_as(
            "SELECT manifest_sha256 FROM records WHERE agent = $1 AND (segment_id = $2 OR (camera = $3 AND sequence = $4))",
        )
        .bind(&r.agent)
        .bind(&r.segment_id)
        .bind(&r.camera)
        .bind(r.sequence)
        .fetch_optional(&mut *tx)
        .await?;
        let what = || format!("record {}", r.segment_id);
        settled(tx, p, found, &r.sha, what, now, &mut done, &mut kept).await?;
    }
    rollup_batch::records_kept(tx, &rows).await?;
    let kept_receipts = insert_receipts(tx, &receipts, now).await?;
    let mut rows = Vec::new();
    for p in &receipts {
        let Row::Receipt(r) = &p.row else { continue };
        if kept_receipts.contains(&(r.agent.clone(), r.sequence)) {
            rows.push(r);
            done.push((p.slot, Outcome::Kept, r.agent.clone()));
            kept.push(&p.message);
            continue;
        }
        let found: Option<(String,)> = sqlx::query_as(
            "SELECT payload_sha256 FROM receipts WHERE agent = $1 AND sequence = $2",
        )
        .bind(&r.agent)
        .bind(r.sequence)
        .fetch_optional(&mut *tx)
        .await?;
        let what = || format!("receipt {}", r.sequence);
        settled(tx, p, found, &r.sha, what, now, &mut done, &mut kept).await?;
    }
    rollup_batch::receipts_kept(tx, &rows).await?;
    insert_messages(tx, &kept, now).await?;
    Ok(done)
}

/// A record or receipt whose number was taken: by the same one (a
/// duplicate, its message kept) or by another (quarantined).
#[allow(clippy::too_many_arguments)]
async fn settled<'a>(
    tx: &mut AnyConnection,
    p: &'a Pending,
    found: Option<(String,)>,
    sha: &str,
    what: impl FnOnce() -> String,
    now: DateTime<Utc>,
    done: &mut Vec<Done>,
    kept: &mut Vec<&'a MessageRow>,
) -> Result<(), sqlx::Error> {
    let m = &p.message;
    match found {
        Some((s,)) if s == sha => {
            done.push((p.slot, Outcome::Duplicate, m.agent.clone()));
            kept.push(m);
        }
        _ => {
            let r = refuse(
                "conflict",
                format!(
                    "{} differs from the one already kept under that number",
                    what()
                ),
            );
            quarantine(tx, &m.id, &m.topic, Some(&m.agent), &r, &m.payload, now).await?;
            let outcome = Outcome::Quarantined {
                code: r.code,
                reason: r.reason,
            };
            // Not heard from: what it sent was not kept.
            done.push((p.slot, outcome, String::new()));
        }
    }
    Ok(())
}

/// Inserts the records; the keys of those inserted.
async fn insert_records(
    tx: &mut AnyConnection,
    records: &[Pending],
    now: DateTime<Utc>,
) -> Result<HashSet<(String, String, i64)>, sqlx::Error> {
    let rows: Vec<&RecordRow> = records
        .iter()
        .filter_map(|p| match &p.row {
            Row::Record(r) => Some(r),
            Row::Receipt(_) => None,
        })
        .collect();
    let marks = Marks::of(tx);
    let mut inserted = HashSet::new();
    for chunk in rows.chunks(ROWS) {
        let sql = format!(
            "INSERT INTO records (agent, camera, sequence, segment_id, kind, start_ms, end_ms, class,
                delete_after_ms, manifest_sha256, prev_manifest_sha256, ciphertext_sha256, bytes,
                truncated, gap_reason, envelope, received_at, clock_fault)
             VALUES {} ON CONFLICT DO NOTHING RETURNING agent, camera, sequence",
            marks.tuples(1, chunk.len(), 18)
        );
        let mut q = sqlx::query_as::<_, (String, String, i64)>(AssertSqlSafe(sql));
        for r in chunk {
            q = q
                .bind(&r.agent)
                .bind(&r.camera)
                .bind(r.sequence)
                .bind(&r.segment_id)
                .bind(r.kind)
                .bind(r.start_ms)
                .bind(r.end_ms)
                .bind(&r.class)
                .bind(r.delete_after_ms)
                .bind(&r.sha)
                .bind(&r.prev)
                .bind(r.ciphertext_sha256.as_deref())
                .bind(r.bytes)
                .bind(r.truncated)
                .bind(r.gap_reason.as_deref())
                .bind(&r.envelope)
                .bind(ms(now))
                .bind(r.clock_fault);
        }
        inserted.extend(q.fetch_all(&mut *tx).await?);
    }
    Ok(inserted)
}

/// Inserts the receipts; the keys of those inserted.
async fn insert_receipts(
    tx: &mut AnyConnection,
    receipts: &[Pending],
    now: DateTime<Utc>,
) -> Result<HashSet<(String, i64)>, sqlx::Error> {
    let rows: Vec<&ReceiptRow> = receipts
        .iter()
        .filter_map(|p| match &p.row {
            Row::Receipt(r) => Some(r),
            Row::Record(_) => None,
        })
        .collect();
    let marks = Marks::of(tx);
    let mut inserted = HashSet::new();
    for chunk in rows.chunks(ROWS) {
        let sql = format!(
            "INSERT INTO receipts (agent, sequence, segment_id, camera, class, delete_after_ms,
                deleted_at_ms, reason, command_id, manifest_sha256, ciphertext_sha256,
                payload_sha256, prev_receipt_sha256, envelope, received_at)
             VALUES {} ON CONFLICT DO NOTHING RETURNING agent, sequence",
            marks.tuples(1, chunk.len(), 15)
        );
        let mut q = sqlx::query_as::<_, (String, i64)>(AssertSqlSafe(sql));
        for r in chunk {
            q = q
                .bind(&r.agent)
                .bind(r.sequence)
                .bind(&r.segment_id)
                .bind(&r.camera)
                .bind(&r.class)
                .bind(r.delete_after_ms)
                .bind(r.deleted_at_ms)
                .bind(&r.reason)
                .bind(r.command_id.as_deref())
                .bind(&r.manifest_sha256)
                .bind(&r.ciphertext_sha256)
                .bind(&r.sha)
                .bind(&r.prev)
                .bind(&r.envelope)
                .bind(ms(now));
        }
        inserted.extend(q.fetch_all(&mut *tx).await?);
    }
    Ok(inserted)
}

async fn insert_messages(
    tx: &mut AnyConnection,
    kept: &[&MessageRow],
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let marks = Marks::of(tx);
    for chunk in kept.chunks(ROWS) {
        let sql = format!(
            "INSERT INTO messages (id, agent, topic_kind, event, at, received_at, payload)
             VALUES {} ON CONFLICT (id) DO NOTHING",
            marks.tuples(1, chunk.len(), 7)
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for m in chunk {
            q = q
                .bind(&m.id)
                .bind(&m.agent)
                .bind(m.kind.as_str())
                .bind(m.event.as_deref())
                .bind(m.at)
                .bind(ms(now))
                .bind(&m.stored);
        }
        q.execute(&mut *tx).await?;
    }
    Ok(())
}
