//! The ledger's rollups, kept in the collector's transaction: what the
//! compliance report and the periodic check would otherwise compute from
//! every record (migration `0004_rollups.sql` has the tables and fills them
//! for a ledger that predates them).
//!
//! - `records.deleted_at_ms`, `records.deletion_reason`: the record's
//!   deletion, from the receipt that names it (the lowest-numbered one,
//!   should several), NULL while none has arrived; for a record with a
//!   clock fault, `records.delete_after_ms` too: the deadline that receipt
//!   states (the agent's, from a trusted clock) replaces the pending one
//!   ([`CLOCK_FAULT_DEADLINE`]);
//! - `ledger_days`: per agent, class and UTC day of the start
//!   ([`day_of`]), the segment records, the gap records, and the segment
//!   records with a receipt of any reason;
//! - `ledger_cameras` and `ledger_holes`: per camera, the highest sequence
//!   kept and the holes below it, as maximal runs `[first_seq, last_seq]` of
//!   sequences from 1 that no record holds; `ledger_receipt_chains` and
//!   `ledger_receipt_holes`: the same for each agent's receipts.
//!
//! Invariant: after every commit, the rollups equal what a full scan of
//! `records` and `receipts` computes (the migration's statements, run again,
//! would give the same rows; `crates/hq/tests/hq_rollups.rs` checks both).
//! Records and receipts are only ever added, each exactly once (its number
//! is its key), so every change to them is made in the transaction that
//! inserts them, right after the insert: a batch's at once
//! ([`rollup_batch`](super::rollup_batch)), with the functions here for
//! what is rare (a receipt for a record that has one already, a number
//! that falls into a hole).
//!
//! Why incrementally: the report over ten million records must answer in
//! about a second, and a full scan of `records` alone takes longer than
//! that; the periodic check ran whole-table joins every minute, holding a
//! transaction long enough to stall the collector. Kept here, a batch costs
//! a few statements per agent, camera and day, and the report reads days,
//! exceptions (indexes `records_open`, `records_late`) and holes.
//!
//! Concurrency. Two replicas on PostgreSQL (READ COMMITTED) may keep one
//! agent's neighbours at the same time. Each batch locks the rows of the
//! agents it has messages of when it begins (`UPDATE agents SET last_seen =
//! last_seen`, a no-op write that takes PostgreSQL's row lock until commit;
//! [`Batch::begin`](super::ingest::Batch::begin)), before it inserts or
//! reads anything of theirs: one agent's records, receipts and rollups are
//! thus kept by one transaction at a time, and each statement after the
//! lock sees everything the previous holder committed (READ COMMITTED takes
//! a snapshot per statement). Of a record and its receipt kept
//! concurrently, the second transaction sees the other's row and links
//! them, exactly once; hole bookkeeping reads the highest sequence and the
//! holes under the lock, so it never works from a stale view. The counters
//! are nevertheless atomic upserts (`INSERT … ON CONFLICT … DO UPDATE SET x
//! = x + excluded.x`). `crates/hq/tests/hq_rollups.rs` keeps a fleet's
//! messages over six connections at once and finds the rollups a full scan
//! gives. The locks are taken in one order (the agents' ids, ascending) by
//! every batch, so two replicas cannot deadlock on two agents. SQLite has
//! one writer at a time (`BEGIN IMMEDIATE`): there, the transactions are one
//! after the other anyway.

use sqlx::{AnyConnection, AssertSqlSafe};

/// Milliseconds in a day.
pub const DAY_MS: i64 = 86_400_000;

/// The UTC day of an instant in milliseconds (`ledger_days.day`):
/// `floor(ms / DAY_MS)`, also before 1970.
pub fn day_of(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS)
}

/// A receipt was kept (its insert affected one row): the deletion of the
/// record it names, if kept, with that record's day; and the agent's
/// receipt numbering.
pub(super) async fn receipt_kept(
    tx: &mut AnyConnection,
    agent: &str,
    receipt_sequence: i64,
    segment_id: &str,
    deleted_at_ms: i64,
    reason: &str,
) -> Result<(), sqlx::Error> {
    type Kept = (String, i64, String, String, i64, Option<i64>);
    let record: Option<Kept> = sqlx::query_as(
        "SELECT camera, sequence, kind, class, start_ms, deleted_at_ms FROM records
         WHERE agent = $1 AND segment_id = $2",
    )
    .bind(agent)
    .bind(segment_id)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((camera, sequence, kind, class, start_ms, was)) = record {
        // Without a deletion yet, this receipt is the record's only one;
        // otherwise the lowest-numbered receipt stays (or becomes) its own.
        let (at, why) = match was {
            None => (deleted_at_ms, reason.to_owned()),
            Some(_) => first_receipt(tx, agent, segment_id)
                .await?
                .unwrap_or((deleted_at_ms, reason.to_owned())),
        };
        set_deletion(tx, agent, &camera, sequence, at, &why).await?;
        if was.is_none() && kind == "segment" {
            add_to_day(tx, agent, &class, day_of(start_ms), [0, 0, 1]).await?;
        }
    }
    kept_in_chain(
        tx,
        &Chain {
            tops: "ledger_receipt_chains",
            holes: "ledger_receipt_holes",
            key: &[("agent", agent)],
        },
        receipt_sequence,
    )
    .await
}

/// The deletion (instant, reason) of the lowest-numbered receipt naming
/// `segment_id` (`+sequence`: found by `receipts_segment`, then sorted;
/// SQLite would otherwise walk all the agent's receipts in their primary
/// key's order to spare sorting one row).
async fn first_receipt(
    tx: &mut AnyConnection,
    agent: &str,
    segment_id: &str,
) -> Result<Option<(i64, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT deleted_at_ms, reason FROM receipts WHERE agent = $1 AND segment_id = $2
         ORDER BY +sequence LIMIT 1",
    )
    .bind(agent)
    .bind(segment_id)
    .fetch_optional(&mut *tx)
    .await
}

/// The `SET` clause that gives a record with a clock fault the deadline
/// its lowest-numbered receipt states, in the statement that sets its
/// deletion (the receipt is in `receipts` by then).
pub(super) const CLOCK_FAULT_DEADLINE: &str = "delete_after_ms = CASE
    WHEN records.clock_fault IS NULL THEN records.delete_after_ms
    ELSE COALESCE((SELECT r.delete_after_ms FROM receipts r
                   WHERE r.agent = records.agent AND r.segment_id = records.segment_id
                   ORDER BY r.sequence LIMIT 1), records.delete_after_ms) END";

pub(super) async fn set_deletion(
    tx: &mut AnyConnection,
    agent: &str,
    camera: &str,
    sequence: i64,
    at: i64,
    reason: &str,
) -> Result<(), sqlx::Error> {
    let sql = format!(
        "UPDATE records SET deleted_at_ms = $4, deletion_reason = $5, {CLOCK_FAULT_DEADLINE}
         WHERE agent = $1 AND camera = $2 AND sequence = $3"
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(agent)
        .bind(camera)
        .bind(sequence)
        .bind(at)
        .bind(reason)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Adds `[segments, gaps, deleted]` to a day's counts.
async fn add_to_day(
    tx: &mut AnyConnection,
    agent: &str,
    class: &str,
    day: i64,
    [segments, gaps, deleted]: [i64; 3],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO ledger_days (agent, class, day, segments, gaps, deleted)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (agent, class, day) DO UPDATE SET
           segments = ledger_days.segments + excluded.segments,
           gaps = ledger_days.gaps + excluded.gaps,
           deleted = ledger_days.deleted + excluded.deleted",
    )
    .bind(agent)
    .bind(class)
    .bind(day)
    .bind(segments)
    .bind(gaps)
    .bind(deleted)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// One numbering: a camera's records or an agent's receipts. The tables'
/// names and key columns are constants of this module; only values are
/// bound.
pub(super) struct Chain<'a> {
    /// The table of the highest sequence kept (`max_sequence`).
    pub tops: &'static str,
    /// The table of the holes (`first_seq`, `last_seq`).
    pub holes: &'static str,
    /// The key columns and their values.
    pub key: &'a [(&'static str, &'a str)],
}

impl Chain<'_> {
    /// The highest sequence kept, if any.
    pub(super) async fn top(&self, tx: &mut AnyConnection) -> Result<Option<i64>, sqlx::Error> {
        let sql = format!(
            "SELECT max_sequence FROM {} WHERE {}",
            self.tops,
            self.matches()
        );
        Ok(self.fetch::<(i64,)>(tx, sql, &[]).await?.map(|(t,)| t))
    }

    /// A new hole `[first, last]`.
    pub(super) async fn add_hole(
        &self,
        tx: &mut AnyConnection,
        first: i64,
        last: i64,
    ) -> Result<(), sqlx::Error> {
        let sql = format!(
            "INSERT INTO {} ({}, first_seq, last_seq) VALUES ({})",
            self.holes,
            self.columns(),
            self.placeholders(2)
        );
        self.run(tx, sql, &[first, last]).await
    }

    /// The highest sequence is at least `sequence`.
    pub(super) async fn raise_top(
        &self,
        tx: &mut AnyConnection,
        sequence: i64,
    ) -> Result<(), sqlx::Error> {
        let (tops, cols) = (self.tops, self.columns());
        let sql = format!(
            "INSERT INTO {tops} ({cols}, max_sequence) VALUES ({})
             ON CONFLICT ({cols}) DO UPDATE SET max_sequence = CASE
               WHEN excluded.max_sequence > {tops}.max_sequence THEN excluded.max_sequence
               ELSE {tops}.max_sequence END",
            self.placeholders(1)
        );
        self.run(tx, sql, &[sequence]).await
    }

    /// `a, b`: the key columns.
    fn columns(&self) -> String {
        let names: Vec<&str> = self.key.iter().map(|(c, _)| *c).collect();
        names.join(", ")
    }

    /// `a = $1 AND b = $2`.
    fn matches(&self) -> String {
        let terms: Vec<String> = (self.key.iter().enumerate())
            .map(|(i, (c, _))| format!("{c} = ${}", i + 1))
            .collect();
        terms.join(" AND ")
    }

    /// `$1, $2, …` for the key and then `extra` more parameters.
    fn placeholders(&self, extra: usize) -> String {
        let all: Vec<String> = (1..=self.key.len() + extra)
            .map(|i| format!("${i}"))
            .collect();
        all.join(", ")
    }

    /// The number of the first parameter after the key.
    fn next(&self) -> usize {
        self.key.len() + 1
    }

    /// Runs `sql` with the key bound first, then `values`.
    async fn run(
        &self,
        tx: &mut AnyConnection,
        sql: String,
        values: &[i64],
    ) -> Result<(), sqlx::Error> {
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for (_, v) in self.key {
            q = q.bind(*v);
        }
        for v in values {
            q = q.bind(*v);
        }
        q.execute(&mut *tx).await?;
        Ok(())
    }

    /// Reads one row with the key bound first, then `values`.
    async fn fetch<T>(
        &self,
        tx: &mut AnyConnection,
        sql: String,
        values: &[i64],
    ) -> Result<Option<T>, sqlx::Error>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> + Send + Unpin,
    {
        let mut q = sqlx::query_as(AssertSqlSafe(sql));
        for (_, v) in self.key {
            q = q.bind(*v);
        }
        for v in values {
            q = q.bind(*v);
        }
        q.fetch_optional(&mut *tx).await
    }
}

/// `sequence` was kept in `chain`: a number past the highest opens the
/// hole between them (if any); one below it fills part of the hole it falls
/// in, which shrinks, splits or goes.
pub(super) async fn kept_in_chain(
    tx: &mut AnyConnection,
    chain: &Chain<'_>,
    sequence: i64,
) -> Result<(), sqlx::Error> {
    let (holes, key, n) = (chain.holes, chain.matches(), chain.next());
    let top = chain.top(tx).await?;
    // Holes are of sequences from 1 (the migration's backfill says the same).
    let highest = top.unwrap_or(0).max(0);
    if sequence > highest {
        if sequence > highest + 1 {
            chain.add_hole(tx, highest + 1, sequence - 1).await?;
        }
    } else if sequence >= 1 {
        let sql = format!(
            "SELECT first_seq, last_seq FROM {holes} WHERE {key} AND first_seq <= ${n}
             ORDER BY first_seq DESC LIMIT 1"
        );
        let hole: Option<(i64, i64)> = chain.fetch(tx, sql, &[sequence]).await?;
        if let Some((first, last)) = hole.filter(|(_, last)| *last >= sequence) {
            let this = format!("{key} AND first_seq = ${n}");
            let next = n + 1;
            if first == sequence && last == sequence {
                let sql = format!("DELETE FROM {holes} WHERE {this}");
                chain.run(tx, sql, &[first]).await?;
            } else if first == sequence {
                let sql = format!("UPDATE {holes} SET first_seq = ${next} WHERE {this}");
                chain.run(tx, sql, &[first, sequence + 1]).await?;
            } else {
                let sql = format!("UPDATE {holes} SET last_seq = ${next} WHERE {this}");
                chain.run(tx, sql, &[first, sequence - 1]).await?;
                if last > sequence {
                    chain.add_hole(tx, sequence + 1, last).await?;
                }
            }
        }
    }
    if top.is_none_or(|t| sequence > t) {
        chain.raise_top(tx, sequence).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::day_of;

    #[test]
    fn days_are_floored_also_before_1970() {
        assert_eq!(day_of(0), 0);
        assert_eq!(day_of(86_399_999), 0);
        assert_eq!(day_of(86_400_000), 1);
        assert_eq!(day_of(-1), -1);
        assert_eq!(day_of(-86_400_000), -1);
        assert_eq!(day_of(-86_400_001), -2);
    }
}
