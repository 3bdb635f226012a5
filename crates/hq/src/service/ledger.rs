//! The events an agent reports besides its records and receipts (which
//! [`bulk`](super::bulk) keeps): holds applied and released, and those that
//! raise or clear an alarm (the offload's among them), and where an
//! offloaded record is in the evidence store (`objects`), inside the
//! collector's transaction.
//!
//! An alarm's key names its agent (and camera, record or hold where the
//! condition is theirs), so an event clears only what its own agent raised:
//! `sweep.failed:{agent}` is raised (its detail the agent's reason, the
//! latest) and cleared by that agent's `sweep.resumed`, likewise
//! `clock.problem` by `clock.trusted` and `disk.stalled:{agent}:{file}` by
//! the `disk.resumed` of that file. `crates/hq/tests/hq_rollups/agent_alarms.rs`
//! checks the offload's, the sweep's and the disk's on SQLite and PostgreSQL.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;
use sqlx::AnyConnection;

use super::alarms;
use super::db::ms;
use super::refusal::Step;

/// What `segment.offloaded` says of the record's objects.
#[derive(Deserialize)]
struct Offloaded {
    segment_id: String,
    camera_id: String,
    sequence: i64,
    store: String,
    manifest_key: String,
    manifest_object_sha256: String,
    media_key: Option<String>,
    ciphertext_sha256: Option<String>,
    bytes: i64,
}

/// Keeps where a record is in the evidence store (table `objects`), once:
/// only for a record of the reporting agent itself; a report that does not
/// say it whole is only logged (the alarm it clears is cleared anyway).
async fn object(
    tx: &mut AnyConnection,
    agent: &str,
    v: &Value,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let o = match v.get("offload").map(Offloaded::deserialize) {
        Some(Ok(o)) => o,
        Some(Err(e)) => {
            tracing::warn!(agent, error = %e, "segment.offloaded without its objects; not kept");
            return Ok(());
        }
        None => return Ok(()),
    };
    let own = format!("{agent}/{}/{}", o.camera_id, o.sequence);
    if o.segment_id != own {
        tracing::warn!(agent, segment = %o.segment_id,
            "segment.offloaded names another agent's or another record; not kept");
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO objects (agent, camera, sequence, segment_id, store, manifest_key,
             manifest_object_sha256, media_key, ciphertext_sha256, bytes, received_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (agent, camera, sequence) DO NOTHING",
    )
    .bind(agent)
    .bind(&o.camera_id)
    .bind(o.sequence)
    .bind(&o.segment_id)
    .bind(&o.store)
    .bind(&o.manifest_key)
    .bind(&o.manifest_object_sha256)
    .bind(&o.media_key)
    .bind(&o.ciphertext_sha256)
    .bind(o.bytes)
    .bind(ms(now))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Holds and the events that raise or clear an alarm.
pub(super) async fn other_event(
    tx: &mut AnyConnection,
    agent: &str,
    event: &str,
    v: &Value,
    now: DateTime<Utc>,
) -> Step<bool> {
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let camera = s("camera");
    match event {
        "hold.applied" => {
            sqlx::query(
                "INSERT INTO holds (agent, hold, command_id, applied_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (agent, hold) DO UPDATE SET released_at = NULL",
            )
            .bind(agent)
            .bind(s("hold"))
            .bind(s("command_id"))
            .bind(ms(now))
            .execute(&mut *tx)
            .await?;
        }
        "hold.released" => {
            sqlx::query("UPDATE holds SET released_at = $3 WHERE agent = $1 AND hold = $2")
                .bind(agent)
                .bind(s("hold"))
                .bind(ms(now))
                .execute(&mut *tx)
                .await?;
        }
        "camera.down" | "recording.stopped" => {
            let key = format!("{event}:{agent}:{camera}");
            let detail = format!("camera {camera}: {}", s("reason"));
            alarms::raise(tx, &key, Some(agent), event, &detail, now).await?;
        }
        "camera.up" => {
            for kind in ["camera.down", "recording.stopped"] {
                alarms::clear(tx, &format!("{kind}:{agent}:{camera}"), now).await?;
            }
        }
        "disk.pressure" => {
            let detail = s("message");
            let key = format!("disk.pressure:{agent}");
            alarms::raise(tx, &key, Some(agent), event, &detail, now).await?;
        }
        "clock.problem" => {
            let key = format!("clock.problem:{agent}");
            alarms::raise(tx, &key, Some(agent), event, &s("message"), now).await?;
        }
        "clock.trusted" => alarms::clear(tx, &format!("clock.problem:{agent}"), now).await?,
        // A store that fails holds every record back: one alarm per agent,
        // cleared by the next record offloaded. A record that fails alone
        // has its own, cleared when that record goes.
        "offload.failed" => {
            let o = |k: &str| {
                v.pointer(&format!("/offload/{k}"))
                    .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned))
                    .unwrap_or_default()
            };
            let key = match o("kind").as_str() {
                "record" => format!("offload.failed:{agent}:{}", o("segment_id")),
                _ => format!("offload.failed:{agent}"),
            };
            let detail = format!(
                "offload to {} failed ({} in a row; {}): {}",
                o("store"),
                o("failures"),
                o("key"),
                o("error")
            );
            alarms::raise(tx, &key, Some(agent), event, &detail, now).await?;
        }
        "segment.offloaded" => {
            let segment = v
                .pointer("/offload/segment_id")
                .and_then(Value::as_str)
                .unwrap_or("");
            alarms::clear(tx, &format!("offload.failed:{agent}"), now).await?;
            alarms::clear(tx, &format!("offload.failed:{agent}:{segment}"), now).await?;
            object(tx, agent, v, now).await?;
        }
        "sweep.failed" => {
            let key = format!("sweep.failed:{agent}");
            alarms::raise(tx, &key, Some(agent), event, &s("reason"), now).await?;
        }
        "sweep.resumed" => alarms::clear(tx, &format!("sweep.failed:{agent}"), now).await?,
        // A write or fsync the agent's disk holds: one alarm per file.
        "disk.stalled" => {
            let key = format!("disk.stalled:{agent}:{}", s("file"));
            alarms::raise(tx, &key, Some(agent), event, &s("reason"), now).await?;
        }
        "disk.resumed" => {
            alarms::clear(tx, &format!("disk.stalled:{agent}:{}", s("file")), now).await?
        }
        "hold.cap_warning" => {
            let hold = s("hold");
            let detail = format!("hold {hold} reaches its class's cap at {}", s("cap_at"));
            let key = format!("hold.cap_warning:{agent}:{hold}");
            alarms::raise(tx, &key, Some(agent), event, &detail, now).await?;
        }
        _ => {}
    }
    Ok(Ok(false))
}
