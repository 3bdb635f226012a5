//! Healing what a broker lost: HQ finds the holes in each enrolled agent's
//! numbering — a camera's records, the agent's receipts — and asks the
//! agent, with a signed `resend`, to publish again from its own files
//! everything from the first hole on. A hole is a run of numbers below the
//! highest the ledger holds (`ledger_holes`, `ledger_receipt_holes`), or
//! the end of a numbering: the numbers above the ledger's highest up to
//! what the agent's telemetry says its broker acknowledged
//! (`ledger_claims`), once that claim is older than `ledger.claim_grace_s`
//! — a broker that lost the last records of a burst leaves no later record
//! to show the hole. Each hole is asked about once
//! while the agent has applied the request or may still answer it
//! (`heal_requests`): what the agent no longer has stays named as missing
//! in the report, rather than being asked for at every check; a request
//! the agent rejected (its clock, say) is asked again.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use sqlx::AnyPool;

use sargs_core::command::{Action, Target};

use super::db::ms;
use super::issue::Issuer;

/// How long after a rejected or unanswered request a hole is asked about
/// again.
const REASK: Duration = Duration::minutes(10);

/// The first missing sequence of each camera of `agent`, and of its
/// receipts (`None` without holes): the lowest hole of each numbering, from
/// the holes the collector keeps (`ledger_holes`, `ledger_receipt_holes`)
/// and the claims heard before `claimed_before` that the ledger's highest
/// number has not reached (`ledger_claims`).
pub async fn holes(
    pool: &AnyPool,
    agent: &str,
    claimed_before: DateTime<Utc>,
) -> Result<(BTreeMap<String, u64>, Option<u64>), sqlx::Error> {
    let first: Vec<(String, i64)> = sqlx::query_as(
        "SELECT camera, MIN(first_seq) FROM ledger_holes WHERE agent = $1 GROUP BY camera",
    )
    .bind(agent)
    .fetch_all(pool)
    .await?;
    // An aggregate without GROUP BY: one row, NULL when there is no hole.
    let receipts: Option<(Option<i64>,)> =
        sqlx::query_as("SELECT MIN(first_seq) FROM ledger_receipt_holes WHERE agent = $1")
            .bind(agent)
            .fetch_optional(pool)
            .await?;
    // Claims past the ledger's end: asked from the number after its highest.
    let tails: Vec<(String, i64)> = sqlx::query_as(
        "SELECT c.camera, COALESCE(l.max_sequence, 0) FROM ledger_claims c
         LEFT JOIN ledger_cameras l ON l.agent = c.agent AND l.camera = c.camera
         WHERE c.agent = $1 AND c.camera <> '' AND c.claimed_at <= $2
           AND c.sequence > COALESCE(l.max_sequence, 0)",
    )
    .bind(agent)
    .bind(ms(claimed_before))
    .fetch_all(pool)
    .await?;
    let receipt_tail: Option<(i64,)> = sqlx::query_as(
        "SELECT COALESCE(l.max_sequence, 0) FROM ledger_claims c
         LEFT JOIN ledger_receipt_chains l ON l.agent = c.agent
         WHERE c.agent = $1 AND c.camera = '' AND c.claimed_at <= $2
           AND c.sequence > COALESCE(l.max_sequence, 0)",
    )
    .bind(agent)
    .bind(ms(claimed_before))
    .fetch_optional(pool)
    .await?;
    let number = |n: i64| u64::try_from(n).ok().map(|n| n.max(1));
    let mut cameras: BTreeMap<String, u64> = BTreeMap::new();
    let below = first.into_iter().filter_map(|(c, n)| Some((c, number(n)?)));
    let after = tails
        .into_iter()
        .filter_map(|(c, top)| Some((c, number(top.checked_add(1)?)?)));
    for (camera, from) in below.chain(after) {
        let e = cameras.entry(camera).or_insert(from);
        *e = (*e).min(from);
    }
    let receipts = [
        receipts.and_then(|(n,)| n).and_then(number),
        receipt_tail.and_then(|(top,)| number(top.checked_add(1)?)),
    ]
    .into_iter()
    .flatten()
    .min();
    Ok((cameras, receipts))
}

/// Asks every enrolled agent with a hole not asked about before to resend.
/// `claim_grace`: how long a claimed number may be missing before it is
/// asked for (`ledger.claim_grace_s`).
pub async fn ask(
    pool: &AnyPool,
    issuer: &Issuer,
    now: DateTime<Utc>,
    claim_grace: Duration,
) -> anyhow::Result<()> {
    let agents: Vec<(String,)> =
        sqlx::query_as("SELECT id FROM agents WHERE state = 'enrolled' ORDER BY id")
            .fetch_all(pool)
            .await?;
    for (agent,) in agents {
        let (cameras, receipts) = holes(pool, &agent, now - claim_grace).await?;
        let mut wanted: Vec<(String, u64)> = cameras.into_iter().collect();
        if let Some(r) = receipts {
            wanted.push(("receipts".into(), r));
        }
        let mut new = Vec::new();
        for (what, from) in wanted {
            // Asked already: applied, still valid and unanswered, or asked
            // within REASK. A resend the agent rejected, or one that
            // expired unanswered, is asked again after that.
            let asked: Option<(i64,)> = sqlx::query_as(
                "SELECT 1 FROM heal_requests h JOIN commands c ON c.id = h.command_id
                 LEFT JOIN responses r ON r.command_id = c.id AND r.agent = h.agent
                 WHERE h.agent = $1 AND h.what = $2 AND h.from_sequence = $3
                   AND (r.status = 'applied' OR (r.status IS NULL AND c.expires_at > $4)
                        OR h.asked_at > $5)",
            )
            .bind(&agent)
            .bind(&what)
            .bind(from as i64)
            .bind(ms(now))
            .bind(ms(now - REASK))
            .fetch_optional(pool)
            .await?;
            if asked.is_none() {
                new.push((what, from));
            }
        }
        if new.is_empty() {
            continue;
        }
        let receipts_from = new.iter().find(|(w, _)| w == "receipts").map(|(_, n)| *n);
        let records_from: BTreeMap<String, u64> = new
            .iter()
            .filter(|(w, _)| w != "receipts")
            .cloned()
            .collect();
        let cmd = issuer
            .issue(
                Target::Agent(agent.clone()),
                "sargs-hq (ledger healing)",
                Action::Resend {
                    receipts_from,
                    records_from,
                },
                Duration::days(7),
            )
            .await?;
        for (what, from) in new {
            sqlx::query(
                "INSERT INTO heal_requests (agent, what, from_sequence, command_id, asked_at)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (agent, what, from_sequence)
                 DO UPDATE SET command_id = excluded.command_id, asked_at = excluded.asked_at",
            )
            .bind(&agent)
            .bind(&what)
            .bind(from as i64)
            .bind(&cmd.id)
            .bind(ms(now))
            .execute(pool)
            .await?;
        }
    }
    Ok(())
}
