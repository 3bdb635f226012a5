//! Applying HQ's commands: verify, refuse replays, journal, commit, answer.
//!
//! Invariant: [`Retention::apply`] returns only after the command's effect is
//! durable (journal entry fsynced, index committed) — or after it was
//! refused, in which case nothing changed but the record that the id was seen.
//! Applying the same command again changes nothing and answers `replayed`
//! with the original outcome. An erasure's deletions happen between its
//! journal entry and the commit that marks it applied, so a crash in between
//! re-runs the erasure at start rather than leaving it half done.

use chrono::{DateTime, Months, Utc};
use serde::Serialize;
use serde_json::{json, Value};

use super::journal::Entry;
use super::{Engine, Event, Retention, RetentionError};
use sargs_core::command::{self, Action, Command, Rejection, Scope};
use sargs_core::retention::index::{ms, Row, Writer};
use sargs_core::retention::receipt::Reason;
use sargs_core::seal::sign::Envelope;

/// A request-hold lasts this long unless extended…
const REQUEST_DEFAULT_MONTHS: u32 = 1;
/// …and never longer than this after opening (J 28).
const REQUEST_MAX_MONTHS: u32 = 3;

/// The answer to one command, sent back to HQ.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Response {
    pub v: u32,
    pub command_id: String,
    pub kind: String,
    pub agent_id: String,
    /// `applied` or `rejected`.
    pub status: String,
    /// Machine-readable refusal code (see `docs/commands.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub result: Value,
}

impl Response {
    pub fn applied(&self) -> bool {
        self.status == "applied"
    }
}

/// A refusal found while applying (the command was well formed).
struct Refused(String);

impl Retention {
    /// Verifies `bytes` (a signed command envelope) and applies it at `now`.
    pub fn apply(&self, bytes: &[u8], now: DateTime<Utc>) -> Result<Response, RetentionError> {
        self.run(|e| e.apply(bytes, now))
    }

    /// [`Retention::apply`], returning the events the command caused instead
    /// of handing them to the sink, for a caller that makes them durable in
    /// one write with the response (the HQ link). Deletion receipts of an
    /// erasure still reach the sink before the media goes.
    pub fn apply_collecting(
        &self,
        bytes: &[u8],
        now: DateTime<Utc>,
    ) -> (Result<Response, RetentionError>, Vec<Event>) {
        self.run_collecting(|e| e.apply(bytes, now))
    }
}

impl Engine {
    fn apply(&mut self, bytes: &[u8], now: DateTime<Utc>) -> Result<Response, RetentionError> {
        let agent = self.agent.clone();
        let verified = match command::verify(bytes, &self.trust, &agent, now) {
            Ok(v) => v,
            Err(rej) => {
                let (id, kind) = command_hint(bytes);
                return Ok(self.reject(&id, &kind, &rej, now));
            }
        };
        let cmd = verified.command;
        if let Some(original) = self.index.seen(&cmd.id).map_err(self.db_err())? {
            let rej = Rejection::Replayed { id: cmd.id.clone() };
            let mut r = self.reject(&cmd.id, cmd.action.kind(), &rej, now);
            r.result = serde_json::from_str(&original).unwrap_or(Value::Null);
            return Ok(r);
        }
        let envelope: Envelope = serde_json::from_slice(bytes)
            .map_err(|err| RetentionError::Corrupt(format!("verified envelope reparse: {err}")))?;
        self.execute(&cmd, Some(envelope), now)
    }

    /// Notes an event of the operation under way (see [`Retention::run`]).
    pub(crate) fn note(&mut self, e: Event) {
        self.pending.push(e);
    }
}

/// Best effort id and kind of a command that failed verification, for the
/// response (empty when unreadable).
fn command_hint(bytes: &[u8]) -> (String, String) {
    let field = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let outer = serde_json::from_slice::<Value>(bytes).unwrap_or(Value::Null);
    let inner = outer
        .get("payload")
        .and_then(Value::as_str)
        .and_then(|p| serde_json::from_str::<Value>(p).ok())
        .unwrap_or(outer);
    (
        field(&inner, "id").unwrap_or_default(),
        field(&inner, "kind").unwrap_or_default(),
    )
}

impl Engine {
    fn response(&self, id: &str, kind: &str, now: DateTime<Utc>) -> Response {
        Response {
            v: 1,
            command_id: id.to_owned(),
            kind: kind.to_owned(),
            agent_id: self.agent.clone(),
            status: "applied".into(),
            code: None,
            reason: None,
            at: now,
            result: Value::Null,
        }
    }

    fn reject(&mut self, id: &str, kind: &str, rej: &Rejection, now: DateTime<Utc>) -> Response {
        tracing::warn!(command = id, code = rej.code(), reason = %rej, "command rejected");
        self.note(Event::CommandRejected {
            id: id.to_owned(),
            code: rej.code().to_owned(),
            reason: rej.to_string(),
        });
        Response {
            status: "rejected".into(),
            code: Some(rej.code().into()),
            reason: Some(rej.to_string()),
            ..self.response(id, kind, now)
        }
    }

    /// Applies a verified command. `envelope` is `None` when replaying the
    /// journal (the entry already exists).
    pub(crate) fn execute(
        &mut self,
        cmd: &Command,
        envelope: Option<Envelope>,
        now: DateTime<Utc>,
    ) -> Result<Response, RetentionError> {
        let kind = cmd.action.kind();
        let mut resp = self.response(&cmd.id, kind, now);
        // Read-only kinds: answered, remembered, not journaled.
        match &cmd.action {
            Action::Inventory { scope } => {
                resp.result = self.inventory(scope, now)?;
                return self.remember(cmd, resp, now);
            }
            Action::Status => {
                resp.result = serde_json::to_value(self.status(now)?).unwrap_or(Value::Null);
                return self.remember(cmd, resp, now);
            }
            Action::Resend {
                receipts_from,
                records_from,
            } => {
                resp.result =
                    self.resend(*receipts_from, records_from, super::resend::MAX_RESEND)?;
                return self.remember(cmd, resp, now);
            }
            _ => {}
        }
        if let Some(rej) = self.offload_refusal(cmd, envelope.is_some()) {
            let r = self.reject(&cmd.id, kind, &rej, now);
            return self.remember(cmd, r, now);
        }
        if let Err(Refused(reason)) = self.check(cmd, now)? {
            let rej = Rejection::Refused(reason);
            let r = self.reject(&cmd.id, kind, &rej, now);
            return self.remember(cmd, r, now);
        }
        // Journal first (skipped on replay: the entry is the source).
        let sequence = self.journal_head + 1;
        if let Some(envelope) = envelope {
            let entry = Entry {
                v: 1,
                sequence,
                applied_at: now,
                envelope,
            };
            self.journal
                .append(&entry)
                .map_err(|source| RetentionError::Io {
                    path: self.data_dir.join("commands"),
                    source,
                })?;
        }
        if let Action::Erase { scope, request } = &cmd.action {
            resp.result = self.erase(cmd, scope, request.as_deref(), now)?;
        }
        let result = self.mutate(cmd, now, sequence, &resp.result)?;
        if !result.is_null() {
            resp.result = result;
        }
        self.journal_head = sequence;
        self.emit_applied(cmd);
        Ok(resp)
    }

    fn remember(
        &mut self,
        cmd: &Command,
        resp: Response,
        now: DateTime<Utc>,
    ) -> Result<Response, RetentionError> {
        let text = serde_json::to_string(&resp.result).unwrap_or_default();
        let kind = cmd.action.kind();
        self.write(|w| w.record_command(&cmd.id, kind, now, &text))?;
        Ok(resp)
    }

    fn emit_applied(&mut self, cmd: &Command) {
        match &cmd.action {
            Action::HoldPlace { hold, .. } | Action::HoldExtend { hold, .. } => {
                self.note(Event::HoldApplied {
                    hold: hold.clone(),
                    command: cmd.id.clone(),
                })
            }
            Action::HoldRelease { hold } => self.note(Event::HoldReleased {
                hold: hold.clone(),
                command: cmd.id.clone(),
            }),
            _ => {}
        }
    }

    /// Whether the command makes sense against the current state.
    fn check(
        &self,
        cmd: &Command,
        now: DateTime<Utc>,
    ) -> Result<Result<(), Refused>, RetentionError> {
        let c = self.index.conn();
        let exists = |table: &str, id: &str| -> rusqlite::Result<Option<(i64, Option<i64>)>> {
            let (col_a, col_b) = match table {
                "holds" => ("placed_ms", "released_ms"),
                "requests" => ("opened_ms", "closed_ms"),
                _ => ("placed_ms", "lifted_ms"),
            };
            rusqlite::OptionalExtension::optional(c.query_row(
                &format!("SELECT {col_a}, {col_b} FROM {table} WHERE id = ?1"),
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            ))
        };
        let err = self.db_err();
        let refuse = |s: String| Ok(Err(Refused(s)));
        match &cmd.action {
            Action::HoldPlace { hold, until, .. } => {
                if exists("holds", hold).map_err(err)?.is_some() {
                    return refuse(format!("hold {hold} already exists"));
                }
                if until.is_some_and(|u| u <= now) {
                    return refuse("args.until is not in the future".into());
                }
            }
            Action::HoldRelease { hold } | Action::HoldExtend { hold, .. } => {
                match exists("holds", hold).map_err(err)? {
                    None => return refuse(format!("no hold {hold}")),
                    Some((_, Some(_))) => {
                        return refuse(format!("hold {hold} is already released"))
                    }
                    Some(_) => {}
                }
                if let Action::HoldExtend {
                    until,
                    beyond_cap_until,
                    ..
                } = &cmd.action
                {
                    if until.is_some_and(|u| u <= now) || beyond_cap_until.is_some_and(|u| u <= now)
                    {
                        return refuse("an extension must end in the future".into());
                    }
                }
            }
            Action::RequestOpen { request, due, .. } => {
                if exists("requests", request).map_err(err)?.is_some() {
                    return refuse(format!("request {request} already exists"));
                }
                if let Some(due) = due {
                    if *due <= now || Some(*due) > add_months(now, REQUEST_MAX_MONTHS) {
                        return refuse(format!(
                            "args.due must be in the future and at most {REQUEST_MAX_MONTHS} months away"
                        ));
                    }
                }
            }
            Action::RequestExtend { request, due } => {
                match exists("requests", request).map_err(err)? {
                    None => return refuse(format!("no request {request}")),
                    Some((_, Some(_))) => return refuse(format!("request {request} is closed")),
                    Some((opened, None)) => {
                        let opened = sargs_core::retention::index::from_ms(opened);
                        if *due <= now || Some(*due) > add_months(opened, REQUEST_MAX_MONTHS) {
                            return refuse(format!(
                            "args.due must be in the future and at most {REQUEST_MAX_MONTHS} months after the request was opened ({opened})"
                        ));
                        }
                    }
                }
            }
            Action::RequestClose { request } => match exists("requests", request).map_err(err)? {
                None => return refuse(format!("no request {request}")),
                Some((_, Some(_))) => {
                    return refuse(format!("request {request} is already closed"))
                }
                Some(_) => {}
            },
            Action::Restrict { restriction, .. } => {
                if exists("restrictions", restriction).map_err(err)?.is_some() {
                    return refuse(format!("restriction {restriction} already exists"));
                }
            }
            Action::Unrestrict { restriction } => {
                match exists("restrictions", restriction).map_err(err)? {
                    None => return refuse(format!("no restriction {restriction}")),
                    Some((_, Some(_))) => {
                        return refuse(format!("restriction {restriction} is already lifted"))
                    }
                    Some(_) => {}
                }
            }
            Action::Erase {
                request: Some(request),
                ..
            } => {
                if exists("requests", request).map_err(err)?.is_none() {
                    return refuse(format!("no request {request}"));
                }
            }
            Action::Erase { .. }
            | Action::Offload { .. }
            | Action::Inventory { .. }
            | Action::Status
            | Action::Resend { .. } => {}
        }
        Ok(Ok(()))
    }

    /// The index change of a state-changing command, committed together with
    /// the journal head and the command record — with its outcome: the one
    /// computed here, or `outcome`, what the command did before (an
    /// erasure's deletions and refusals), so that a replay repeats it.
    fn mutate(
        &mut self,
        cmd: &Command,
        now: DateTime<Utc>,
        sequence: u64,
        outcome: &Value,
    ) -> Result<Value, RetentionError> {
        let scope_json = |s: &Scope| serde_json::to_string(s).unwrap_or_default();
        let t = ms(now);
        let id = cmd.id.clone();
        let kind = cmd.action.kind();
        let covered = match &cmd.action {
            Action::HoldPlace { scope, .. }
            | Action::RequestOpen { scope, .. }
            | Action::Restrict { scope, .. } => Some(self.count_present(scope)?),
            _ => None,
        };
        let offload = self.offload_asked(cmd)?;
        let action = cmd.action.clone();
        let issuer = cmd.issuer.clone();
        let agent = self.agent.clone();
        let result = match (&action, covered) {
            (Action::RequestOpen { request, due, .. }, n) => {
                let due = due
                    .or_else(|| add_months(now, REQUEST_DEFAULT_MONTHS))
                    .unwrap_or(now);
                json!({"request": request, "due": due, "covered_segments": n})
            }
            (Action::HoldPlace { hold, .. }, n) => match &offload {
                Some(o) => json!({"hold": hold, "covered_segments": n, "offload": o.result()}),
                None => json!({"hold": hold, "covered_segments": n}),
            },
            (Action::Offload { .. }, _) => offload.as_ref().map_or(Value::Null, |o| o.result()),
            (Action::Restrict { restriction, .. }, n) => {
                json!({"restriction": restriction, "covered_segments": n})
            }
            _ => outcome.clone(),
        };
        let result_text = serde_json::to_string(&result).unwrap_or_default();
        self.write(|w: &Writer<'_>| {
            let tx = w.tx;
            match &action {
                Action::HoldPlace { hold, case, scope, until, .. } => {
                    tx.execute(
                        "INSERT INTO holds(id, command, case_ref, issuer, scope, placed_ms, until_ms) VALUES (?1,?2,?3,?4,?5,?6,?7)",
                        rusqlite::params![hold, id, case, issuer, scope_json(scope), t, until.map(ms)],
                    )?;
                }
                Action::HoldRelease { hold } => {
                    tx.execute("UPDATE holds SET released_ms = ?2 WHERE id = ?1", rusqlite::params![hold, t])?;
                }
                Action::HoldExtend { hold, until, beyond_cap_until } => {
                    if let Some(u) = until {
                        tx.execute("UPDATE holds SET until_ms = ?2 WHERE id = ?1", rusqlite::params![hold, ms(*u)])?;
                    }
                    if let Some(u) = beyond_cap_until {
                        // A new cap horizon: warn again before it.
                        tx.execute("UPDATE holds SET beyond_cap_ms = ?2, cap_warned_ms = NULL WHERE id = ?1", rusqlite::params![hold, ms(*u)])?;
                    }
                }
                Action::RequestOpen { request, scope, due } => {
                    let due = due.or_else(|| add_months(now, REQUEST_DEFAULT_MONTHS)).unwrap_or(now);
                    tx.execute(
                        "INSERT INTO requests(id, command, scope, opened_ms, due_ms) VALUES (?1,?2,?3,?4,?5)",
                        rusqlite::params![request, id, scope_json(scope), t, ms(due)],
                    )?;
                }
                Action::RequestExtend { request, due } => {
                    tx.execute("UPDATE requests SET due_ms = ?2 WHERE id = ?1", rusqlite::params![request, ms(*due)])?;
                }
                Action::RequestClose { request } => {
                    tx.execute("UPDATE requests SET closed_ms = ?2 WHERE id = ?1", rusqlite::params![request, t])?;
                }
                Action::Restrict { restriction, scope, reason } => {
                    tx.execute(
                        "INSERT INTO restrictions(id, command, scope, reason, placed_ms) VALUES (?1,?2,?3,?4,?5)",
                        rusqlite::params![restriction, id, scope_json(scope), reason, t],
                    )?;
                }
                Action::Unrestrict { restriction } => {
                    tx.execute("UPDATE restrictions SET lifted_ms = ?2 WHERE id = ?1", rusqlite::params![restriction, t])?;
                }
                Action::Erase { .. } | Action::Offload { .. } | Action::Inventory { .. } | Action::Status | Action::Resend { .. } => {}
            }
            if let Some(o) = &offload {
                w.want_offload(&id, &o.scope, &agent)?;
            }
            w.set_meta("journal_head", &sequence.to_string())?;
            w.record_command(&id, kind, now, &result_text)
        })?;
        Ok(result)
    }

    fn count_present(&self, scope: &Scope) -> Result<u64, RetentionError> {
        let rows = self
            .index
            .in_scope(scope, &self.agent)
            .map_err(self.db_err())?;
        Ok(rows
            .iter()
            .filter(|r| !r.gap && r.deleted.is_none())
            .count() as u64)
    }

    /// Deletes what the scope covers unless protected; says what it did.
    fn erase(
        &mut self,
        cmd: &Command,
        scope: &Scope,
        request: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Value, RetentionError> {
        let (rows, prot) = self.scoped(scope)?;
        let at = self.protection_time(now);
        let mut doomed: Vec<Row> = Vec::new();
        let mut refused = Vec::new();
        let mut already = 0u64;
        for r in rows {
            if r.gap || r.sealed_at > now {
                continue;
            }
            if r.deleted.is_some() {
                already += 1;
                continue;
            }
            let id = r.segment_id(&self.agent);
            match prot.protector(&r.facts(&id), at, request) {
                Some(p) => refused.push(json!({"segment_id": id, "protected_by": p.to_string()})),
                None => doomed.push(r),
            }
        }
        let receipts = self.delete(&doomed, Reason::Erasure, Some(&cmd.id), now)?;
        Ok(json!({
            "deleted": receipts.iter().map(|r| json!({"segment_id": r.segment_id, "receipt": r.sequence})).collect::<Vec<_>>(),
            "refused": refused,
            "already_deleted": already,
        }))
    }

    /// The records `scope` covers, and every protection.
    fn scoped(
        &self,
        scope: &Scope,
    ) -> Result<(Vec<Row>, sargs_core::retention::rules::Protections), RetentionError> {
        let rows = self
            .index
            .in_scope(scope, &self.agent)
            .map_err(self.db_err())?;
        let prot = self.index.protections().map_err(self.db_err())?;
        Ok((rows, prot))
    }

    /// Which records a scope covers and their state.
    pub(crate) fn inventory(
        &self,
        scope: &Scope,
        now: DateTime<Utc>,
    ) -> Result<Value, RetentionError> {
        let (rows, prot) = self.scoped(scope)?;
        let offloaded = rows
            .iter()
            .map(|r| self.index.offloaded(&r.camera, r.seq).map(|o| o.is_some()))
            .collect::<Result<Vec<bool>, _>>()
            .map_err(self.db_err())?;
        let records: Vec<Value> = rows
            .iter()
            .zip(offloaded)
            .map(|(r, offloaded)| {
                let id = r.segment_id(&self.agent);
                let f = r.facts(&id);
                let pending = ms(r.delete_after) == ms(super::sweep::pending_deadline());
                let mut v = json!({
                    "segment_id": id, "camera": r.camera, "record": if r.gap {"gap"} else {"segment"},
                    "start": r.start, "end": r.end, "class": r.class,
                    // A clock-faulted record's deadline waits for a trusted
                    // clock: no date until then (see `status`).
                    "delete_after": (!pending).then_some(r.delete_after), "deadline_pending": pending,
                    "offloaded": offloaded,
                });
                if !r.gap {
                    let state = match &r.deleted {
                        Some(d) => json!({"state": "deleted", "deleted_at": d.at, "reason": d.reason, "receipt": d.receipt}),
                        None => json!({
                            "state": "present",
                            "protected_by": prot.protector(&f, now, None).map(|p| p.to_string()),
                            "restricted": prot.restriction(&f).is_some(),
                            "truncated": r.truncated,
                        }),
                    };
                    if let (Some(v), Value::Object(s)) = (v.as_object_mut(), state) {
                        v.extend(s);
                    }
                }
                v
            })
            .collect();
        Ok(json!({"records": records}))
    }

    /// Re-applies a journal entry at its own time (recovery, reindex).
    pub(crate) fn replay(&mut self, entry: &Entry) -> Result<(), RetentionError> {
        let cmd = command::parse_payload(&entry.envelope.payload).map_err(|e| {
            RetentionError::Corrupt(format!("journal entry {}: {e}", entry.sequence))
        })?;
        if entry.sequence != self.journal_head + 1 {
            return Err(RetentionError::Corrupt(format!(
                "journal entry {} follows {}",
                entry.sequence, self.journal_head
            )));
        }
        let resp = self.execute(&cmd, None, entry.applied_at)?;
        if !resp.applied() {
            // Refused on replay (e.g. a duplicate id): keep the numbering.
            let seq = entry.sequence;
            self.write(|w| w.set_meta("journal_head", &seq.to_string()))?;
            self.journal_head = seq;
        }
        Ok(())
    }
}

fn add_months(t: DateTime<Utc>, months: u32) -> Option<DateTime<Utc>> {
    t.checked_add_months(Months::new(months))
}
