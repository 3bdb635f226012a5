//! One message from the broker into the ledger, inside the caller's
//! transaction.
//!
//! Invariants (`docs/hq-service.md`, "Collector"):
//! - A message is kept once: its id is the SHA-256 of its topic and payload,
//!   and one already kept (or quarantined) changes nothing when the broker
//!   delivers it again.
//! - Nothing untrusted reaches the ledger. A message for an agent that is
//!   not enrolled, whose signed envelope does not verify against the
//!   enrolled device key, whose payload names another agent, that is not
//!   JSON, that is too large, or that contradicts a record already kept is
//!   quarantined with a code and a reason, and raises an alarm.
//! - Records and receipts are kept from their signed envelopes, never from
//!   the unsigned fields beside them; the envelope is stored as received so
//!   that anyone can verify it again.

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::AnyConnection;

use super::bulk::{MessageRow, Pending, Row};
use super::db::ms;
use super::ledger;
use super::marks::Marks;
use super::message::{at_of, remember};
pub use super::message::{message_id, parse_topic, Outcome, Rules, Topic};
use super::prepare::{Body, Doc, Prepared, Signed};
use super::quarantine::quarantine;
pub use super::quarantine::{quarantine_alone, quarantined, Quarantined};
pub use super::refusal::decode_key;
use super::refusal::{refuse, Refusal, Step};
use super::rows::{ReceiptRow, RecordRow};

/// Reads one message into the ledger within `tx` (a batch of one).
pub async fn ingest(
    tx: &mut AnyConnection,
    rules: &Rules,
    topic: &str,
    payload: &[u8],
    now: DateTime<Utc>,
) -> Result<Outcome, sqlx::Error> {
    let p = Prepared::new(rules, topic, payload);
    let mut batch = Batch::begin(tx, &[&p]).await?;
    batch.ingest(tx, rules, &p, now).await?;
    let mut outcomes = batch.finish(tx, now).await?;
    Ok(outcomes.pop().unwrap_or(Outcome::Duplicate))
}

/// What one transaction reads once for all its messages: which of them
/// were kept (or quarantined) before, and the agents they come from; and
/// what it writes at once ([`bulk`](super::bulk): records and receipts;
/// each agent's `last_seen`).
#[derive(Default)]
pub struct Batch {
    /// What became of each message, in order (of one set aside: settled
    /// when it is written).
    outcomes: Vec<Outcome>,
    /// Records and receipts set aside.
    pending: Vec<Pending>,
    /// Ids kept or quarantined, before or earlier in this transaction.
    seen: HashSet<String>,
    /// `(state, device_key)` of each agent named, `None` if unknown.
    agents: HashMap<String, Option<(String, String)>>,
    /// Agents heard from in this transaction.
    heard: BTreeSet<String>,
}

/// Most values bound in one `IN (…)` list.
const IN_CHUNK: usize = 256;

impl Batch {
    /// Reads what the messages' ids and agents need.
    pub async fn begin(tx: &mut AnyConnection, batch: &[&Prepared]) -> Result<Batch, sqlx::Error> {
        let mut b = Batch::default();
        let marks = Marks::of(tx);
        let ids: Vec<&str> = batch.iter().map(|p| p.id.as_str()).collect();
        for chunk in ids.chunks(IN_CHUNK) {
            let n = chunk.len();
            let sql = format!(
                "SELECT id FROM messages WHERE id IN ({}) UNION ALL SELECT id FROM quarantine WHERE id IN ({})",
                marks.list(1, n),
                marks.list(n + 1, n)
            );
            let mut q = sqlx::query_as::<_, (String,)>(sqlx::AssertSqlSafe(sql));
            for id in chunk.iter().chain(chunk) {
                q = q.bind(*id);
            }
            for (id,) in q.fetch_all(&mut *tx).await? {
                b.seen.insert(id);
            }
        }
        let agents: BTreeSet<&str> = batch.iter().filter_map(|p| p.agent.as_deref()).collect();
        let agents: Vec<&str> = agents.into_iter().collect();
        for chunk in agents.chunks(IN_CHUNK) {
            let sql = format!(
                "SELECT id, state, device_key FROM agents WHERE id IN ({})",
                marks.list(1, chunk.len())
            );
            let mut q = sqlx::query_as::<_, (String, String, String)>(sqlx::AssertSqlSafe(sql));
            for a in chunk {
                q = q.bind(*a);
            }
            for a in chunk {
                b.agents.insert((*a).to_owned(), None);
            }
            for (id, state, key) in q.fetch_all(&mut *tx).await? {
                b.agents.insert(id, Some((state, key)));
            }
            // The agents' rows are locked until commit, in one order (the
            // ids', ascending) for every transaction: two replicas keeping
            // one agent's messages take turns (`rollup_batch.rs`), and
            // cannot deadlock on two agents.
            let sql = format!(
                "UPDATE agents SET last_seen = last_seen WHERE id IN ({})",
                marks.list(1, chunk.len())
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for a in chunk {
                q = q.bind(*a);
            }
            q.execute(&mut *tx).await?;
        }
        Ok(b)
    }

    /// Reads one message of the batch into the ledger (a record or receipt
    /// is set aside until [`Batch::finish`] or the next message of another
    /// kind).
    pub async fn ingest(
        &mut self,
        tx: &mut AnyConnection,
        rules: &Rules,
        p: &Prepared,
        now: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        if !self.seen.insert(p.id.clone()) {
            self.outcomes.push(Outcome::Duplicate);
            return Ok(());
        }
        let result = match &p.body {
            Body::Refused(r) => Err(refuse(r.code, r.reason.clone())),
            Body::Json {
                kind,
                text,
                value,
                signed,
                stored,
            } => {
                if !matches!(signed, Some(Ok(_))) {
                    // Everything set aside is written before anything else.
                    self.flush(tx, now).await?;
                }
                let m = Message {
                    id: &p.id,
                    topic: &p.topic,
                    agent: p.agent.as_deref(),
                    kind: *kind,
                    text,
                    stored: stored.as_deref(),
                    v: value,
                    signed: signed.as_ref(),
                    payload: &p.payload,
                };
                self.keep(tx, rules, m, now).await?
            }
        };
        let outcome = match result {
            Ok(Kept::Now(false)) => Outcome::Kept,
            Ok(Kept::Now(true)) => Outcome::Duplicate,
            // Settled by the flush.
            Ok(Kept::Later) => Outcome::Kept,
            Err(r) => {
                quarantine(tx, &p.id, &p.topic, p.agent.as_deref(), &r, &p.payload, now).await?;
                Outcome::Quarantined {
                    code: r.code,
                    reason: r.reason,
                }
            }
        };
        self.outcomes.push(outcome);
        Ok(())
    }

    /// Writes the records and receipts set aside.
    async fn flush(
        &mut self,
        tx: &mut AnyConnection,
        now: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        for (slot, outcome, agent) in super::bulk::flush(tx, pending, now).await? {
            if !agent.is_empty() {
                self.heard.insert(agent);
            }
            if let Some(o) = self.outcomes.get_mut(slot) {
                *o = outcome;
            }
        }
        Ok(())
    }

    /// Writes what the transaction saved for its end.
    pub async fn finish(
        mut self,
        tx: &mut AnyConnection,
        now: DateTime<Utc>,
    ) -> Result<Vec<Outcome>, sqlx::Error> {
        self.flush(tx, now).await?;
        for agent in &self.heard {
            sqlx::query("UPDATE agents SET last_seen = $2 WHERE id = $1")
                .bind(agent)
                .bind(ms(now))
                .execute(&mut *tx)
                .await?;
        }
        Ok(self.outcomes)
    }
}

/// What [`Batch::keep`] did with a message it did not refuse.
enum Kept {
    /// Kept now (`true`: kept before).
    Now(bool),
    /// A record or receipt set aside.
    Later,
}

/// A prepared message's parts, as [`Batch::keep`] reads them.
struct Message<'a> {
    id: &'a str,
    topic: &'a str,
    agent: Option<&'a str>,
    kind: Topic,
    text: &'a str,
    stored: Option<&'a str>,
    v: &'a Value,
    signed: Option<&'a Result<Box<Signed>, Refusal>>,
    payload: &'a [u8],
}

impl Batch {
    /// Keeps a message whose topic is known; `Ok(Ok(true))` for a record
    /// that was already kept.
    async fn keep(
        &mut self,
        tx: &mut AnyConnection,
        rules: &Rules,
        m: Message<'_>,
        now: DateTime<Utc>,
    ) -> Step<Kept> {
        if m.kind == Topic::Commands {
            let done = super::commands::keep(tx, &rules.trust, m.payload, now).await?;
            return Ok(done.map(Kept::Now));
        }
        let Some(agent) = m.agent else {
            return Ok(Err(refuse("topic", "no agent in the topic")));
        };
        let enrolled = self.agents.get(agent).cloned().flatten();
        let key = match (&enrolled, m.kind) {
            (_, Topic::Status) => {
                let done =
                    super::status::status(tx, m.id, agent, m.v, m.text, enrolled, now).await?;
                if let (Ok(_), None) = (&done, self.agents.get(agent).cloned().flatten()) {
                    // Pending from now on, for the rest of the batch.
                    let key = m.v.get("device_key").and_then(Value::as_str).unwrap_or("");
                    self.agents
                        .insert(agent.to_owned(), Some(("pending".into(), key.to_owned())));
                }
                return Ok(done.map(Kept::Now));
            }
            (Some((state, key)), _) if state == "enrolled" => key.clone(),
            (Some(_), _) => {
                return Ok(Err(refuse(
                    "unenrolled",
                    format!("agent {agent:?} awaits an operator's approval"),
                )))
            }
            (None, _) => {
                return Ok(Err(refuse(
                    "unenrolled",
                    format!("agent {agent:?} is not enrolled"),
                )))
            }
        };
        let event = m.v.get("event").and_then(Value::as_str);
        let duplicate = match (m.kind, m.signed) {
            (Topic::Telemetry, _) => super::status::telemetry(tx, agent, m.v, m.text, now).await?,
            (Topic::Responses, _) => super::commands::response(tx, agent, m.v, m.text).await?,
            (Topic::Events, Some(Err(r))) => Err(refuse(r.code, r.reason.clone())),
            (Topic::Events, Some(Ok(signed))) => {
                let row = signed.check(&key).and_then(|()| match &signed.doc {
                    Ok(Doc::Manifest(d)) => RecordRow::new(agent, signed, d).map(Row::Record),
                    Ok(Doc::Receipt(d)) => ReceiptRow::new(agent, signed, d).map(Row::Receipt),
                    Err(r) => Err(refuse(r.code, r.reason.clone())),
                });
                let row = match row {
                    Ok(row) => row,
                    Err(r) => return Ok(Err(r)),
                };
                self.pending.push(Pending {
                    slot: self.outcomes.len(),
                    message: MessageRow {
                        id: m.id.to_owned(),
                        topic: m.topic.to_owned(),
                        payload: m.payload.to_vec(),
                        agent: agent.to_owned(),
                        kind: m.kind,
                        event: event.map(str::to_owned),
                        at: at_of(m.v),
                        stored: m.stored.unwrap_or(m.text).to_owned(),
                    },
                    row,
                });
                return Ok(Ok(Kept::Later));
            }
            (Topic::Events, None) => match event {
                Some(e) => ledger::other_event(tx, agent, e, m.v, now).await?,
                None => Err(refuse("malformed", "an event without `event`")),
            },
            (Topic::Status | Topic::Commands, _) => Ok(false),
        };
        let duplicate = match duplicate {
            Ok(d) => d,
            Err(r) => return Ok(Err(r)),
        };
        remember(tx, m.id, agent, m.kind, event, m.v, m.text, now).await?;
        self.heard.insert(agent.to_owned());
        Ok(Ok(Kept::Now(duplicate)))
    }
}
