//! The report as it is defined, computed from every row: what the
//! rollups must give.

use std::collections::BTreeMap;

use sargs_hq::service::db::Db;
use sargs_hq::service::report::{Counts, Named, Report, Row};

use super::fleet::{t, BOUND, GRACE, NOW};

/// `(agent, camera, sequence, segment_id, kind, start_ms, class,
/// delete_after_ms, clock_fault)`.
pub(super) type RecordRow = (
    String,
    String,
    i64,
    String,
    String,
    i64,
    String,
    i64,
    Option<String>,
);
/// `(agent, sequence, segment_id, deleted_at_ms, reason, delete_after_ms)`.
pub(super) type ReceiptRow = (String, i64, String, i64, String, i64);

/// A flagged record's deadline until a receipt states the agent's.
const PENDING_MS: i64 = 253_402_300_799_000;

/// The raw rows: records, and the receipts.
pub(super) async fn raw(db: &Db) -> (Vec<RecordRow>, Vec<ReceiptRow>) {
    let records = sqlx::query_as("SELECT agent, camera, sequence, segment_id, kind, start_ms, class, delete_after_ms, clock_fault FROM records")
        .fetch_all(&db.pool).await.expect("records");
    let receipts = sqlx::query_as(
        "SELECT agent, sequence, segment_id, deleted_at_ms, reason, delete_after_ms FROM receipts",
    )
    .fetch_all(&db.pool)
    .await
    .expect("receipts");
    (records, receipts)
}

/// The report computed from every row, as the report defines it.
pub(super) fn brute_force(
    records: &[RecordRow],
    receipts: &[ReceiptRow],
    from: i64,
    to: i64,
    agent: Option<&str>,
) -> Report {
    // Each record's deletion: its lowest-numbered receipt.
    let mut deletion: BTreeMap<(&str, &str), (i64, i64, &str, i64)> = BTreeMap::new();
    for (a, number, seg, at, why, stated) in receipts {
        let e = deletion
            .entry((a, seg))
            .or_insert((*number, *at, why, *stated));
        if *number < e.0 {
            *e = (*number, *at, why, *stated);
        }
    }
    let wanted = |a: &str, start: i64| start >= from && start < to && agent.is_none_or(|x| x == a);
    let mut sorted: Vec<&RecordRow> = records.iter().collect();
    sorted.sort_by(|x, y| (&x.0, &x.1, x.2).cmp(&(&y.0, &y.1, y.2)));
    let mut rows: BTreeMap<(String, String), Counts> = BTreeMap::new();
    let (mut late, mut overdue, mut missing) = (Vec::new(), Vec::new(), Vec::new());
    let named = |seg: &str, class: &str, deadline: i64, by: i64| Named {
        segment_id: seg.into(),
        class: class.into(),
        delete_after: Some(t(deadline)),
        by_s: Some(by / 1000),
    };
    for (i, (a, cam, seq, seg, kind, start, class, deadline, fault)) in
        sorted.iter().map(|r| (*r).clone()).enumerate()
    {
        // A record with a clock fault is judged by the deadline its receipt
        // states (the agent's), and is never overdue before one comes.
        let deadline = match (fault, deletion.get(&(a.as_str(), seg.as_str()))) {
            (None, _) => deadline,
            (Some(_), Some(d)) => d.3,
            (Some(_), None) => PENDING_MS,
        };
        if !wanted(&a, start) {
            continue;
        }
        let c = rows.entry((a.clone(), class.clone())).or_default();
        // The numbers missing before this record.
        let before = match i.checked_sub(1).map(|j| sorted[j]) {
            Some(p) if p.0 == a && p.1 == cam => p.2,
            _ => 0,
        };
        for s in (before + 1).max(1)..seq {
            c.missing += 1;
            missing.push(Named {
                segment_id: format!("{a}/{cam}/{s}"),
                class: class.clone(),
                delete_after: None,
                by_s: None,
            });
        }
        if kind == "gap" {
            c.gaps += 1;
            continue;
        }
        c.recorded += 1;
        match deletion.get(&(a.as_str(), seg.as_str())) {
            Some((_, at, why, _)) if *why == "retention-expired" && at - deadline > BOUND => {
                c.late += 1;
                late.push(named(&seg, &class, deadline, at - deadline));
            }
            Some(_) => c.on_time += 1,
            None if deadline < NOW - GRACE => {
                c.overdue += 1;
                overdue.push(named(&seg, &class, deadline, NOW - deadline));
            }
            None => {}
        }
    }
    let mut totals = Counts::default();
    let rows = rows
        .into_iter()
        .map(|((agent, class), counts)| {
            for (sum, n) in [
                (&mut totals.recorded, counts.recorded),
                (&mut totals.on_time, counts.on_time),
                (&mut totals.late, counts.late),
                (&mut totals.overdue, counts.overdue),
                (&mut totals.gaps, counts.gaps),
                (&mut totals.missing, counts.missing),
            ] {
                *sum += n;
            }
            Row {
                agent,
                class,
                counts,
            }
        })
        .collect();
    Report {
        from: t(from),
        to: t(to),
        made_at: t(NOW),
        totals,
        rows,
        late,
        overdue,
        missing,
        protected: Vec::new(),
    }
}
