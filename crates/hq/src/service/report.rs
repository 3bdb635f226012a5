//! The compliance report: for a time range, per agent and retention class,
//! how many records were made and what became of them.
//!
//! Each segment record whose start falls in `[from, to)` is counted once as
//! `recorded` and, by its state at the report's instant, as at most one of:
//! - `on_time`: a verified receipt, deleted within the deadline plus the
//!   deletion bound, or early (disk pressure, erasure, freed after a verified offload);
//! - `late`: a verified receipt past that bound (named, with by how much);
//! - `protected`: past its deadline with no receipt, covered by a hold,
//!   request or restriction an agent applied and has not ended;
//! - `overdue`: past its deadline plus the grace, no receipt, unprotected
//!   (named);
//! - none of these while it is present within its deadline.
//!
//! `gaps` counts gap records; `missing` the holes in a camera's numbering
//! (named `agent/camera/sequence`, counted where the record after the hole
//! starts; past the first thousand numbers of one hole, the rest is named
//! as one range `agent/camera/first-last`). The counts come from the rollups the collector keeps
//! ([`rollup`](super::rollup)): whole days from `ledger_days`, the partial
//! days at the range's edges from the records, the exceptions (late, past
//! the deadline) from indexes of expressions that only they have, the holes from
//! `ledger_holes`. So the report over ten million records reads a few
//! thousand rows, never every record.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::AnyPool;

use sargs_core::command::{parse_payload, Scope};
use sargs_core::seal::sign::Envelope;

use super::commands::protection;
use super::db::{at, ms};
use super::rollup::{day_of, DAY_MS};

/// The report's parameters.
#[derive(Debug, Clone)]
pub struct Query {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub agent: Option<String>,
    pub now: DateTime<Utc>,
    pub bound_ms: i64,
    pub grace_ms: i64,
}

/// One agent's counts for one class.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    pub recorded: u64,
    pub on_time: u64,
    pub late: u64,
    pub overdue: u64,
    pub protected: u64,
    pub gaps: u64,
    pub missing: u64,
}

/// A record named in the report.
#[derive(Debug, Clone, Serialize)]
pub struct Named {
    pub segment_id: String,
    pub class: String,
    pub delete_after: Option<DateTime<Utc>>,
    /// How late the deletion was, or how far past its deadline it is.
    pub by_s: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub agent: String,
    pub class: String,
    #[serde(flatten)]
    pub counts: Counts,
}

/// The report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub made_at: DateTime<Utc>,
    pub totals: Counts,
    pub rows: Vec<Row>,
    pub late: Vec<Named>,
    pub overdue: Vec<Named>,
    pub missing: Vec<Named>,
    pub protected: Vec<Named>,
}

type Key = (String, String);

/// `(agent, class, segments, gaps, deleted)`.
type Counted = (String, String, i64, i64, i64);

/// Makes the report.
///
/// Whole UTC days of `[from, to)` are counted from the rollup `ledger_days`
/// and the partial days at its edges from the records (index
/// `records_start`); the late from `records_late`, the past-deadline from
/// `records_open` and the missing from `ledger_holes`: nothing reads every
/// record ([`rollup`](super::rollup) keeps these).
pub async fn make(pool: &AnyPool, q: &Query) -> Result<Report, sqlx::Error> {
    let agent = q.agent.clone().unwrap_or_default();
    let (from, to) = (ms(q.from), ms(q.to));
    // The first day that starts at or after `from`, and the day `to` falls
    // in: the days between lie whole within the range.
    let first = day_of(from) + i64::from(from.rem_euclid(DAY_MS) != 0);
    let end = day_of(to);
    let mut counted: Vec<Counted> = Vec::new();
    if first < end {
        counted.extend(
            sqlx::query_as::<_, Counted>(
                "SELECT agent, class, CAST(SUM(segments) AS BIGINT), CAST(SUM(gaps) AS BIGINT),
                   CAST(SUM(deleted) AS BIGINT)
                 FROM ledger_days WHERE day >= $1 AND day < $2 AND ($3 = '' OR agent = $3)
                 GROUP BY agent, class",
            )
            .bind(first)
            .bind(end)
            .bind(&agent)
            .fetch_all(pool)
            .await?,
        );
        counted.extend(edge(pool, from, first * DAY_MS, &agent).await?);
        counted.extend(edge(pool, end * DAY_MS, to, &agent).await?);
    } else {
        counted.extend(edge(pool, from, to, &agent).await?);
    }
    let mut rows: BTreeMap<Key, Counts> = BTreeMap::new();
    for (a, class, segments, gaps, deleted) in counted {
        let c = rows.entry((a, class)).or_default();
        c.recorded += segments as u64;
        c.gaps += gaps as u64;
        // Deleted of any reason, less the late below.
        c.on_time += deleted as u64;
    }
    // Late: a receipt at expiry, past the deadline plus the bound.
    let late = named(
        pool,
        q,
        &agent,
        "(CASE WHEN deletion_reason = 'retention-expired' THEN deleted_at_ms - delete_after_ms END) > $4",
        q.bound_ms,
        "deleted_at_ms - delete_after_ms",
    )
    .await?;
    for (_, a, n) in &late {
        let c = rows.entry((a.clone(), n.class.clone())).or_default();
        c.late += 1;
        c.on_time = c.on_time.saturating_sub(1);
    }
    // Past the deadline plus the grace, without a receipt.
    let past = named(
        pool,
        q,
        &agent,
        "(CASE WHEN deleted_at_ms IS NULL AND kind = 'segment' THEN delete_after_ms END) < $4",
        ms(q.now).saturating_sub(q.grace_ms),
        "$5 - delete_after_ms",
    )
    .await?;
    let protections = active_protections(pool).await?;
    let (mut protected, mut overdue) = (Vec::new(), Vec::new());
    for ((camera, start, end), agent_of, n) in past {
        let covered = protections
            .iter()
            .any(|(a, scope)| a == &agent_of && scope.covers(&n.segment_id, &camera, start, end));
        let c = rows.entry((agent_of, n.class.clone())).or_default();
        if covered {
            c.protected += 1;
            protected.push(n);
        } else {
            c.overdue += 1;
            overdue.push(n);
        }
    }
    let missing = holes(pool, q, &agent).await?;
    for (agent_of, n, count) in &missing {
        rows.entry((agent_of.clone(), n.class.clone()))
            .or_default()
            .missing += count;
    }
    let mut totals = Counts::default();
    let rows: Vec<Row> = rows
        .into_iter()
        .map(|((agent, class), counts)| {
            totals.recorded += counts.recorded;
            totals.on_time += counts.on_time;
            totals.late += counts.late;
            totals.overdue += counts.overdue;
            totals.protected += counts.protected;
            totals.gaps += counts.gaps;
            totals.missing += counts.missing;
            Row {
                agent,
                class,
                counts,
            }
        })
        .collect();
    Ok(Report {
        from: q.from,
        to: q.to,
        made_at: q.now,
        totals,
        rows,
        late: late.into_iter().map(|(_, _, n)| n).collect(),
        overdue,
        missing: missing.into_iter().map(|(_, n, _)| n).collect(),
        protected,
    })
}

/// The counts of the records that started in `[from, to)` (at most a day
/// or two at the range's edges), by their index `records_start`.
async fn edge(
    pool: &AnyPool,
    from: i64,
    to: i64,
    agent: &str,
) -> Result<Vec<Counted>, sqlx::Error> {
    if from >= to {
        return Ok(Vec::new());
    }
    sqlx::query_as(
        "SELECT agent, class,
           SUM(CASE WHEN kind = 'segment' THEN 1 ELSE 0 END),
           SUM(CASE WHEN kind = 'gap' THEN 1 ELSE 0 END),
           SUM(CASE WHEN kind = 'segment' AND deleted_at_ms IS NOT NULL THEN 1 ELSE 0 END)
         FROM records WHERE start_ms >= $1 AND start_ms < $2 AND ($3 = '' OR agent = $3)
         GROUP BY agent, class",
    )
    .bind(from)
    .bind(to)
    .bind(agent)
    .fetch_all(pool)
    .await
}

/// The camera, start and end of a named record (what a protection covers).
type Span = (String, DateTime<Utc>, DateTime<Utc>);

/// Segment records that started in range and match `cond`, a condition
/// that one of the exceptions' indexes finds (`records_late`, `records_open`;
/// `$4` is `threshold`, `$5` the report's instant): with their agent and
/// span.
async fn named(
    pool: &AnyPool,
    q: &Query,
    agent: &str,
    cond: &str,
    threshold: i64,
    by: &str,
) -> Result<Vec<(Span, String, Named)>, sqlx::Error> {
    // The expression index finds the rows: `+start_ms` only filters (else
    // SQLite would take `records_start` over the whole range), and the
    // first sort key is an expression (`|| ''`, the same order), else
    // SQLite would walk the primary key to spare the sort of a few rows.
    let sql = format!(
        "SELECT agent, segment_id, class, delete_after_ms, {by}, camera, start_ms, end_ms
         FROM records
         WHERE {cond} AND kind = 'segment' AND +start_ms >= $1 AND +start_ms < $2
           AND ($3 = '' OR agent = $3)
         ORDER BY agent || '', camera, sequence"
    );
    type Columns = (String, String, String, i64, i64, String, i64, i64);
    let rows: Vec<Columns> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(ms(q.from))
        .bind(ms(q.to))
        .bind(agent)
        .bind(threshold)
        .bind(ms(q.now))
        .fetch_all(pool)
        .await?;
    Ok(rows
        .into_iter()
        .map(
            |(agent, segment_id, class, deadline, by_ms, camera, start, end)| {
                (
                    (camera, at(start), at(end)),
                    agent,
                    Named {
                        segment_id,
                        class,
                        delete_after: Some(at(deadline)),
                        by_s: Some(by_ms / 1000),
                    },
                )
            },
        )
        .collect())
}

/// Holes in each camera's numbering (`ledger_holes`), each sequence named
/// with its agent, attributed to the range by the start of the record after
/// the hole (a hole before the first record kept, by that record), with
/// that record's class.
/// Missing numbers named one by one in each hole; the rest of a longer hole
/// is named as a range `agent/camera/first-last`.
const NAMED_PER_HOLE: i64 = 1000;

async fn holes(
    pool: &AnyPool,
    q: &Query,
    agent: &str,
) -> Result<Vec<(String, Named, u64)>, sqlx::Error> {
    type Columns = (String, String, i64, i64, Option<i64>, Option<String>);
    let rows: Vec<Columns> = sqlx::query_as(
        "SELECT h.agent, h.camera, h.first_seq, h.last_seq,
           (SELECT r.start_ms FROM records r
            WHERE r.agent = h.agent AND r.camera = h.camera AND r.sequence = h.last_seq + 1),
           (SELECT r.class FROM records r
            WHERE r.agent = h.agent AND r.camera = h.camera AND r.sequence = h.last_seq + 1)
         FROM ledger_holes h WHERE ($1 = '' OR h.agent = $1)
         ORDER BY h.agent, h.camera, h.first_seq",
    )
    .bind(agent)
    .fetch_all(pool)
    .await?;
    let (from, to) = (ms(q.from), ms(q.to));
    let mut out = Vec::new();
    for (agent, camera, first, last, start, class) in rows {
        let (Some(start), Some(class)) = (start, class) else {
            continue;
        };
        if start < from || start >= to {
            continue;
        }
        let named = |segment_id: String| Named {
            segment_id,
            class: class.clone(),
            delete_after: None,
            by_s: None,
        };
        // Each missing number is named, up to a bound per hole: a signed
        // record with an absurd number must not make a report of billions
        // of lines. Past it, the rest of the hole is one entry, a range.
        let named_last = last.min(first.saturating_add(NAMED_PER_HOLE - 1));
        for seq in first..=named_last {
            out.push((agent.clone(), named(format!("{agent}/{camera}/{seq}")), 1));
        }
        if named_last < last {
            let rest = format!("{agent}/{camera}/{}-{last}", named_last + 1);
            out.push((agent.clone(), named(rest), (last - named_last) as u64));
        }
    }
    Ok(out)
}

/// `(agent, scope)` of every hold, request and restriction an agent
/// applied and has not ended (by a release, close or unrestrict it applied).
pub async fn active_protections(pool: &AnyPool) -> Result<Vec<(String, Scope)>, sqlx::Error> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT r.agent, c.envelope FROM commands c
         JOIN responses r ON r.command_id = c.id AND r.status = 'applied'
         WHERE c.protects IS NOT NULL AND NOT EXISTS (
           SELECT 1 FROM commands e JOIN responses er ON er.command_id = e.id
           WHERE er.status = 'applied' AND er.agent = r.agent AND e.ends = c.protects
             AND e.issued_at >= c.issued_at)",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(agent, envelope)| {
            let env = Envelope::open(envelope.as_bytes(), None).ok()?;
            let c = parse_payload(&env.payload).ok()?;
            let (Some((_, scope)), _) = protection(&c.action) else {
                return None;
            };
            Some((agent, scope.clone()))
        })
        .collect())
}

impl Report {
    /// Markdown, for people.
    pub fn markdown(&self) -> String {
        let from = if self.from == DateTime::<Utc>::MIN_UTC {
            "the first".to_owned()
        } else {
            self.from.to_rfc3339()
        };
        let mut s = format!(
            "# Compliance report\n\nRecords that started from {from} to {}, as of {}.\n\n",
            self.to.to_rfc3339(),
            self.made_at.to_rfc3339()
        );
        s.push_str("| agent | class | recorded | on_time | late | overdue | protected | gaps | missing |\n");
        s.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
        let line = |a: &str, c: &str, n: &Counts| {
            format!(
                "| {a} | {c} | {} | {} | {} | {} | {} | {} | {} |\n",
                n.recorded, n.on_time, n.late, n.overdue, n.protected, n.gaps, n.missing
            )
        };
        for r in &self.rows {
            s.push_str(&line(&r.agent, &r.class, &r.counts));
        }
        s.push_str(&line("**all**", "", &self.totals));
        for (title, list) in [
            ("Deleted late", &self.late),
            ("Overdue", &self.overdue),
            ("Missing", &self.missing),
        ] {
            s.push_str(&format!("\n## {title}: {}\n\n", list.len()));
            for n in list {
                s.push_str(&format!("- {}", n.segment_id));
                if let (Some(d), Some(by)) = (n.delete_after, n.by_s) {
                    s.push_str(&format!(" (deadline {}, by {by} s)", d.to_rfc3339()));
                }
                s.push('\n');
            }
        }
        s
    }

    /// CSV: one line per agent and class, then one per named record.
    pub fn csv(&self) -> String {
        let mut s =
            String::from("agent,class,recorded,on_time,late,overdue,protected,gaps,missing\n");
        for r in &self.rows {
            let n = &r.counts;
            s.push_str(&format!(
                "{},{},{},{},{},{},{},{},{}\n",
                r.agent,
                r.class,
                n.recorded,
                n.on_time,
                n.late,
                n.overdue,
                n.protected,
                n.gaps,
                n.missing
            ));
        }
        s.push_str("\nstate,segment_id,class,delete_after,by_s\n");
        for (state, list) in [
            ("late", &self.late),
            ("overdue", &self.overdue),
            ("missing", &self.missing),
        ] {
            for n in list {
                s.push_str(&format!(
                    "{state},{},{},{},{}\n",
                    n.segment_id,
                    n.class,
                    n.delete_after.map(|d| d.to_rfc3339()).unwrap_or_default(),
                    n.by_s.map(|b| b.to_string()).unwrap_or_default()
                ));
            }
        }
        s
    }
}
