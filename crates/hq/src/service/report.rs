//! The compliance report: for a time range, per agent and retention class,
//! how many records were made and what became of them.
//!
//! Each segment record whose start falls in `[from, to)` is counted once as
//! `recorded` and, by its state at the report's instant, as at most one of:
//! - `on_time`: a verified receipt, deleted within the deadline plus the
//!   deletion bound, or early (disk pressure, erasure);
//! - `late`: a verified receipt past that bound (named, with by how much);
//! - `protected`: past its deadline with no receipt, covered by a hold,
//!   request or restriction an agent applied and has not ended;
//! - `overdue`: past its deadline plus the grace, no receipt, unprotected
//!   (named);
//! - none of these while it is present within its deadline.
//!
//! `gaps` counts gap records; `missing` the holes in a camera's numbering
//! (named `agent/camera/sequence`, counted where the record after the hole
//! starts). The counts are aggregated in the database, so the report reads
//! ten million records without loading them; only the named exceptions are
//! fetched one by one.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::AnyPool;

use sargs_core::command::{parse_payload, Scope};
use sargs_core::seal::sign::Envelope;

use super::commands::protection;
use super::db::{at, ms};

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

/// Makes the report.
pub async fn make(pool: &AnyPool, q: &Query) -> Result<Report, sqlx::Error> {
    let agent = q.agent.clone().unwrap_or_default();
    let mut rows: BTreeMap<Key, Counts> = BTreeMap::new();
    let counted: Vec<(String, String, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT r.agent, r.class,
           SUM(CASE WHEN r.kind = 'segment' THEN 1 ELSE 0 END),
           SUM(CASE WHEN r.kind = 'gap' THEN 1 ELSE 0 END),
           SUM(CASE WHEN r.kind = 'segment' AND c.sequence IS NOT NULL
                 AND (c.reason <> 'retention-expired' OR c.deleted_at_ms <= r.delete_after_ms + $4)
                 THEN 1 ELSE 0 END),
           SUM(CASE WHEN r.kind = 'segment' AND c.sequence IS NOT NULL
                 AND c.reason = 'retention-expired' AND c.deleted_at_ms > r.delete_after_ms + $4
                 THEN 1 ELSE 0 END)
         FROM records r LEFT JOIN receipts c ON c.agent = r.agent AND c.segment_id = r.segment_id
         WHERE r.start_ms >= $1 AND r.start_ms < $2 AND ($3 = '' OR r.agent = $3)
         GROUP BY r.agent, r.class",
    )
    .bind(ms(q.from))
    .bind(ms(q.to))
    .bind(&agent)
    .bind(q.bound_ms)
    .fetch_all(pool)
    .await?;
    for (a, class, recorded, gaps, on_time, late) in counted {
        let c = rows.entry((a, class)).or_default();
        c.recorded = recorded as u64;
        c.gaps = gaps as u64;
        c.on_time = on_time as u64;
        c.late = late as u64;
    }
    let late = named(
        pool,
        q,
        &agent,
        "c.sequence IS NOT NULL AND c.reason = 'retention-expired' AND c.deleted_at_ms > r.delete_after_ms + $4",
        "c.deleted_at_ms - r.delete_after_ms",
    )
    .await?;
    let past = named(
        pool,
        q,
        &agent,
        "c.sequence IS NULL AND r.delete_after_ms + $5 < $6",
        "$6 - r.delete_after_ms",
    )
    .await?;
    let protections = active_protections(pool).await?;
    let (mut protected, mut overdue) = (Vec::new(), Vec::new());
    for (n, camera, start, end) in past {
        let agent_of = n.segment_id.split('/').next().unwrap_or("").to_owned();
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
    for n in &missing {
        let agent_of = n.segment_id.split('/').next().unwrap_or("").to_owned();
        rows.entry((agent_of, n.class.clone())).or_default().missing += 1;
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
        late: late.into_iter().map(|(n, ..)| n).collect(),
        overdue,
        missing,
        protected,
    })
}

type Found = (Named, String, DateTime<Utc>, DateTime<Utc>);

/// Segment records in range matching `cond` (on `r` and its receipt `c`).
async fn named(
    pool: &AnyPool,
    q: &Query,
    agent: &str,
    cond: &str,
    by: &str,
) -> Result<Vec<Found>, sqlx::Error> {
    let sql = format!(
        "SELECT r.segment_id, r.class, r.delete_after_ms, {by}, r.camera, r.start_ms, r.end_ms
         FROM records r LEFT JOIN receipts c ON c.agent = r.agent AND c.segment_id = r.segment_id
         WHERE r.kind = 'segment' AND r.start_ms >= $1 AND r.start_ms < $2
           AND ($3 = '' OR r.agent = $3) AND {cond}
         ORDER BY r.agent, r.camera, r.sequence"
    );
    let rows: Vec<(String, String, i64, i64, String, i64, i64)> =
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(ms(q.from))
            .bind(ms(q.to))
            .bind(agent)
            .bind(q.bound_ms)
            .bind(q.grace_ms)
            .bind(ms(q.now))
            .fetch_all(pool)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(segment_id, class, deadline, by_ms, camera, start, end)| {
            (
                Named {
                    segment_id,
                    class,
                    delete_after: Some(at(deadline)),
                    by_s: Some(by_ms / 1000),
                },
                camera,
                at(start),
                at(end),
            )
        })
        .collect())
}

/// Holes in each camera's numbering, attributed to the range by the start
/// of the record after the hole (a hole before the first record kept, by
/// that record).
async fn holes(pool: &AnyPool, q: &Query, agent: &str) -> Result<Vec<Named>, sqlx::Error> {
    let rows: Vec<(String, String, i64, i64, String)> = sqlx::query_as(
        "SELECT b.agent, b.camera, b.sequence,
           COALESCE((SELECT MAX(a.sequence) FROM records a
                     WHERE a.agent = b.agent AND a.camera = b.camera AND a.sequence < b.sequence), 0),
           b.class
         FROM records b
         WHERE b.start_ms >= $1 AND b.start_ms < $2 AND ($3 = '' OR b.agent = $3)
           AND b.sequence > 1
           AND NOT EXISTS (SELECT 1 FROM records p
                           WHERE p.agent = b.agent AND p.camera = b.camera AND p.sequence = b.sequence - 1)
         ORDER BY b.agent, b.camera, b.sequence",
    )
    .bind(ms(q.from))
    .bind(ms(q.to))
    .bind(agent)
    .fetch_all(pool)
    .await?;
    let mut out = Vec::new();
    for (agent, camera, next, before, class) in rows {
        for seq in before + 1..next {
            out.push(Named {
                segment_id: format!("{agent}/{camera}/{seq}"),
                class: class.clone(),
                delete_after: None,
                by_s: None,
            });
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
