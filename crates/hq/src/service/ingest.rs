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

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::AnyConnection;

use sargs_core::seal::manifest;

use super::alarms;
use super::db::ms;
use super::ledger;
pub use super::refusal::decode_key;
use super::refusal::{refuse, Refusal, Step};

/// What the collector needs to read messages.
#[derive(Debug, Clone)]
pub struct Rules {
    pub prefix: String,
    pub max_payload_bytes: usize,
    pub trust: sargs_core::command::Trust,
}

/// Which of an agent's topics a message came on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    Status,
    Telemetry,
    Events,
    Responses,
    Commands,
}

impl Topic {
    fn as_str(self) -> &'static str {
        match self {
            Topic::Status => "status",
            Topic::Telemetry => "telemetry",
            Topic::Events => "events",
            Topic::Responses => "responses",
            Topic::Commands => "commands",
        }
    }
}

/// What became of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Kept,
    /// Kept before (a redelivery, or a record sent again).
    Duplicate,
    Quarantined {
        code: &'static str,
        reason: String,
    },
}

/// `{prefix}/agents/{agent}/{kind}` or `{prefix}/fleet/commands`.
pub fn parse_topic(prefix: &str, topic: &str) -> Option<(Option<String>, Topic)> {
    let rest = topic.strip_prefix(prefix)?.strip_prefix('/')?;
    if rest == "fleet/commands" {
        return Some((None, Topic::Commands));
    }
    let rest = rest.strip_prefix("agents/")?;
    let (agent, kind) = rest.split_once('/')?;
    if agent.is_empty() || sargs_core::config::check::id(agent).is_err() {
        return None;
    }
    let kind = match kind {
        "status" => Topic::Status,
        "telemetry" => Topic::Telemetry,
        "events" => Topic::Events,
        "responses" => Topic::Responses,
        "commands" => Topic::Commands,
        _ => return None,
    };
    Some((Some(agent.to_owned()), kind))
}

/// The code of a status older than the last one kept.
const STALE_STATUS: &str = "stale-status";

/// The message's id: SHA-256 over topic, a NUL and payload.
pub fn message_id(topic: &str, payload: &[u8]) -> String {
    let mut bytes = Vec::with_capacity(topic.len() + 1 + payload.len());
    bytes.extend_from_slice(topic.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(payload);
    manifest::sha256_hex(&bytes)
}

/// Reads one message into the ledger within `tx`.
pub async fn ingest(
    tx: &mut AnyConnection,
    rules: &Rules,
    topic: &str,
    payload: &[u8],
    now: DateTime<Utc>,
) -> Result<Outcome, sqlx::Error> {
    let id = message_id(topic, payload);
    let seen: Option<(i64,)> = sqlx::query_as(
        "SELECT 1 FROM messages WHERE id = $1 UNION ALL SELECT 1 FROM quarantine WHERE id = $1",
    )
    .bind(&id)
    .fetch_optional(&mut *tx)
    .await?;
    if seen.is_some() {
        return Ok(Outcome::Duplicate);
    }
    let parsed = parse_topic(&rules.prefix, topic);
    let agent = parsed.as_ref().and_then(|(a, _)| a.clone());
    let result = match parsed {
        None => Ok(Err(refuse(
            "topic",
            format!("not a topic of the fleet under {:?}", rules.prefix),
        ))),
        Some(_) if payload.len() > rules.max_payload_bytes => Ok(Err(refuse(
            "oversized",
            format!(
                "{} bytes, more than the {} allowed",
                payload.len(),
                rules.max_payload_bytes
            ),
        ))),
        Some((agent, kind)) => keep(tx, rules, &id, agent.as_deref(), kind, payload, now).await,
    }?;
    match result {
        Ok(duplicate) => Ok(if duplicate {
            Outcome::Duplicate
        } else {
            Outcome::Kept
        }),
        Err(r) => {
            quarantine(tx, &id, topic, agent.as_deref(), &r, payload, now).await?;
            Ok(Outcome::Quarantined {
                code: r.code,
                reason: r.reason,
            })
        }
    }
}

async fn quarantine(
    tx: &mut AnyConnection,
    id: &str,
    topic: &str,
    agent: Option<&str>,
    r: &Refusal,
    payload: &[u8],
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    // What was refused is kept for the operator (and replayed once its
    // agent is approved); of an oversized message, its first 64 KiB.
    let kept = if r.code == "oversized" {
        &payload[..payload.len().min(64 << 10)]
    } else {
        payload
    };
    let shown = String::from_utf8_lossy(kept).into_owned();
    sqlx::query(
        "INSERT INTO quarantine (id, topic, agent, reason_code, reason, received_at, payload_bytes, payload, replayed)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0) ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(topic)
    .bind(agent)
    .bind(r.code)
    .bind(&r.reason)
    .bind(ms(now))
    .bind(payload.len() as i64)
    .bind(shown)
    .execute(&mut *tx)
    .await?;
    tracing::warn!(topic, code = r.code, reason = %r.reason, "message quarantined");
    if r.code == STALE_STATUS {
        // Kept for the record, but a broker's late Will is no alarm.
        return Ok(());
    }
    alarms::raise(
        tx,
        &format!("quarantine:{}:{}", agent.unwrap_or("-"), r.code),
        agent,
        "message.quarantined",
        &format!("{topic}: {}", r.reason),
        now,
    )
    .await
}

/// One quarantined message as listed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Quarantined {
    pub topic: String,
    pub agent: Option<String>,
    pub code: String,
    pub reason: String,
    pub received_at: DateTime<Utc>,
    pub bytes: i64,
}

/// The quarantine, oldest first.
pub async fn quarantined(pool: &sqlx::AnyPool) -> Result<Vec<Quarantined>, sqlx::Error> {
    let rows: Vec<(String, Option<String>, String, String, i64, i64)> = sqlx::query_as(
        "SELECT topic, agent, reason_code, reason, received_at, payload_bytes FROM quarantine ORDER BY received_at, id",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(topic, agent, code, reason, at, bytes)| Quarantined {
            topic,
            agent,
            code,
            reason,
            received_at: super::db::at(at),
            bytes,
        })
        .collect())
}

/// Quarantines a message in a transaction of its own (one the database
/// would not keep).
pub async fn quarantine_alone(
    pool: &sqlx::AnyPool,
    topic: &str,
    payload: &[u8],
    reason: &str,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let levels: Vec<&str> = topic.split('/').collect();
    let agent = match levels.as_slice() {
        [_, "agents", agent, _] => Some((*agent).to_owned()),
        _ => None,
    };
    let r = refuse("database", reason);
    let id = message_id(topic, payload);
    quarantine(
        &mut tx,
        &id,
        topic,
        agent.as_deref(),
        &r,
        payload,
        Utc::now(),
    )
    .await?;
    tx.commit().await
}

/// Keeps a message whose topic is known; `Ok(Ok(true))` for a record that
/// was already kept.
async fn keep(
    tx: &mut AnyConnection,
    rules: &Rules,
    id: &str,
    agent: Option<&str>,
    kind: Topic,
    payload: &[u8],
    now: DateTime<Utc>,
) -> Step<bool> {
    let Ok(text) = std::str::from_utf8(payload) else {
        return Ok(Err(refuse("malformed", "not UTF-8 text")));
    };
    let v: Value = match serde_json::from_str(text) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return Ok(Err(refuse("malformed", "not a JSON object"))),
        Err(e) => return Ok(Err(refuse("malformed", format!("not JSON: {e}")))),
    };
    if kind == Topic::Commands {
        return super::commands::keep(tx, &rules.trust, payload, now).await;
    }
    let Some(agent) = agent else {
        return Ok(Err(refuse("topic", "no agent in the topic")));
    };
    let named = v
        .get("agent")
        .or_else(|| v.get("agent_id"))
        .and_then(Value::as_str);
    if named != Some(agent) {
        return Ok(Err(refuse(
            "agent-mismatch",
            format!("the payload names agent {named:?}, the topic {agent:?}"),
        )));
    }
    let enrolled: Option<(String, String)> =
        sqlx::query_as("SELECT state, device_key FROM agents WHERE id = $1")
            .bind(agent)
            .fetch_optional(&mut *tx)
            .await?;
    let key = match (&enrolled, kind) {
        (_, Topic::Status) => return status(tx, id, agent, &v, text, enrolled, now).await,
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
    let event = v.get("event").and_then(Value::as_str).map(str::to_owned);
    let duplicate = match kind {
        Topic::Telemetry => telemetry(tx, agent, &v, text, now).await?,
        Topic::Responses => super::commands::response(tx, agent, &v, text).await?,
        Topic::Events => match event.as_deref() {
            Some("segment.sealed" | "gap.recorded") => {
                ledger::record(tx, agent, &key, &v, now).await?
            }
            Some("segment.deleted") => ledger::receipt(tx, agent, &key, &v, now).await?,
            Some(e) => ledger::other_event(tx, agent, e, &v, now).await?,
            None => Err(refuse("malformed", "an event without `event`")),
        },
        Topic::Status | Topic::Commands => Ok(false),
    };
    let duplicate = match duplicate {
        Ok(d) => d,
        Err(r) => return Ok(Err(r)),
    };
    remember(tx, id, agent, kind, event.as_deref(), &v, text, now).await?;
    sqlx::query("UPDATE agents SET last_seen = $2 WHERE id = $1")
        .bind(agent)
        .bind(ms(now))
        .execute(&mut *tx)
        .await?;
    Ok(Ok(duplicate))
}

#[allow(clippy::too_many_arguments)]
async fn remember(
    tx: &mut AnyConnection,
    id: &str,
    agent: &str,
    kind: Topic,
    event: Option<&str>,
    v: &Value,
    text: &str,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let at = v
        .get("at")
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| ms(t.with_timezone(&Utc)));
    sqlx::query(
        "INSERT INTO messages (id, agent, topic_kind, event, at, received_at, payload)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(agent)
    .bind(kind.as_str())
    .bind(event)
    .bind(at)
    .bind(ms(now))
    .bind(text)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// A status: enrols nobody by itself. An unknown agent becomes pending (an
/// operator approves it); an enrolled one whose key changed is refused.
async fn status(
    tx: &mut AnyConnection,
    id: &str,
    agent: &str,
    v: &Value,
    text: &str,
    enrolled: Option<(String, String)>,
    now: DateTime<Utc>,
) -> Step<bool> {
    let key = v.get("device_key").and_then(Value::as_str).unwrap_or("");
    let online = v.get("state").and_then(Value::as_str) == Some("online");
    let version = v.get("version").and_then(Value::as_str);
    match enrolled {
        None => {
            if decode_key(key).is_none() {
                return Ok(Err(refuse(
                    "malformed",
                    "a status without a device key from an agent HQ does not know",
                )));
            }
            sqlx::query(
                "INSERT INTO agents (id, state, device_key, site, description, added_at, online, status_at, last_seen, version)
                 VALUES ($1, 'pending', $2, '', '', $3, $4, $3, $3, $5) ON CONFLICT (id) DO NOTHING",
            )
            .bind(agent)
            .bind(key)
            .bind(ms(now))
            .bind(i64::from(online))
            .bind(version)
            .execute(&mut *tx)
            .await?;
            alarms::raise(
                tx,
                &format!("agent.pending:{agent}"),
                Some(agent),
                "agent.pending",
                &format!("agent {agent} asks to be enrolled with device key {key}"),
                now,
            )
            .await?;
        }
        Some((state, enrolled_key)) => {
            // A status older than the last one kept is a replay (the broker
            // redelivers the same bytes, which the id already recognised):
            // it must not flip the agent's state back.
            let at = v
                .get("at")
                .and_then(Value::as_str)
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .map(|t| ms(t.with_timezone(&Utc)));
            let last: Option<(Option<i64>,)> = sqlx::query_as(
                "SELECT MAX(at) FROM messages WHERE agent = $1 AND topic_kind = 'status'",
            )
            .bind(agent)
            .fetch_optional(&mut *tx)
            .await?;
            if let (Some(at), Some((Some(last),))) = (at, last) {
                if at < last {
                    return Ok(Err(refuse(
                        STALE_STATUS,
                        "a status older than the last one kept: a replay, or the Last Will of \
                         a connection the agent had already replaced",
                    )));
                }
            }
            if !key.is_empty() && key != enrolled_key {
                alarms::raise(
                    tx,
                    &format!("agent.key_changed:{agent}"),
                    Some(agent),
                    "agent.key_changed",
                    &format!("status signed for device key {key}, enrolled {enrolled_key}"),
                    now,
                )
                .await?;
                return Ok(Err(refuse(
                    "key-changed",
                    format!("device key {key} differs from the enrolled {enrolled_key}"),
                )));
            }
            sqlx::query(
                "UPDATE agents SET online = $2, status_at = $3, last_seen = $3, version = $4 WHERE id = $1",
            )
            .bind(agent)
            .bind(i64::from(online))
            .bind(ms(now))
            .bind(version)
            .execute(&mut *tx)
            .await?;
            if online && state == "enrolled" {
                alarms::clear(tx, &format!("agent.offline:{agent}"), now).await?;
            }
        }
    }
    remember(tx, id, agent, Topic::Status, None, v, text, now).await?;
    Ok(Ok(false))
}

async fn telemetry(
    tx: &mut AnyConnection,
    agent: &str,
    v: &Value,
    text: &str,
    now: DateTime<Utc>,
) -> Step<bool> {
    sqlx::query(
        "INSERT INTO telemetry (agent, at, payload) VALUES ($1, $2, $3)
         ON CONFLICT (agent) DO UPDATE SET at = excluded.at, payload = excluded.payload",
    )
    .bind(agent)
    .bind(ms(now))
    .bind(text)
    .execute(&mut *tx)
    .await?;
    let dropped = v
        .pointer("/outbox/dropped")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    if dropped > 0 {
        alarms::raise(
            tx,
            &format!("outbox.dropped:{agent}"),
            Some(agent),
            "outbox.dropped",
            &format!("the agent's outbox dropped {dropped} message(s): ask it to resend"),
            now,
        )
        .await?;
    }
    Ok(Ok(false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_of_the_fleet_are_recognised() {
        assert_eq!(
            parse_topic("sargs", "sargs/agents/gw-1/events"),
            Some((Some("gw-1".into()), Topic::Events))
        );
        assert_eq!(
            parse_topic("sargs", "sargs/fleet/commands"),
            Some((None, Topic::Commands))
        );
        for bad in [
            "sargs/agents/gw-1/other",
            "sargs/agents//events",
            "sargs/agents/a b/events",
            "other/agents/gw-1/events",
            "sargsx/agents/gw-1/events",
        ] {
            assert_eq!(parse_topic("sargs", bad), None, "{bad}");
        }
    }

    #[test]
    fn the_id_covers_topic_and_payload() {
        assert_ne!(message_id("a", b"bc"), message_id("ab", b"c"));
        assert_eq!(message_id("a", b"b"), message_id("a", b"b"));
    }
}
