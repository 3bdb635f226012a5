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

/// Raises the alarm `key` unless it was ever raised (open or cleared).
pub async fn raise_once(
    tx: &mut AnyConnection,
    key: &str,
    agent: Option<&str>,
    kind: &str,
    detail: &str,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO alarms (key, agent, kind, detail, raised_at, cleared_at)
         VALUES ($1, $2, $3, $4, $5, NULL) ON CONFLICT (key) DO NOTHING",
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

/// Clears `agent`'s open alarms of `kind` other than `key` (which says
/// more).
pub async fn supersede(
    tx: &mut AnyConnection,
    kind: &str,
    agent: &str,
    key: &str,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE alarms SET cleared_at = $4
         WHERE kind = $1 AND agent = $2 AND key <> $3 AND cleared_at IS NULL",
    )
    .bind(kind)
    .bind(agent)
    .bind(key)
    .bind(ms(now))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// An operator clears an alarm; `false` if it was not open.
pub async fn clear_by_operator(pool: &AnyPool, key: &str) -> Result<bool, sqlx::Error> {
    let done =
        sqlx::query("UPDATE alarms SET cleared_at = $2 WHERE key = $1 AND cleared_at IS NULL")
            .bind(key)
            .bind(ms(Utc::now()))
            .execute(pool)
            .await?;
    Ok(done.rows_affected() == 1)
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
