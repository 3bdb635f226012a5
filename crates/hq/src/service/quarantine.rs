//! The quarantine: messages that were not trusted, kept with the reason
//! for an operator (and replayed once their agent is approved), never read
//! into the ledger.

use chrono::{DateTime, Utc};
use sqlx::AnyConnection;

use super::alarms;
use super::db::ms;
use super::message::{message_id, STALE_STATUS};
use super::refusal::{refuse, Refusal};

pub(super) async fn quarantine(
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
    let mut tx = super::db::write(pool).await?;
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
