//! Alarms: what an operator must look at, kept with when it was raised and
//! when it cleared.
//!
//! An alarm is keyed by what raised it (`camera.down:gw-1:cam-2`), so the
//! same condition raised again while open is one alarm (its detail updated),
//! and raised after it cleared opens again with a new `raised_at`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{AnyConnection, AnyPool};

use super::db::{at, ms};

/// Raises (or refreshes) the alarm `key`.
pub async fn raise(
    tx: &mut AnyConnection,
    key: &str,
    agent: Option<&str>,
    kind: &str,
    detail: &str,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO alarms (key, agent, kind, detail, raised_at, cleared_at)
         VALUES ($1, $2, $3, $4, $5, NULL)
         ON CONFLICT (key) DO UPDATE SET detail = excluded.detail,
           raised_at = CASE WHEN alarms.cleared_at IS NULL THEN alarms.raised_at ELSE excluded.raised_at END,
           cleared_at = NULL",
    )
    .bind(key)
    .bind(agent)
    .bind(kind)
    .bind(detail)
    .bind(ms(now))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Clears the alarm `key` if it is open.
pub async fn clear(
    tx: &mut AnyConnection,
    key: &str,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE alarms SET cleared_at = $2 WHERE key = $1 AND cleared_at IS NULL")
        .bind(key)
        .bind(ms(now))
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// One alarm as listed.
#[derive(Debug, Clone, Serialize)]
pub struct Alarm {
    pub key: String,
    pub agent: Option<String>,
    pub kind: String,
    pub detail: String,
    pub raised_at: DateTime<Utc>,
    pub cleared_at: Option<DateTime<Utc>>,
}

/// Open alarms (and cleared ones too with `all`), newest first.
pub async fn list(pool: &AnyPool, all: bool) -> Result<Vec<Alarm>, sqlx::Error> {
    type Columns = (String, Option<String>, String, String, i64, Option<i64>);
    let rows: Vec<Columns> = sqlx::query_as(
        "SELECT key, agent, kind, detail, raised_at, cleared_at FROM alarms
         WHERE cleared_at IS NULL OR $1 = 1 ORDER BY raised_at DESC, key",
    )
    .bind(i64::from(all))
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(key, agent, kind, detail, raised, cleared)| Alarm {
            key,
            agent,
            kind,
            detail,
            raised_at: at(raised),
            cleared_at: cleared.map(at),
        })
        .collect())
}
