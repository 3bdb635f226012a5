//! Records and receipts into the ledger from their signed envelopes, and
//! the other events an agent reports (holds, and those that raise or clear
//! an alarm), inside the collector's transaction.
//!
//! Invariant: a record or receipt is kept only from an envelope that
//! verifies against the agent's enrolled device key and names that agent;
//! its number is its key, so the same one again is a duplicate and another
//! one under that number is refused (`conflict`). The envelope is stored as
//! received, so that anyone can verify it again.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::AnyConnection;

use sargs_core::retention::receipt::Receipt;
use sargs_core::seal::manifest::{self, Manifest, RecordKind};
use sargs_core::seal::sign::{Envelope, EnvelopeError};

use super::alarms;
use super::db::ms;
use super::refusal::{decode_key, refuse, Refusal, Step};

/// The envelope of an event, opened against the enrolled key.
fn open(v: &Value, key: &str) -> Result<Envelope, Refusal> {
    let Some(env) = v.get("envelope") else {
        return Err(refuse("unsigned", "no signed `envelope` in the event"));
    };
    let key =
        decode_key(key).ok_or_else(|| refuse("key", "the enrolled device key does not decode"))?;
    let bytes = serde_json::to_vec(env).map_err(|e| refuse("malformed", e.to_string()))?;
    Envelope::open(&bytes, Some(&key)).map_err(|e| match e {
        EnvelopeError::WrongKey { found, .. } => refuse(
            "wrong-key",
            format!("signed by {found}, not by the agent's enrolled device key"),
        ),
        EnvelopeError::BadSignature => refuse("bad-signature", "the signature does not verify"),
        other => refuse("malformed", other.to_string()),
    })
}

/// A sealed segment or a gap record, from its signed manifest.
pub(super) async fn record(
    tx: &mut AnyConnection,
    agent: &str,
    key: &str,
    v: &Value,
    now: DateTime<Utc>,
) -> Step<bool> {
    let env = match open(v, key) {
        Ok(e) => e,
        Err(r) => return Ok(Err(r)),
    };
    let m: Manifest = match serde_json::from_str(&env.payload) {
        Ok(m) => m,
        Err(e) => return Ok(Err(refuse("malformed", format!("manifest: {e}")))),
    };
    if m.agent_id != agent {
        return Ok(Err(refuse(
            "agent-mismatch",
            format!("the manifest is agent {:?}'s", m.agent_id),
        )));
    }
    let sha = manifest::sha256_hex(env.payload.as_bytes());
    let envelope = serde_json::to_string(&env).unwrap_or_default();
    let (kind, media, gap) = match m.record {
        RecordKind::Segment => ("segment", m.media.as_ref(), None),
        RecordKind::Gap => ("gap", None, m.gap.as_ref().map(|g| g.reason.clone())),
    };
    let done = sqlx::query(
        "INSERT INTO records (agent, camera, sequence, segment_id, kind, start_ms, end_ms, class,
            delete_after_ms, manifest_sha256, prev_manifest_sha256, ciphertext_sha256, bytes,
            truncated, gap_reason, envelope, received_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
         ON CONFLICT DO NOTHING",
    )
    .bind(agent)
    .bind(&m.camera_id)
    .bind(m.sequence as i64)
    .bind(&m.segment_id)
    .bind(kind)
    .bind(ms(m.start))
    .bind(ms(m.end))
    .bind(&m.retention.class)
    .bind(ms(m.retention.delete_after))
    .bind(&sha)
    .bind(&m.prev_manifest_sha256)
    .bind(media.map(|x| x.ciphertext_sha256.clone()))
    .bind(media.map(|x| x.ciphertext_bytes as i64))
    .bind(i64::from(media.is_some_and(|x| x.truncated)))
    .bind(gap)
    .bind(envelope)
    .bind(ms(now))
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 1 {
        return Ok(Ok(false));
    }
    let kept: Option<(String,)> = sqlx::query_as(
        "SELECT manifest_sha256 FROM records WHERE agent = $1 AND (segment_id = $2 OR (camera = $3 AND sequence = $4))",
    )
    .bind(agent)
    .bind(&m.segment_id)
    .bind(&m.camera_id)
    .bind(m.sequence as i64)
    .fetch_optional(&mut *tx)
    .await?;
    Ok(settle(kept, &sha, || format!("record {}", m.segment_id)))
}

/// After an insert that found its number taken: the same record or receipt
/// again (`true`, a duplicate), or another one under that number.
fn settle(
    kept: Option<(String,)>,
    sha: &str,
    what: impl FnOnce() -> String,
) -> Result<bool, Refusal> {
    match kept {
        Some((s,)) if s == sha => Ok(true),
        _ => Err(refuse(
            "conflict",
            format!(
                "{} differs from the one already kept under that number",
                what()
            ),
        )),
    }
}

/// A deletion receipt, from its signed envelope.
pub(super) async fn receipt(
    tx: &mut AnyConnection,
    agent: &str,
    key: &str,
    v: &Value,
    now: DateTime<Utc>,
) -> Step<bool> {
    let env = match open(v, key) {
        Ok(e) => e,
        Err(r) => return Ok(Err(r)),
    };
    let r: Receipt = match serde_json::from_str(&env.payload) {
        Ok(r) => r,
        Err(e) => return Ok(Err(refuse("malformed", format!("receipt: {e}")))),
    };
    if r.agent_id != agent {
        return Ok(Err(refuse(
            "agent-mismatch",
            format!("the receipt is agent {:?}'s", r.agent_id),
        )));
    }
    let sha = manifest::sha256_hex(env.payload.as_bytes());
    let envelope = serde_json::to_string(&env).unwrap_or_default();
    let done = sqlx::query(
        "INSERT INTO receipts (agent, sequence, segment_id, camera, class, delete_after_ms,
            deleted_at_ms, reason, command_id, manifest_sha256, ciphertext_sha256,
            payload_sha256, prev_receipt_sha256, envelope, received_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
         ON CONFLICT DO NOTHING",
    )
    .bind(agent)
    .bind(r.sequence as i64)
    .bind(&r.segment_id)
    .bind(&r.camera_id)
    .bind(&r.class)
    .bind(ms(r.delete_after))
    .bind(ms(r.deleted_at))
    .bind(r.reason.as_str())
    .bind(r.command_id.as_deref())
    .bind(&r.manifest_sha256)
    .bind(&r.ciphertext_sha256)
    .bind(&sha)
    .bind(&r.prev_receipt_sha256)
    .bind(envelope)
    .bind(ms(now))
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 1 {
        return Ok(Ok(false));
    }
    let kept: Option<(String,)> =
        sqlx::query_as("SELECT payload_sha256 FROM receipts WHERE agent = $1 AND sequence = $2")
            .bind(agent)
            .bind(r.sequence as i64)
            .fetch_optional(&mut *tx)
            .await?;
    Ok(settle(kept, &sha, || format!("receipt {}", r.sequence)))
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
