//! What a message from the fleet is, before and after it is kept: the
//! topic it came on, its id, the rules it is read by, what became of it,
//! and its row in `messages`.
//!
//! Invariant: a message's id is the SHA-256 of its topic and payload, so
//! the same bytes delivered again have the same id and are kept once.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::AnyConnection;

use sargs_core::seal::manifest;

use super::db::ms;

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
    pub fn as_str(self) -> &'static str {
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
pub(super) const STALE_STATUS: &str = "stale-status";

/// The message's id: SHA-256 over topic, a NUL and payload.
pub fn message_id(topic: &str, payload: &[u8]) -> String {
    let mut bytes = Vec::with_capacity(topic.len() + 1 + payload.len());
    bytes.extend_from_slice(topic.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(payload);
    manifest::sha256_hex(&bytes)
}

/// The message's own instant (`at`), in milliseconds.
pub(super) fn at_of(v: &Value) -> Option<i64> {
    v.get("at")
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| ms(t.with_timezone(&Utc)))
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn remember(
    tx: &mut AnyConnection,
    id: &str,
    agent: &str,
    kind: Topic,
    event: Option<&str>,
    v: &Value,
    text: &str,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let at = at_of(v);
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
