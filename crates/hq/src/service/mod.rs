//! The HQ service (`sargs-hq`): keeps everything the fleet reports and
//! proves the fleet's retention (`docs/hq-service.md`).
//!
//! - [`config`] — `hq.toml`.
//! - [`db`] — the database (SQLite or PostgreSQL) and its migrations.
//! - [`collector`] — broker → database, acknowledged only once committed;
//!   [`prepare`] — what is known of a message before the database.
//! - [`ingest`] — a batch of messages checked and kept, or quarantined with
//!   a reason ([`message`]: what a message is; [`refusal`]: the reason;
//!   [`quarantine`]; [`rows`] and [`bulk`]: records and receipts written a
//!   batch at a time; [`ledger`]: the other events;
//!   [`status`]: status and telemetry).
//! - [`rollup`] and [`rollup_batch`] — the ledger's rollups, kept as records
//!   and receipts arrive, so that the report never reads every record.
//! - [`commands`] — the signed commands seen, and the agents' responses.
//! - [`agents`] — enrolment.
//! - [`heal`] — asking agents to publish again what a broker lost.
//! - [`issue`] — commands the service signs and publishes itself.
//! - [`alarms`] and [`check`] — what an operator must look at.
//! - [`report`] — the compliance report.
//!
//! The service holds one invariant above the others: what the broker handed
//! over is acknowledged only after it is durable in the database, so a crash
//! at any instant loses nothing and a redelivery counts nothing twice.

pub mod agents;
pub mod alarms;
pub mod api;
pub mod bulk;
pub mod check;
pub mod collector;
pub mod commands;
pub mod config;
pub mod db;
pub mod heal;
pub mod ingest;
pub mod issue;
pub mod ledger;
pub mod marks;
pub mod message;
pub mod prepare;
pub mod quarantine;
pub mod refusal;
pub mod report;
pub mod rollup;
pub mod rollup_batch;
pub mod rows;
pub mod status;
pub mod tokens;

use std::time::Duration;

use tokio::sync::watch;

/// Runs the service until `stop` turns true: the collector and the periodic
/// ledger check.
pub async fn run(cfg: config::HqConfig, stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    let db = db::Db::open(&cfg.database.url).await?;
    tracing::info!(database = %db::redact(&cfg.database.url), "database ready");
    let (client, eventloop) = collector::connect(&cfg)?;
    let issuer = match &cfg.command_key {
        Some(path) => Some(issue::Issuer {
            key: std::sync::Arc::new(
                sargs_core::seal::sign::DeviceKey::load(path)
                    .map_err(|e| anyhow::anyhow!("commands.key_file {}: {e}", path.display()))?,
            ),
            client: client.clone(),
            prefix: cfg.broker.prefix.clone(),
            trust: cfg.trust.clone(),
            pool: db.pool.clone(),
        }),
        None => None,
    };
    let checker = {
        let pool = db.pool.clone();
        let ledger = cfg.ledger.clone();
        let mut stop = stop.clone();
        let issuer = issuer.clone();
        tokio::spawn(async move {
            let every = Duration::from_secs(ledger.check_interval_s);
            loop {
                let now = chrono::Utc::now();
                if let Err(e) = check::run(&pool, &ledger, now).await {
                    tracing::warn!(error = %e, "ledger check");
                }
                if let Some(issuer) = &issuer {
                    // At most a day (checked when the config is read).
                    let grace = chrono::Duration::seconds(ledger.claim_grace_s.min(86_400) as i64);
                    if let Err(e) = heal::ask(&pool, issuer, now, grace).await {
                        tracing::warn!(error = %e, "asking agents to resend");
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stop.changed() => break,
                }
            }
        })
    };
    let api = if cfg.api.listen.is_empty() {
        None
    } else {
        let (api_cfg, pool, ledger, stop) = (
            cfg.api.clone(),
            db.pool.clone(),
            cfg.ledger.clone(),
            stop.clone(),
        );
        // Bound before the collector starts, so a port in use is an error
        // at start, not a silent absence.
        Some(tokio::spawn(async move {
            if let Err(e) = api::serve(&api_cfg, pool, issuer, ledger, stop).await {
                tracing::error!(error = %format!("{e:#}"), "API stopped");
            }
        }))
    };
    let tally = collector::run(&cfg, db, client, eventloop, stop).await?;
    checker.abort();
    if let Some(api) = api {
        let _ = tokio::time::timeout(Duration::from_secs(6), api).await;
    }
    tracing::info!(
        kept = tally.kept,
        duplicates = tally.duplicates,
        quarantined = tally.quarantined,
        "stopped"
    );
    Ok(())
}
