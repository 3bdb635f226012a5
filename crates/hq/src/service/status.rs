//! An agent's status and telemetry, inside the collector's transaction.
//!
//! Invariant: a status enrols nobody by itself — an unknown agent becomes
//! pending until an operator approves it — and never changes what HQ
//! believes of an enrolled agent when it is a replay (older than the last
//! status kept) or announces another device key (refused, with an alarm).

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::AnyConnection;

use super::alarms;
use super::db::ms;
use super::message::{remember, Topic, STALE_STATUS};
use super::refusal::{decode_key, refuse, Step};

/// A status: enrols nobody by itself. An unknown agent becomes pending (an
/// operator approves it); an enrolled one whose key changed is refused.
pub(super) async fn status(
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
            // Read from the index messages_status (migration 0005), not
            // from the agent's messages.
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

pub(super) async fn telemetry(
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
    claims(tx, agent, v, now).await?;
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

/// Most numberings one telemetry sample may claim (cameras and receipts).
const MAX_CLAIMS: usize = 1024;

/// Keeps the numbers the sample says the broker acknowledged
/// (`outbox.acknowledged`), each with when HQ first heard of it: a number
/// claimed again keeps its first instant, a higher one starts its own.
/// Camera `''` stands for the receipts.
async fn claims(
    tx: &mut AnyConnection,
    agent: &str,
    v: &Value,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let Some(acked) = v.pointer("/outbox/acknowledged") else {
        return Ok(());
    };
    let records = acked
        .get("records")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(camera, _)| !camera.is_empty())
        .map(|(camera, n)| (camera.as_str(), n));
    let receipts = acked.get("receipts").map(|n| ("", n));
    for (camera, n) in records.chain(receipts).take(MAX_CLAIMS) {
        let Some(n) = n.as_u64().and_then(|n| i64::try_from(n).ok()) else {
            continue;
        };
        sqlx::query(
            "INSERT INTO ledger_claims (agent, camera, sequence, claimed_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (agent, camera) DO UPDATE
             SET sequence = excluded.sequence, claimed_at = excluded.claimed_at
             WHERE excluded.sequence > ledger_claims.sequence",
        )
        .bind(agent)
        .bind(camera)
        .bind(n)
        .bind(ms(now))
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}
