//! `sargs status`: what the store holds against the policy, from the index.
//!
//! Read-only: works beside a running agent (SQLite WAL readers never block
//! the writer) and reports what the last sweep found.
//!
//! A record sealed with a clock fault has no deadline until a sweep that
//! trusts the clock gives it one (it is indexed with the sentinel
//! [`pending_deadline`]): the status counts such records as pending and
//! never shows the sentinel as a date — not as the next deletion, not in
//! the text, not in the JSON.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rusqlite::OptionalExtension;
use serde::{Deserialize, Serialize};

use super::sweep::{pending_deadline, SweepReport};
use super::{Engine, Retention, RetentionError};
use sargs_core::policy::Policy;
use sargs_core::retention::index::{from_ms, ms, Index};

/// Per retention class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassStatus {
    pub class: String,
    /// The class's period as the policy states it (`30 days`, `3 months`).
    pub keep: Option<String>,
    pub segments: u64,
    pub bytes: u64,
    pub oldest_start: Option<DateTime<Utc>>,
    /// Age of the oldest segment, whole days, beside the class's period.
    pub oldest_age_days: Option<i64>,
    /// Present segments past their deadline (kept by a hold, a request, a
    /// restriction, or a paused clock).
    pub past_deadline: u64,
}

/// The whole status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub at: DateTime<Utc>,
    pub classes: Vec<ClassStatus>,
    /// Deleted so far, by reason; each has a receipt.
    pub deleted: BTreeMap<String, u64>,
    pub receipts: u64,
    pub holds_active: u64,
    pub holds: Vec<String>,
    pub requests_open: u64,
    pub restrictions_active: u64,
    /// The earliest deadline of a present segment (pending ones aside).
    pub next_deletion: Option<DateTime<Utc>>,
    /// Present segments sealed with a clock fault whose deadline is pending
    /// until the clock is trusted (the first trusted sweep counts it).
    #[serde(default)]
    pub deadline_pending: u64,
    pub last_sweep: Option<SweepReport>,
}

impl Retention {
    pub fn status(&self, now: DateTime<Utc>) -> Result<Status, RetentionError> {
        self.run(|e| e.status(now))
    }

    /// [`Retention::status`], or `None` at once while the engine is busy
    /// (its commit may be waiting on a stalled disk): for telemetry, which
    /// runs on the HQ link's thread and must not wait on the disk.
    pub fn try_status(&self, now: DateTime<Utc>) -> Option<Result<Status, RetentionError>> {
        let e = match self.inner.try_lock() {
            Ok(e) => e,
            Err(std::sync::TryLockError::WouldBlock) => return None,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        };
        Some(e.status(now))
    }

    /// Which records `scope` covers and their state (the `inventory` answer).
    pub fn inventory(
        &self,
        scope: &sargs_core::command::Scope,
        now: DateTime<Utc>,
    ) -> Result<serde_json::Value, RetentionError> {
        self.run(|e| e.inventory(scope, now))
    }
}

impl Engine {
    pub(crate) fn status(&self, now: DateTime<Utc>) -> Result<Status, RetentionError> {
        status(&self.index, &self.policy, now).map_err(self.db_err())
    }
}

/// Computes the status from an index (the engine's or a read-only one).
pub fn status(index: &Index, policy: &Policy, now: DateTime<Utc>) -> rusqlite::Result<Status> {
    let c = index.conn();
    let t = ms(now);
    let pending = ms(pending_deadline());
    let mut classes = Vec::new();
    {
        let mut stmt = c.prepare(
            "SELECT class, COUNT(*), COALESCE(SUM(bytes), 0), MIN(start_ms), \
             SUM(CASE WHEN delete_after_ms <= ?1 THEN 1 ELSE 0 END) \
             FROM records WHERE gap = 0 AND deleted_ms IS NULL GROUP BY class ORDER BY class",
        )?;
        let rows = stmt.query_map([t], |r| {
            let oldest: Option<i64> = r.get(3)?;
            let class: String = r.get(0)?;
            Ok(ClassStatus {
                keep: policy.class(&class).map(|k| k.keep.to_string()),
                class,
                segments: r.get::<_, i64>(1)? as u64,
                bytes: r.get::<_, i64>(2)? as u64,
                oldest_start: oldest.map(from_ms),
                oldest_age_days: oldest.map(|o| (now - from_ms(o)).num_days()),
                past_deadline: r.get::<_, Option<i64>>(4)?.unwrap_or(0) as u64,
            })
        })?;
        for r in rows {
            classes.push(r?);
        }
    }
    let mut deleted = BTreeMap::new();
    {
        let mut stmt = c.prepare(
            "SELECT reason, COUNT(*) FROM records WHERE deleted_ms IS NOT NULL GROUP BY reason",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, Option<String>>(0)?.unwrap_or_default(),
                r.get::<_, i64>(1)? as u64,
            ))
        })?;
        for r in rows {
            let (k, v) = r?;
            deleted.insert(k, v);
        }
    }
    let count = |sql: &str| -> rusqlite::Result<u64> {
        c.query_row(sql, [t], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
    };
    let holds = {
        let mut stmt = c.prepare(
            "SELECT id FROM holds WHERE released_ms IS NULL AND (until_ms IS NULL OR until_ms > ?1) ORDER BY id",
        )?;
        let rows = stmt.query_map([t], |r| r.get::<_, String>(0))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()?
    };
    let meta = |k: &str| -> rusqlite::Result<Option<String>> {
        c.query_row("SELECT value FROM meta WHERE key = ?1", [k], |r| r.get(0))
            .optional()
    };
    Ok(Status {
        at: now,
        classes,
        deleted,
        receipts: meta("receipt_head")?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        holds_active: holds.len() as u64,
        holds,
        requests_open: count(
            "SELECT COUNT(*) FROM requests WHERE closed_ms IS NULL AND due_ms > ?1",
        )?,
        restrictions_active: count(
            "SELECT COUNT(*) FROM restrictions WHERE lifted_ms IS NULL AND ?1 = ?1",
        )?,
        next_deletion: c
            .query_row(
                "SELECT MIN(delete_after_ms) FROM records WHERE gap = 0 AND deleted_ms IS NULL \
                 AND delete_after_ms > ?1 AND delete_after_ms <> ?2",
                [t, pending],
                |r| r.get::<_, Option<i64>>(0),
            )?
            .map(from_ms),
        deadline_pending: count(&format!(
            "SELECT COUNT(*) FROM records WHERE gap = 0 AND deleted_ms IS NULL \
             AND delete_after_ms = {pending} AND ?1 = ?1"
        ))?,
        last_sweep: meta("last_sweep")?.and_then(|s| serde_json::from_str(&s).ok()),
    })
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "status at {}",
            self.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )?;
        for c in &self.classes {
            writeln!(
                f,
                "  class {:<18} {:>8} segments {:>14} bytes  oldest {} day(s) (keep {})  past deadline {}",
                c.class,
                c.segments,
                c.bytes,
                c.oldest_age_days.map_or("-".into(), |d| d.to_string()),
                c.keep.as_deref().unwrap_or("?"),
                c.past_deadline
            )?;
        }
        let deleted: u64 = self.deleted.values().sum();
        write!(
            f,
            "  deleted {deleted} segment(s) with {} receipt(s)",
            self.receipts
        )?;
        for (k, v) in &self.deleted {
            write!(f, "; {k}: {v}")?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "  holds {} {:?}, open requests {}, restrictions {}",
            self.holds_active, self.holds, self.requests_open, self.restrictions_active
        )?;
        match self.next_deletion {
            Some(t) => writeln!(
                f,
                "  next deletion due {}",
                t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )?,
            None => writeln!(f, "  no deletion scheduled")?,
        }
        if self.deadline_pending > 0 {
            writeln!(
                f,
                "  {} segment(s) sealed with a clock fault: deadline pending until the clock is trusted",
                self.deadline_pending
            )?;
        }
        if let Some(s) = &self.last_sweep {
            if let Some(at) = s.at {
                writeln!(
                    f,
                    "  last sweep {} (expired {}, evicted {})",
                    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    s.expired,
                    s.evicted
                )?;
            }
            if let Some(p) = &s.paused {
                writeln!(f, "  DELETIONS PAUSED: {p}")?;
            }
            if let Some(p) = &s.pressure {
                writeln!(f, "  DISK PRESSURE: {p}")?;
            }
        }
        Ok(())
    }
}
