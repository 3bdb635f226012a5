//! Commands seen on the agents' command topics, and the agents' responses.
//!
//! HQ keeps every command signed by a key the agents trust, whoever issued
//! it (the service, `sargsctl`, a script), because the ledger needs what a
//! hold, request or restriction covers to tell a protected record from an
//! overdue one. A command signed by any other key is quarantined: agents
//! would reject it too.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::AnyConnection;

use sargs_core::command::{parse_payload, scope_json, Action, Scope, Target, Trust};
use sargs_core::seal::sign::Envelope;

use super::db::ms;
use super::refusal::{decode_key, refuse, Step};

/// What a command protects (`hold:ID`, `request:ID`, `restriction:ID`) and
/// over which scope, or which protection it ends.
pub fn protection(action: &Action) -> (Option<(String, &Scope)>, Option<String>) {
    match action {
        Action::HoldPlace { hold, scope, .. } => (Some((format!("hold:{hold}"), scope)), None),
        Action::RequestOpen { request, scope, .. } => {
            (Some((format!("request:{request}"), scope)), None)
        }
        Action::Restrict {
            restriction, scope, ..
        } => (Some((format!("restriction:{restriction}"), scope)), None),
        Action::HoldRelease { hold } => (None, Some(format!("hold:{hold}"))),
        Action::RequestClose { request } => (None, Some(format!("request:{request}"))),
        Action::Unrestrict { restriction } => (None, Some(format!("restriction:{restriction}"))),
        _ => (None, None),
    }
}

/// Keeps a signed command (payload bytes as published).
pub(super) async fn keep(
    tx: &mut AnyConnection,
    trust: &Trust,
    payload: &[u8],
    now: DateTime<Utc>,
) -> Step<bool> {
    let env = match Envelope::open(payload, None) {
        Ok(e) => e,
        Err(e) => return Ok(Err(refuse("bad-signature", format!("command: {e}")))),
    };
    if !decode_key(&env.key).is_some_and(|k| trust.trusts(&k)) {
        return Ok(Err(refuse(
            "untrusted-command",
            format!("command signed by {}, not a trusted command key", env.key),
        )));
    }
    let c = match parse_payload(&env.payload) {
        Ok(c) => c,
        Err(e) => return Ok(Err(refuse("malformed", format!("command: {e}")))),
    };
    let (protects, ends) = protection(&c.action);
    let target = match &c.target {
        Target::Agent(a) => a.clone(),
        Target::Fleet => "*".to_owned(),
    };
    let done = sqlx::query(
        "INSERT INTO commands (id, kind, issuer, target, issued_at, expires_at, protects, ends, scope, envelope, received_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (id) DO NOTHING",
    )
    .bind(&c.id)
    .bind(c.action.kind())
    .bind(&c.issuer)
    .bind(target)
    .bind(ms(c.issued_at))
    .bind(ms(c.expires_at))
    .bind(protects.as_ref().map(|(p, _)| p.clone()))
    .bind(ends)
    .bind(protects.map(|(_, s)| scope_json(s).to_string()))
    .bind(String::from_utf8_lossy(payload).into_owned())
    .bind(ms(now))
    .execute(&mut *tx)
    .await?;
    Ok(Ok(done.rows_affected() == 0))
}

/// Keeps an agent's response to a command.
pub(super) async fn response(
    tx: &mut AnyConnection,
    agent: &str,
    v: &Value,
    text: &str,
) -> Step<bool> {
    let s = |k: &str| v.get(k).and_then(Value::as_str);
    let (Some(id), Some(status)) = (s("command_id"), s("status")) else {
        return Ok(Err(refuse(
            "malformed",
            "a response without command_id or status",
        )));
    };
    let at = s("at")
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map_or(0, |t| ms(t.with_timezone(&Utc)));
    let done = sqlx::query(
        "INSERT INTO responses (command_id, agent, kind, status, code, reason, at, payload)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
    )
    .bind(id)
    .bind(agent)
    .bind(s("kind").unwrap_or(""))
    .bind(status)
    .bind(s("code"))
    .bind(s("reason"))
    .bind(at)
    .bind(text)
    .execute(&mut *tx)
    .await?;
    Ok(Ok(done.rows_affected() == 0))
}

/// Records a signed command in the ledger (before it is published), in a
/// transaction of its own; refuses one the agents would not trust.
pub async fn record(pool: &sqlx::AnyPool, trust: &Trust, bytes: &[u8]) -> anyhow::Result<()> {
    let mut tx = super::db::write(pool).await?;
    match keep(&mut tx, trust, bytes, Utc::now()).await? {
        Ok(_) => {
            tx.commit().await?;
            Ok(())
        }
        Err(r) => anyhow::bail!(
            "{} ({}): add its key to commands.trusted_keys",
            r.reason,
            r.code
        ),
    }
}

/// One command and where it stands with each agent it is for.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Issued {
    pub id: String,
    pub kind: String,
    pub issuer: String,
    pub target: String,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Agent → `applied` / `rejected: reason`.
    pub responses: std::collections::BTreeMap<String, String>,
    /// Agents that have not answered while it is still valid.
    pub waiting: Vec<String>,
}

/// Commands, newest first; with `pending`, only those still waiting for an
/// agent (offline agents keep theirs queued at the broker).
pub async fn list(pool: &sqlx::AnyPool, pending: bool) -> Result<Vec<Issued>, sqlx::Error> {
    type Columns = (String, String, String, String, i64, i64);
    let rows: Vec<Columns> = sqlx::query_as(
        "SELECT id, kind, issuer, target, issued_at, expires_at FROM commands ORDER BY issued_at DESC, id",
    )
    .fetch_all(pool)
    .await?;
    let answers: Vec<(String, String, String, Option<String>)> =
        sqlx::query_as("SELECT command_id, agent, status, reason FROM responses")
            .fetch_all(pool)
            .await?;
    let enrolled: Vec<(String,)> =
        sqlx::query_as("SELECT id FROM agents WHERE state = 'enrolled' ORDER BY id")
            .fetch_all(pool)
            .await?;
    let now = Utc::now();
    let mut out = Vec::new();
    for (id, kind, issuer, target, issued, expires) in rows {
        let responses: std::collections::BTreeMap<String, String> = answers
            .iter()
            .filter(|(c, ..)| *c == id)
            .map(|(_, agent, status, reason)| {
                let s = match reason {
                    Some(r) => format!("{status}: {r}"),
                    None => status.clone(),
                };
                (agent.clone(), s)
            })
            .collect();
        let targets: Vec<String> = if target == "*" {
            enrolled.iter().map(|(a,)| a.clone()).collect()
        } else {
            vec![target.clone()]
        };
        let waiting: Vec<String> = if super::db::at(expires) > now {
            targets
                .into_iter()
                .filter(|a| !responses.contains_key(a))
                .collect()
        } else {
            Vec::new()
        };
        if pending && waiting.is_empty() {
            continue;
        }
        out.push(Issued {
            id,
            kind,
            issuer,
            target,
            issued_at: super::db::at(issued),
            expires_at: super::db::at(expires),
            responses,
            waiting,
        });
    }
    Ok(out)
}
