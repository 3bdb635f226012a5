//! The HTTP JSON API (`docs/hq-service.md`, "API"): what the ledger knows,
//! and commands issued through the service.
//!
//! Every route needs `Authorization: Bearer <token>` ([`tokens`](super::tokens));
//! the role is checked on the server for every write, and every command is
//! issued with the token's owner and role as its signed `issuer`. A
//! deadline still pending (a clock-faulted record, `rows::PENDING_MS`) is
//! listed as `deadline_pending`, never as a date. The API
//! listens on 127.0.0.1 by default; anywhere else only over HTTPS (rustls),
//! which the config check enforces.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::AnyPool;

use super::config::{Api, Ledger};
use super::db::{at, ms};
use super::issue::Issuer;
use super::tokens::{self, Caller};
use super::{agents, alarms, commands, ingest, report};

#[derive(Clone)]
struct Ctx {
    pool: AnyPool,
    issuer: Option<Issuer>,
    ledger: Ledger,
}

/// An API error: its status and a reason in JSON.
#[derive(Debug)]
enum ApiError {
    Unauthorized,
    Forbidden(String),
    BadRequest(String),
    Unavailable(String),
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, reason) = match self {
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "a valid token is required (Authorization: Bearer …)".to_owned(),
            ),
            ApiError::Forbidden(r) => (StatusCode::FORBIDDEN, r),
            ApiError::BadRequest(r) => (StatusCode::BAD_REQUEST, r),
            ApiError::Unavailable(r) => (StatusCode::SERVICE_UNAVAILABLE, r),
            ApiError::Internal(r) => (StatusCode::INTERNAL_SERVER_ERROR, r),
        };
        (status, Json(json!({ "error": reason }))).into_response()
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        tracing::error!(error = %e, "API: database");
        ApiError::Internal("the database failed; see the service's log".into())
    }
}

type Reply = Result<Json<Value>, ApiError>;

async fn caller(ctx: &Ctx, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(ApiError::Unauthorized)?;
    tokens::check(&ctx.pool, token.trim())
        .await?
        .ok_or(ApiError::Unauthorized)
}

fn to_json<T: serde::Serialize>(v: T) -> Reply {
    serde_json::to_value(v)
        .map(Json)
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// The router, for the server and for tests.
fn router(ctx: Ctx) -> Router {
    Router::new()
        .route("/api/v1/fleet", get(fleet))
        .route("/api/v1/agents", get(agent_list))
        .route("/api/v1/records", get(records))
        .route("/api/v1/alarms", get(alarm_list))
        .route("/api/v1/quarantine", get(quarantine))
        .route("/api/v1/report", get(compliance))
        .route("/api/v1/holds", get(holds))
        .route("/api/v1/requests", get(requests))
        .route("/api/v1/commands", get(command_list).post(issue))
        .with_state(Arc::new(ctx))
}

/// Serves the API until `stop`.
pub async fn serve(
    api: &Api,
    pool: AnyPool,
    issuer: Option<Issuer>,
    ledger: Ledger,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let addr: SocketAddr = api.listen.parse()?;
    let app = router(Ctx {
        pool,
        issuer,
        ledger,
    });
    match (&api.tls_cert, &api.tls_key) {
        (Some(cert), Some(key)) => {
            let config = tls_config(cert, key)?;
            let handle = axum_server::Handle::new();
            let h = handle.clone();
            tokio::spawn(async move {
                let _ = stop.changed().await;
                h.graceful_shutdown(Some(std::time::Duration::from_secs(5)));
            });
            tracing::info!(%addr, "API (HTTPS)");
            axum_server::bind_rustls(
                addr,
                axum_server::tls_rustls::RustlsConfig::from_config(config),
            )
            .handle(handle)
            .serve(app.into_make_service())
            .await?;
        }
        _ => {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            tracing::info!(addr = %listener.local_addr()?, "API (HTTP, loopback)");
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.changed().await;
                })
                .await?;
        }
    }
    Ok(())
}

fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("api.tls_cert {}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow::anyhow!("api.tls_key {}: {e}", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    Ok(Arc::new(config))
}

async fn fleet(State(ctx): State<Arc<Ctx>>, h: HeaderMap) -> Reply {
    caller(&ctx, &h).await?;
    let list = agents::list(&ctx.pool).await?;
    let open = alarms::list(&ctx.pool, false).await?;
    let telemetry: Vec<(String, i64, String)> =
        sqlx::query_as("SELECT agent, at, payload FROM telemetry")
            .fetch_all(&ctx.pool)
            .await?;
    let telemetry: BTreeMap<String, (i64, Value)> = telemetry
        .into_iter()
        .map(|(a, t, p)| (a, (t, serde_json::from_str(&p).unwrap_or(Value::Null))))
        .collect();
    let out: Vec<Value> = list
        .into_iter()
        .map(|a| {
            let alarms: Vec<&alarms::Alarm> = open
                .iter()
                .filter(|x| x.agent.as_deref() == Some(a.id.as_str()))
                .collect();
            let t = telemetry.get(&a.id);
            json!({
                "agent": a,
                "open_alarms": alarms,
                "telemetry_at": t.map(|(at_ms, _)| at(*at_ms)),
                "telemetry": t.map(|(_, v)| v),
            })
        })
        .collect();
    Ok(Json(Value::Array(out)))
}

async fn agent_list(State(ctx): State<Arc<Ctx>>, h: HeaderMap) -> Reply {
    caller(&ctx, &h).await?;
    to_json(agents::list(&ctx.pool).await?)
}

#[derive(Deserialize)]
struct RecordQuery {
    agent: Option<String>,
    camera: Option<String>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    limit: Option<i64>,
}

async fn records(State(ctx): State<Arc<Ctx>>, h: HeaderMap, Query(q): Query<RecordQuery>) -> Reply {
    caller(&ctx, &h).await?;
    type Columns = (
        String,
        String,
        i64,
        i64,
        String,
        i64,
        Option<String>,
        Option<i64>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    // Walks the primary key (agent, camera, sequence) in order, from the
    // agent and camera asked for, and stops at the limit: the agent and
    // camera are matched only when given (so that they seek; a camera
    // without its agent only filters, `|| ''`, or SQLite would read every
    // record and sort them), the span only filters (`+`: not by
    // `records_start`, which would read every record before `to` and sort
    // them). The deletion is the record's own (`rollup.rs`), no join; where
    // the record is in the evidence store is one lookup by the same key.
    let (agent, camera) = (q.agent.unwrap_or_default(), q.camera.unwrap_or_default());
    let mut sql = String::from(
        "SELECT r.segment_id, r.kind, r.start_ms, r.end_ms, r.class, r.delete_after_ms,
                r.gap_reason, r.deleted_at_ms, r.deletion_reason, r.ciphertext_sha256,
                o.store, o.manifest_key, o.media_key
         FROM records r LEFT JOIN objects o
           ON o.agent = r.agent AND o.camera = r.camera AND o.sequence = r.sequence
         WHERE +r.end_ms >= $1 AND +r.start_ms < $2",
    );
    let mut n = 2;
    let camera_term = if agent.is_empty() {
        "r.camera || ''"
    } else {
        "r.camera"
    };
    for (term, value) in [("r.agent", &agent), (camera_term, &camera)] {
        if !value.is_empty() {
            n += 1;
            sql.push_str(&format!(" AND {term} = ${n}"));
        }
    }
    sql.push_str(&format!(
        " ORDER BY r.agent, r.camera, r.sequence LIMIT ${}",
        n + 1
    ));
    let mut query = sqlx::query_as::<_, Columns>(sqlx::AssertSqlSafe(sql))
        .bind(q.from.map_or(i64::MIN, ms))
        .bind(q.to.map_or(i64::MAX, ms));
    for value in [&agent, &camera] {
        if !value.is_empty() {
            query = query.bind(value.clone());
        }
    }
    let rows: Vec<Columns> = query
        .bind(q.limit.unwrap_or(1000).clamp(1, 10_000))
        .fetch_all(&ctx.pool)
        .await?;
    let out: Vec<Value> = rows
        .into_iter()
        .map(
            |(id, kind, s, e, class, deadline, gap, deleted, reason, sha, store, mkey, key)| {
                // Where it is in the evidence store, as its agent verified it.
                let offload = store
                    .map(|store| json!({"store": store, "manifest_key": mkey, "media_key": key}));
                json!({
                    "segment_id": id, "kind": kind, "start": at(s), "end": at(e), "class": class,
                    "delete_after": deadline_shown(deadline),
                    "deadline_pending": pending(deadline), "gap_reason": gap, "ciphertext_sha256": sha,
                    "deleted_at": deleted.map(at), "deletion_reason": reason, "offload": offload,
                })
            },
        )
        .collect();
    Ok(Json(Value::Array(out)))
}

/// Whether a record's deadline waits for its agent's trusted clock (a
/// record sealed with a clock fault before its receipt arrives): it is
/// shown as pending, never as the sentinel date.
fn pending(deadline_ms: i64) -> bool {
    deadline_ms == super::rows::PENDING_MS
}

/// A record's deadline as listed: its instant, or null while pending.
fn deadline_shown(deadline_ms: i64) -> Option<DateTime<Utc>> {
    (!pending(deadline_ms)).then(|| at(deadline_ms))
}

#[derive(Deserialize)]
struct AllQuery {
    #[serde(default)]
    all: bool,
    #[serde(default)]
    pending: bool,
}

async fn alarm_list(State(ctx): State<Arc<Ctx>>, h: HeaderMap, Query(q): Query<AllQuery>) -> Reply {
    caller(&ctx, &h).await?;
    to_json(alarms::list(&ctx.pool, q.all).await?)
}

async fn quarantine(State(ctx): State<Arc<Ctx>>, h: HeaderMap) -> Reply {
    caller(&ctx, &h).await?;
    to_json(ingest::quarantined(&ctx.pool).await?)
}

#[derive(Deserialize)]
struct ReportQuery {
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    agent: Option<String>,
    at: Option<DateTime<Utc>>,
}

async fn compliance(
    State(ctx): State<Arc<Ctx>>,
    h: HeaderMap,
    Query(q): Query<ReportQuery>,
) -> Reply {
    caller(&ctx, &h).await?;
    let now = q.at.unwrap_or_else(Utc::now);
    let r = report::make(
        &ctx.pool,
        &report::Query {
            from: q.from.unwrap_or(DateTime::<Utc>::MIN_UTC),
            to: q.to.unwrap_or(now),
            agent: q.agent,
            now,
            bound_ms: ctx.ledger.deletion_bound_s as i64 * 1000,
            grace_ms: ctx.ledger.grace_hours as i64 * 3_600_000,
        },
    )
    .await?;
    to_json(r)
}

async fn of_kind(ctx: &Ctx, prefix: &str) -> Reply {
    let list: Vec<commands::Issued> = commands::list(&ctx.pool, false)
        .await?
        .into_iter()
        .filter(|c| c.kind.starts_with(prefix))
        .collect();
    to_json(list)
}

async fn holds(State(ctx): State<Arc<Ctx>>, h: HeaderMap) -> Reply {
    caller(&ctx, &h).await?;
    of_kind(&ctx, "hold.").await
}

async fn requests(State(ctx): State<Arc<Ctx>>, h: HeaderMap) -> Reply {
    caller(&ctx, &h).await?;
    of_kind(&ctx, "request.").await
}

async fn command_list(
    State(ctx): State<Arc<Ctx>>,
    h: HeaderMap,
    Query(q): Query<AllQuery>,
) -> Reply {
    caller(&ctx, &h).await?;
    to_json(commands::list(&ctx.pool, q.pending).await?)
}

/// A command to issue: its target, kind and arguments as on the wire
/// (`docs/commands.md`), and how long it stays valid.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewCommand {
    target: Value,
    kind: String,
    #[serde(default)]
    args: Value,
    #[serde(default = "default_valid_hours")]
    valid_hours: i64,
}

fn default_valid_hours() -> i64 {
    24 * 7
}

async fn issue(
    State(ctx): State<Arc<Ctx>>,
    h: HeaderMap,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let who = caller(&ctx, &h).await?;
    let new: NewCommand = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("the body: {e}")))?;
    if !who.role.may_issue(&new.kind) {
        return Err(ApiError::Forbidden(format!(
            "role {} may not issue {}",
            who.role.as_str(),
            new.kind
        )));
    }
    let issuer = ctx.issuer.as_ref().ok_or_else(|| {
        ApiError::Unavailable("the service has no command key (commands.key_file)".into())
    })?;
    let now = Utc::now();
    let id = crate::verbs::random_id("c-").map_err(|e| ApiError::Internal(e.to_string()))?;
    let payload = json!({
        "v": sargs_core::command::COMMAND_VERSION,
        "id": id,
        "kind": new.kind,
        "issued_at": now,
        "expires_at": now + chrono::Duration::hours(new.valid_hours),
        "target": new.target,
        "issuer": format!("{} ({}, token {})", who.owner, who.role.as_str(), who.token),
        "args": if new.args.is_null() { json!({}) } else { new.args },
    });
    let cmd = sargs_core::command::parse_payload(&payload.to_string())
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let cmd = issuer
        .send(cmd)
        .await
        .map_err(|e| ApiError::Internal(format!("{e:#}")))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"id": cmd.id, "kind": cmd.action.kind(), "issuer": cmd.issuer})),
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_pending_deadline_is_listed_as_pending_not_as_a_date() {
        let pending = super::super::rows::PENDING_MS;
        assert_eq!(super::deadline_shown(pending), None);
        assert!(super::pending(pending));
        let t = 1_710_072_000_000;
        assert_eq!(super::deadline_shown(t), Some(super::at(t)));
        assert!(!super::pending(t));
    }
}
