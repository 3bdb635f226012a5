//! The sweeper: deletes what is due, warns before hold caps, relieves disk
//! pressure.
//!
//! Invariants (on top of the engine's):
//! - deadline deletions happen only while the clock guard trusts the clock;
//! - disk pressure deletes only unprotected segments, earliest deadline
//!   first, and only while free space is below the floor; when only
//!   protected data is left it stops and raises an alarm (recording then
//!   pauses at `agent.min_free_mb` by itself and resumes when space returns);
//! - protection is always judged at a time the agent can vouch for — the
//!   earlier of the wall clock and the last trusted reading plus the
//!   monotonic time since (before any trusted reading: the newest sealed
//!   record) — so a clock that jumps ahead cannot make a hold look expired,
//!   not even between a jump and the sweep that notices it;
//! - every sweep first indexes what the cameras sealed while it was busy;
//! - a record sealed with a `clock_fault` (its times mix clocks or are
//!   impossible) is never due by the deadline its manifest states: it is
//!   indexed with a pending deadline, which the first sweep that trusts the
//!   clock sets to that instant plus its class's period. A clock that was
//!   wrong therefore neither deletes what it stamped in the past (a board
//!   at 1970) nor keeps for years what it stamped in the future;
//! - such a record's hold cap (`start + hold_cap`) is pending with its
//!   deadline, and the same sweep counts it from the same trusted instant:
//!   a hold on a record stamped 1970 keeps it up to its class cap from a
//!   time the agent can vouch for, not from 1970 (when the cap would be
//!   long past, and the hold void against the sweeper and disk pressure).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::clockguard::{Now, Trust};
use super::{Engine, Event, Retention, RetentionError};
use sargs_core::command::Scope;
use sargs_core::retention::index::{ms, Row};
use sargs_core::retention::receipt::Reason;

/// Segments examined per batch (one receipt batch, one index commit).
const BATCH: usize = 256;
/// HQ is warned this long before a hold reaches its class cap.
pub const CAP_WARNING_DAYS: i64 = 30;

/// The deadline a record with a clock fault is indexed with until a
/// trusted sweep sets its own: 9999-12-31T23:59:59Z, never due.
pub(crate) fn pending_deadline() -> DateTime<Utc> {
    DateTime::from_timestamp(PENDING_S, 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
}
const PENDING_S: i64 = 253_402_300_799;

/// What one sweep did.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepReport {
    pub at: Option<DateTime<Utc>>,
    /// Deleted because their retention ended.
    pub expired: u64,
    /// Deleted early to free space.
    pub evicted: u64,
    /// Why deadline deletions are paused, if they are.
    pub paused: Option<String>,
    /// Disk pressure that could not be relieved, if any.
    pub pressure: Option<String>,
    pub cap_warnings: u64,
}

impl Retention {
    /// One sweep at `now`.
    pub fn sweep(&self, now: Now) -> Result<SweepReport, RetentionError> {
        self.run(|e| e.sweep(now))
    }
}

impl Engine {
    /// The instant protections are judged at (see the module invariant): the
    /// wall clock, but never later than the last trusted reading plus the
    /// monotonic time since — nor, before any trusted reading, than the
    /// newest sealed record.
    pub(crate) fn protection_time(&self, wall: DateTime<Utc>) -> DateTime<Utc> {
        let vouched = match self.last_trusted {
            Some((t, at)) => chrono::Duration::from_std(at.elapsed())
                .ok()
                .and_then(|d| t.checked_add_signed(d))
                .unwrap_or(t),
            None => match self.index.newest_sealed().ok().flatten() {
                Some(n) => n,
                None => return wall,
            },
        };
        wall.min(vouched)
    }

    pub(crate) fn sweep(&mut self, now: Now) -> Result<SweepReport, RetentionError> {
        let mut report = SweepReport {
            at: Some(now.wall),
            ..SweepReport::default()
        };
        // Records the cameras sealed while the engine was busy.
        self.index_chains()?;
        let newest = self.index.newest_sealed().map_err(self.db_err())?;
        match self.guard.observe(now, newest) {
            Trust::Trusted => {
                if self.paused.take().is_some() {
                    self.note(Event::ClockTrusted);
                }
                self.last_trusted = Some((now.wall, std::time::Instant::now()));
                self.rebase_pending(now.wall)?;
                report.expired = self.delete_due(now.wall)?;
                report.cap_warnings = self.warn_caps(now.wall)?;
            }
            Trust::Paused(why) => {
                if self.paused.as_deref() != Some(&why) {
                    self.note(Event::ClockProblem {
                        message: why.clone(),
                    });
                }
                self.paused = Some(why.clone());
                report.paused = Some(why);
            }
        }
        let at = self.protection_time(now.wall);
        let (evicted, pressure) = self.relieve_pressure(at)?;
        report.evicted = evicted;
        report.pressure = pressure.clone();
        self.pressure = pressure;
        self.last_sweep = Some(now.wall);
        let state = serde_json::to_string(&report).unwrap_or_default();
        self.write(|w| w.set_meta("last_sweep", &state))?;
        Ok(report)
    }

    /// Gives each record indexed with a pending deadline (see the module's
    /// invariant) its own: `now` plus its class's period; and its hold cap,
    /// `now` plus its class's cap.
    fn rebase_pending(&mut self, now: DateTime<Utc>) -> Result<(), RetentionError> {
        let pending = ms(pending_deadline());
        let classes: Vec<String> = {
            let mut stmt = self
                .index
                .conn()
                .prepare_cached(
                    "SELECT DISTINCT class FROM records WHERE delete_after_ms = ?1 AND deleted_ms IS NULL",
                )
                .map_err(self.db_err())?;
            let rows = stmt
                .query_map([pending], |r| r.get(0))
                .map_err(self.db_err())?;
            rows.collect::<Result<_, _>>().map_err(self.db_err())?
        };
        for class in classes {
            let Some(c) = self.policy.class(&class) else {
                continue;
            };
            let Some(deadline) = c.keep.add_to(now) else {
                continue;
            };
            let cap = c.hold_limit(now).map(ms);
            let n = self.write(|w| {
                w.tx.execute(
                    "UPDATE records SET delete_after_ms = ?1, cap_ms = ?4 \
                     WHERE delete_after_ms = ?2 AND class = ?3 AND deleted_ms IS NULL",
                    rusqlite::params![ms(deadline), pending, class, cap],
                )
            })?;
            tracing::info!(%class, records = n, %deadline,
                "records sealed with a clock fault get their deadline from the trusted clock");
        }
        Ok(())
    }

    fn delete_due(&mut self, now: DateTime<Utc>) -> Result<u64, RetentionError> {
        let prot = self.index.protections().map_err(self.db_err())?;
        let mut cursor = None;
        let mut deleted = 0;
        loop {
            let batch = self.index.due(now, cursor, BATCH).map_err(self.db_err())?;
            let Some((_, last)) = batch.last() else { break };
            cursor = Some(*last);
            let doomed: Vec<Row> = batch
                .into_iter()
                .map(|(r, _)| r)
                .filter(|r| {
                    let id = r.segment_id(&self.agent);
                    prot.due(&r.facts(&id), now)
                })
                .collect();
            deleted += self
                .delete(&doomed, Reason::RetentionExpired, None, now)?
                .len() as u64;
        }
        Ok(deleted)
    }

    /// Warns once per hold when a segment it keeps is within
    /// [`CAP_WARNING_DAYS`] of its class cap and not extended past it.
    fn warn_caps(&mut self, now: DateTime<Utc>) -> Result<u64, RetentionError> {
        let prot = self.index.protections().map_err(self.db_err())?;
        let pending: Vec<(String, String)> = {
            let mut stmt = self
                .index
                .conn()
                .prepare_cached(
                    "SELECT id, scope FROM holds WHERE released_ms IS NULL AND cap_warned_ms IS NULL",
                )
                .map_err(self.db_err())?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(self.db_err())?;
            rows.collect::<Result<_, _>>().map_err(self.db_err())?
        };
        let window = chrono::Duration::days(CAP_WARNING_DAYS);
        let mut warned = 0;
        for (hold, scope) in pending {
            let Ok(scope) = serde_json::from_str::<Scope>(&scope) else {
                continue;
            };
            let rows = self
                .index
                .in_scope(&scope, &self.agent)
                .map_err(self.db_err())?;
            let mut first_cap: Option<DateTime<Utc>> = None;
            let mut count = 0;
            for r in rows.iter().filter(|r| !r.gap && r.deleted.is_none()) {
                let id = r.segment_id(&self.agent);
                let f = r.facts(&id);
                if prot
                    .holds_nearing_cap(&f, now, window)
                    .any(|h| h.id == hold)
                {
                    count += 1;
                    first_cap = first_cap.min(f.cap_at).or(f.cap_at);
                }
            }
            if let Some(cap_at) = first_cap {
                self.note(Event::HoldCapWarning {
                    hold: hold.clone(),
                    cap_at,
                    segments: count,
                });
                let t = ms(now);
                self.write(|w| {
                    w.tx.execute(
                        "UPDATE holds SET cap_warned_ms = ?2 WHERE id = ?1",
                        rusqlite::params![hold, t],
                    )
                    .map(|_| ())
                })?;
                warned += 1;
            }
        }
        Ok(warned)
    }

    /// Deletes unprotected segments, earliest deadline first, while free
    /// space is below the floor.
    fn relieve_pressure(
        &mut self,
        at: DateTime<Utc>,
    ) -> Result<(u64, Option<String>), RetentionError> {
        let floor = self.settings.free_space_floor_bytes;
        let free = |e: &Engine| (e.free_space)().unwrap_or(u64::MAX);
        let mut free_now = free(self);
        if free_now >= floor {
            return Ok((0, None));
        }
        let prot = self.index.protections().map_err(self.db_err())?;
        let mut cursor = None;
        let mut evicted = 0;
        loop {
            let batch = self
                .index
                .by_deadline(cursor, BATCH)
                .map_err(self.db_err())?;
            let Some((_, last)) = batch.last() else { break };
            cursor = Some(*last);
            // Collect just enough (by size) to reach the floor, delete, re-read.
            let mut doomed = Vec::new();
            let mut freeing = 0u64;
            for (r, _) in batch {
                let id = r.segment_id(&self.agent);
                if prot.protector(&r.facts(&id), at, None).is_some() {
                    continue;
                }
                freeing += r.bytes;
                doomed.push(r);
                if free_now.saturating_add(freeing) >= floor {
                    evicted += self.delete(&doomed, Reason::DiskPressure, None, at)?.len() as u64;
                    doomed.clear();
                    freeing = 0;
                    free_now = free(self);
                    if free_now >= floor {
                        break;
                    }
                }
            }
            evicted += self.delete(&doomed, Reason::DiskPressure, None, at)?.len() as u64;
            free_now = free(self);
            if free_now >= floor {
                break;
            }
        }
        if free_now >= floor {
            if evicted > 0 {
                self.note(Event::DiskPressure {
                    free_bytes: free_now,
                    floor_bytes: floor,
                    message: format!(
                        "freed space by deleting {evicted} unprotected segment(s) early"
                    ),
                });
            }
            return Ok((evicted, None));
        }
        let msg = format!(
            "{free_now} bytes free, below the floor of {floor}: only protected segments are left; \
             recording stops at agent.min_free_mb until space returns"
        );
        if self.pressure.is_none() {
            self.note(Event::DiskPressure {
                free_bytes: free_now,
                floor_bytes: floor,
                message: msg.clone(),
            });
        }
        Ok((evicted, Some(msg)))
    }
}
