//! The HQ service (`sargs-hq`): keeps everything the fleet reports and
//! proves the fleet's retention (`docs/hq-service.md`).
//!
//! - [`config`] — `hq.toml`.
//! - [`db`] — the database (SQLite or PostgreSQL) and its migrations.
//! - [`collector`] — broker → database, acknowledged only once committed.
//! - [`ingest`] — one message checked and kept, or quarantined with a reason
//!   ([`refusal`]: the reason).
//! - [`commands`] — the signed commands seen, and the agents' responses.
//! - [`agents`] — enrolment.
//! - [`alarms`] and [`check`] — what an operator must look at.
//! - [`report`] — the compliance report.
//!
//! The service holds one invariant above the others: what the broker handed
//! over is acknowledged only after it is durable in the database, so a crash
//! at any instant loses nothing and a redelivery counts nothing twice.

pub mod agents;
pub mod alarms;
pub mod check;
pub mod collector;
pub mod commands;
pub mod config;
pub mod db;
pub mod ingest;
pub mod refusal;
pub mod report;

use std::time::Duration;

use tokio::sync::watch;

/// Runs the service until `stop` turns true: the collector and the periodic
/// ledger check.
pub async fn run(cfg: config::HqConfig, stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    let db = db::Db::open(&cfg.database.url).await?;
    tracing::info!(database = %db::redact(&cfg.database.url), "database ready");
    let checker = {
        let pool = db.pool.clone();
        let ledger = cfg.ledger.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let every = Duration::from_secs(ledger.check_interval_s);
            loop {
                if let Err(e) = check::run(&pool, &ledger, chrono::Utc::now()).await {
                    tracing::warn!(error = %e, "ledger check");
                }
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stop.changed() => break,
                }
            }
        })
    };
    let tally = collector::run(&cfg, db, stop).await?;
    checker.abort();
    tracing::info!(
        kept = tally.kept,
        duplicates = tally.duplicates,
        quarantined = tally.quarantined,
        "stopped"
    );
    Ok(())
}
