//! The collector: the fleet's messages from the broker into the database.
//!
//! Invariant (`docs/hq-service.md`, "Collector"): a message is acknowledged
//! to the broker only after the transaction that kept it (or quarantined it)
//! has committed. The session is persistent (MQTT 5, clean start off, a
//! session that never expires, manual acknowledgement), so a message that
//! was delivered but not acknowledged when the service died — kill -9, power
//! loss, a database that went away — is delivered again when it reconnects,
//! and [`ingest`](super::ingest) recognises what it already kept.
//!
//! Messages are committed in batches (what has arrived while the previous
//! batch was written, at most [`BATCH`]): one durable commit for many
//! messages. A batch the database refuses is retried message by message, and
//! a message the database refuses on its own three times is quarantined with
//! the database's reason, so one bad message cannot stop the fleet's.
//!
//! With `share_group`, the agents' topics are shared (`$share/{group}/…`):
//! each message goes to one replica. Status is subscribed without sharing,
//! because a shared subscription receives no retained message and the
//! retained status is how HQ learns of an agent that connected first;
//! every replica keeps it, and the id makes the second one a no-op.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::{Filter, Packet, Publish};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use rumqttc::{TlsConfiguration, Transport};
use tokio::sync::{mpsc, watch};

use sargs_core::link::TlsFiles;

use super::config::HqConfig;
use super::db::Db;
use super::ingest::{self, Batch, Outcome, Rules};
use super::prepare::Prepared;

/// Most messages committed in one transaction.
pub const BATCH: usize = 512;

/// The topic filters for `prefix`, shared through `group` if given.
pub fn filters(prefix: &str, group: Option<&str>) -> Vec<String> {
    let shared = |f: String| match group {
        Some(g) => format!("$share/{g}/{f}"),
        None => f,
    };
    let mut v = vec![format!("{prefix}/agents/+/status")];
    for kind in ["telemetry", "events", "responses", "commands"] {
        v.push(shared(format!("{prefix}/agents/+/{kind}")));
    }
    v.push(shared(format!("{prefix}/fleet/commands")));
    v
}

/// Counts of what the collector did, for logs and tests.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    pub kept: u64,
    pub duplicates: u64,
    pub quarantined: u64,
}

/// The service's MQTT client (nothing is sent until [`run`] polls it).
/// Fails only for what cannot be retried (a TLS configuration that cannot
/// be read, a password file that is missing).
pub fn connect(cfg: &HqConfig) -> anyhow::Result<(AsyncClient, EventLoop)> {
    let b = &cfg.broker;
    let (tls, host, port) =
        sargs_core::link::parse_url(&b.url).map_err(|e| anyhow::anyhow!("broker.url: {e}"))?;
    let mut o = MqttOptions::new(&b.client_id, host, port);
    o.set_keep_alive(Duration::from_secs(b.keep_alive_s))
        .set_clean_start(false)
        // 0xFFFFFFFF: the session never expires; what was not acknowledged
        // waits for this client id.
        .set_session_expiry_interval(Some(u32::MAX))
        .set_manual_acks(true)
        // Larger than any payload it keeps, so that an oversized message is
        // received and quarantined rather than breaking the connection (and
        // coming back at every reconnect).
        .set_max_packet_size(Some(64 << 20))
        .set_receive_maximum(Some(BATCH as u16));
    if tls {
        let ca = b
            .ca_file
            .clone()
            .ok_or_else(|| anyhow::anyhow!("broker.ca_file is required for mqtts://"))?;
        let tls = sargs_core::link::client_config(&TlsFiles {
            ca,
            client_cert: b.client_cert.clone(),
            client_key: b.client_key.clone(),
        })
        .map_err(|e| anyhow::anyhow!("broker TLS: {e}"))?;
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(tls),
        )));
    }
    if let Some(user) = &b.username {
        let password = cfg.password().map_err(anyhow::Error::msg)?;
        o.set_credentials(user, password.unwrap_or_default());
    }
    Ok(AsyncClient::new(o, BATCH))
}

/// Runs until `stop` turns true: subscribes at every connection, keeps and
/// acknowledges.
///
/// Three tasks, so that no wait can block another: this one only polls the
/// event loop (which is what sends the acknowledgements out) and hands
/// each message on without waiting; a second prepares messages (hash,
/// JSON, signatures: [`prepare`](super::prepare)); a third commits them in
/// batches and acknowledges them. Nothing here bounds the hand-over
/// queue: the broker does, since it sends no more than the session's
/// Receive Maximum (or its own `max_inflight_messages`) of messages not yet
/// acknowledged. An event loop that waited for the committing task would
/// deadlock with it: that task waits for room in the client's request
/// queue, which only a polled event loop empties.
pub async fn run(
    cfg: &HqConfig,
    db: Db,
    client: AsyncClient,
    mut eventloop: EventLoop,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<Tally> {
    let b = &cfg.broker;
    let (incoming, mut to_prepare) = mpsc::unbounded_channel::<Publish>();
    let (prepared, to_keep) = mpsc::channel::<(Publish, Prepared)>(BATCH * 2);
    let rules = Rules {
        prefix: b.prefix.clone(),
        max_payload_bytes: b.max_payload_bytes,
        trust: cfg.trust.clone(),
    };
    let preparer = {
        let rules = rules.clone();
        tokio::spawn(async move {
            while let Some(p) = to_prepare.recv().await {
                let topic = String::from_utf8_lossy(&p.topic).into_owned();
                let ready = Prepared::new(&rules, &topic, &p.payload);
                if prepared.send((p, ready)).await.is_err() {
                    break;
                }
            }
        })
    };
    let mut worker = tokio::spawn(keep_loop(db, rules, to_keep, client.clone(), stop.clone()));
    let filters = filters(&b.prefix, b.share_group.as_deref());
    let mut delay = Duration::from_secs(1);
    let mut stopping = false;
    // Polled until the committing task has finished, so that its last
    // acknowledgements go out.
    let tally = loop {
        let polled = tokio::select! {
            t = &mut worker => break t.unwrap_or_default(),
            _ = stop.changed(), if !stopping => {
                stopping = true;
                continue;
            }
            p = eventloop.poll() => p,
        };
        match polled {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                delay = Duration::from_secs(1);
                tracing::info!(broker = %b.url, "connected");
                let subs = filters.iter().map(|f| Filter::new(f, QoS::AtLeastOnce));
                if let Err(e) = client.subscribe_many(subs).await {
                    tracing::error!(error = %e, "subscribing");
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                // Once stopping, what arrives is left unacknowledged: the
                // broker delivers it again.
                if !stopping {
                    let _ = incoming.send(p);
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?delay, "broker link");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    t = &mut worker => break t.unwrap_or_default(),
                }
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    };
    preparer.abort();
    // Acknowledgements queued by the worker go out before the disconnect.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = client.disconnect().await;
        while let Ok(ev) = eventloop.poll().await {
            if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                break;
            }
        }
    })
    .await;
    Ok(tally)
}

/// Commits batches and acknowledges them once committed, until `stop`.
async fn keep_loop(
    db: Db,
    rules: Rules,
    mut rx: mpsc::Receiver<(Publish, Prepared)>,
    client: AsyncClient,
    mut stop: watch::Receiver<bool>,
) -> Tally {
    let mut tally = Tally::default();
    loop {
        let first = tokio::select! {
            biased;
            _ = stop.changed() => break,
            first = rx.recv() => match first {
                Some(f) => f,
                None => break,
            },
        };
        if *stop.borrow() {
            break;
        }
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let Some(outcomes) = commit_with_retry(&db, &rules, &batch, &stop).await else {
            // Stopping with the batch uncommitted: not acknowledged, so the
            // broker delivers it again.
            break;
        };
        for o in &outcomes {
            match o {
                Outcome::Kept => tally.kept += 1,
                Outcome::Duplicate => tally.duplicates += 1,
                Outcome::Quarantined { .. } => tally.quarantined += 1,
            }
        }
        for (p, _) in &batch {
            if let Err(e) = client.ack(p).await {
                tracing::warn!(error = %e, "acknowledging (the broker will deliver it again)");
            }
        }
    }
    tally
}

/// Commits `batch` in one transaction, or message by message if that fails;
/// retries while the database is unreachable. `None` when asked to stop.
async fn commit_with_retry(
    db: &Db,
    rules: &Rules,
    batch: &[(Publish, Prepared)],
    stop: &watch::Receiver<bool>,
) -> Option<Vec<Outcome>> {
    let mut delay = Duration::from_millis(200);
    loop {
        match commit(db, rules, batch).await {
            Ok(o) => return Some(o),
            Err(e) if batch.len() > 1 => {
                tracing::warn!(error = %e, messages = batch.len(), "batch refused; one by one");
                let mut all = Vec::with_capacity(batch.len());
                for p in batch {
                    all.push(one_by_one(db, rules, p, stop).await?);
                }
                return Some(all);
            }
            Err(e) => {
                tracing::error!(error = %e, retry_in = ?delay, "database");
            }
        }
        if *stop.borrow() {
            return None;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

/// One message alone; after three refusals by a reachable database, it is
/// quarantined with the database's reason.
async fn one_by_one(
    db: &Db,
    rules: &Rules,
    one: &(Publish, Prepared),
    stop: &watch::Receiver<bool>,
) -> Option<Outcome> {
    let mut refusals = 0;
    let mut delay = Duration::from_millis(200);
    loop {
        match commit(db, rules, std::slice::from_ref(one)).await {
            Ok(mut o) => return o.pop(),
            Err(
                e @ (sqlx::Error::Database(_) | sqlx::Error::Decode(_) | sqlx::Error::Encode(_)),
            ) if refusals >= 2 => {
                let p = &one.1;
                let reason = format!("the database refused it: {e}");
                match ingest::quarantine_alone(&db.pool, &p.topic, &p.payload, &reason).await {
                    Ok(()) => {
                        return Some(Outcome::Quarantined {
                            code: "database",
                            reason,
                        })
                    }
                    Err(e) => tracing::error!(error = %e, "quarantining"),
                }
            }
            Err(sqlx::Error::Database(e)) => {
                refusals += 1;
                tracing::warn!(error = %e, "database refused a message");
            }
            Err(e) => tracing::error!(error = %e, retry_in = ?delay, "database"),
        }
        if *stop.borrow() {
            return None;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

async fn commit(
    db: &Db,
    rules: &Rules,
    batch: &[(Publish, Prepared)],
) -> Result<Vec<Outcome>, sqlx::Error> {
    let mut tx = super::db::write(&db.pool).await?;
    let now = chrono::Utc::now();
    let prepared: Vec<&Prepared> = batch.iter().map(|(_, p)| p).collect();
    let mut keeping = Batch::begin(&mut tx, &prepared).await?;
    for p in prepared {
        keeping.ingest(&mut tx, rules, p, now).await?;
    }
    let out = keeping.finish(&mut tx, now).await?;
    tx.commit().await?;
    Ok(out)
}
