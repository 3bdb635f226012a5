//! Enrolment: which gateways HQ trusts, with which device key.
//!
//! An agent is trusted only once enrolled: added by an operator with its
//! device key (`sargs-hq agent add`), or approved after it announced itself
//! (its first `status` makes it pending, never trusted). Approving replays
//! what was quarantined while it waited, through the same checks as a
//! message from the broker.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::AnyPool;

use super::alarms;
use super::db::{at, ms};
use super::ingest::{self, decode_key, Outcome, Rules};

/// One agent as listed.
#[derive(Debug, Clone, Serialize)]
pub struct Agent {
    pub id: String,
    pub state: String,
    pub device_key: String,
    pub site: String,
    pub description: String,
    pub online: bool,
    pub last_seen: Option<DateTime<Utc>>,
    pub version: Option<String>,
}

/// Enrols `id` with `device_key`; an agent already pending with the same key
/// is approved, one enrolled with another key is refused.
pub async fn add(
    pool: &AnyPool,
    id: &str,
    device_key: &str,
    site: &str,
    description: &str,
    by: &str,
) -> anyhow::Result<()> {
    sargs_core::config::check::id(id).map_err(|e| anyhow::anyhow!("agent id: {e}"))?;
    if decode_key(device_key).is_none() {
        anyhow::bail!("device key {device_key:?} is not a Base64 Ed25519 public key");
    }
    let now = Utc::now();
    let mut tx = super::db::write(pool).await?;
    let known: Option<(String, String)> =
        sqlx::query_as("SELECT state, device_key FROM agents WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    match known {
        Some((state, key)) if state == "enrolled" && key != device_key => anyhow::bail!(
            "agent {id} is enrolled with device key {key}; remove it first to change the key"
        ),
        Some(_) => {
            sqlx::query(
                "UPDATE agents SET state = 'enrolled', device_key = $2, site = $3, description = $4, approved_by = $5 WHERE id = $1",
            )
            .bind(id)
            .bind(device_key)
            .bind(site)
            .bind(description)
            .bind(by)
            .execute(&mut *tx)
            .await?;
        }
        None => {
            // A status may make it pending meanwhile (the collector runs):
            // then it is enrolled over that, as an approval would.
            let done = sqlx::query(
                "INSERT INTO agents (id, state, device_key, site, description, added_at, approved_by, online)
                 VALUES ($1, 'enrolled', $2, $3, $4, $5, $6, 0)
                 ON CONFLICT (id) DO UPDATE SET state = 'enrolled', device_key = excluded.device_key,
                   site = excluded.site, description = excluded.description,
                   approved_by = excluded.approved_by
                 WHERE agents.state = 'pending'",
            )
            .bind(id)
            .bind(device_key)
            .bind(site)
            .bind(description)
            .bind(ms(now))
            .bind(by)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 0 {
                anyhow::bail!("agent {id} was enrolled meanwhile by someone else; list the agents");
            }
        }
    }
    alarms::clear(&mut tx, &format!("agent.pending:{id}"), now).await?;
    tx.commit().await?;
    Ok(())
}

/// Approves a pending agent with the key it announced.
pub async fn approve(pool: &AnyPool, id: &str, by: &str) -> anyhow::Result<()> {
    let row: Option<(String, String, String, String)> =
        sqlx::query_as("SELECT state, device_key, site, description FROM agents WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?;
    match row {
        None => anyhow::bail!("agent {id} is not known: it has not sent a status yet"),
        Some((state, ..)) if state == "enrolled" => anyhow::bail!("agent {id} is enrolled already"),
        Some((_, key, site, description)) => add(pool, id, &key, &site, &description, by).await,
    }
}

/// Replays `id`'s quarantined messages that waited for its enrolment;
/// returns how many were kept now.
pub async fn replay(pool: &AnyPool, rules: &Rules, id: &str) -> anyhow::Result<usize> {
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT id, topic, payload FROM quarantine WHERE agent = $1 AND reason_code = 'unenrolled' ORDER BY received_at, id",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    let mut kept = 0;
    for (qid, topic, payload) in rows {
        let mut tx = super::db::write(pool).await?;
        sqlx::query("DELETE FROM quarantine WHERE id = $1")
            .bind(&qid)
            .execute(&mut *tx)
            .await?;
        let o = ingest::ingest(&mut tx, rules, &topic, payload.as_bytes(), Utc::now()).await?;
        tx.commit().await?;
        if o != Outcome::Duplicate && !matches!(o, Outcome::Quarantined { .. }) {
            kept += 1;
        }
    }
    Ok(kept)
}

/// Every agent HQ knows.
pub async fn list(pool: &AnyPool) -> Result<Vec<Agent>, sqlx::Error> {
    type Columns = (
        String,
        String,
        String,
        String,
        String,
        i64,
        Option<i64>,
        Option<String>,
    );
    let rows: Vec<Columns> =
        sqlx::query_as(
            "SELECT id, state, device_key, site, description, online, last_seen, version FROM agents ORDER BY id",
        )
        .fetch_all(pool)
        .await?;
    Ok(rows
        .into_iter()
        .map(
            |(id, state, device_key, site, description, online, last_seen, version)| Agent {
                id,
                state,
                device_key,
                site,
                description,
                online: online == 1,
                last_seen: last_seen.map(at),
                version,
            },
        )
        .collect())
}
