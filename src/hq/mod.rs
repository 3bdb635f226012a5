//! The HQ link over MQTT: status, telemetry and events out; signed commands
//! in, one response each.
//!
//! Invariants:
//! - **Never in the way.** The link runs on its own thread; cameras and the
//!   sweeper never wait for it, and a broker that is down only delays delivery.
//! - **Durable before acknowledged.** A command is applied (journaled and
//!   committed by the retention engine) and its response queued in the
//!   durable [`outbox`] before the command's PUBACK goes to the broker
//!   (manual acknowledgement).
//! - **Nothing HQ must receive is lost.** Receipts, responses and alarms go
//!   through the outbox: one in flight at a time, in order, removed only on
//!   the broker's PUBACK for that very message; on reconnect the unacknowledged
//!   one is sent again (at least once; ids make duplicates harmless).
//!   Telemetry is QoS 0 and dropped while offline (latest wins).
//! - **Presence.** A retained `online` status is published on every connect;
//!   the broker publishes the retained Last Will `offline` if the agent dies;
//!   a clean stop publishes `offline` itself.
//!
//! - **Commands are not missed.** The session is persistent (clean session
//!   off, client id `sargs-<agent>`): the broker queues commands while the
//!   agent is offline and redelivers one it could not apply.
//!
//! Reconnects back off exponentially (1 s doubling to 60 s, ±25 % jitter).
//! MQTT 3.1.1 (every broker speaks it); TLS is rustls with the configured CA
//! and optional client certificate.

pub mod client;
pub mod messages;
pub mod outbox;
pub mod telemetry;
pub mod tls;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, Event, LastWill, MqttOptions, Outgoing, Packet, QoS,
    TlsConfiguration, Transport,
};
use tokio_util::sync::CancellationToken;

use crate::config::LinkSettings;
use crate::retention::Retention;
use messages::Topics;
use outbox::Outbox;
use telemetry::Telemetry;

/// Why the link could not start.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("hq TLS: {0}")]
    Tls(String),
    #[error("starting the link thread: {0}")]
    Thread(std::io::Error),
}

/// A running link.
pub struct Link {
    stop: CancellationToken,
    thread: Option<JoinHandle<()>>,
}

/// What a QoS 1 publish was, to match its PUBACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    Status,
    Outbox(u64),
}

impl Link {
    /// Connects (in the background) and keeps connecting until stopped.
    pub fn start(
        settings: &LinkSettings,
        agent: &str,
        retention: Arc<Retention>,
        outbox: Arc<Outbox>,
        telemetry: Telemetry,
    ) -> Result<Link, LinkError> {
        let topics = Topics::new(&settings.prefix, agent);
        let mut opts = MqttOptions::new(format!("sargs-{agent}"), &settings.host, settings.port);
        opts.set_keep_alive(settings.keep_alive)
            // A persistent session: the broker keeps the subscriptions and
            // queues QoS 1 commands while the agent is away, and redelivers a
            // command the agent could not apply (left unacknowledged).
            .set_clean_session(false)
            .set_manual_acks(true)
            .set_max_packet_size(16 << 20, 16 << 20)
            .set_last_will(LastWill::new(
                &topics.status,
                messages::status(agent, false, crate::clock::now()),
                QoS::AtLeastOnce,
                true,
            ));
        if let Some(files) = &settings.tls {
            let cfg = tls::client_config(files).map_err(LinkError::Tls)?;
            opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                Arc::new(cfg),
            )));
        }
        if let Some(user) = &settings.username {
            opts.set_credentials(user, settings.password.clone().unwrap_or_default());
        }
        let stop = CancellationToken::new();
        let task = Task {
            agent: agent.to_owned(),
            topics,
            retention,
            outbox,
            telemetry,
            interval: settings.telemetry_interval,
            stop: stop.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("hq-link".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(task.run(opts)),
                    Err(e) => tracing::error!(error = %e, "hq link: no runtime"),
                }
            })
            .map_err(LinkError::Thread)?;
        Ok(Link {
            stop,
            thread: Some(thread),
        })
    }

    /// Publishes `offline`, disconnects and waits for the thread (≤ ~3 s).
    pub fn stop(mut self) {
        self.stop.cancel();
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("hq link thread panicked");
            }
        }
    }
}

impl Drop for Link {
    /// A link dropped without `stop` (start-up failed later) still ends.
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

struct Task {
    agent: String,
    topics: Topics,
    retention: Arc<Retention>,
    outbox: Arc<Outbox>,
    telemetry: Telemetry,
    interval: Duration,
    stop: CancellationToken,
}

/// Capped exponential back-off with ±25 % jitter.
fn jittered(d: Duration) -> Duration {
    let mut b = [0u8; 2];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    let r = f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX); // 0..=1
    d.mul_f64(0.75 + 0.5 * r)
}

impl Task {
    async fn run(mut self, opts: MqttOptions) {
        let (client, mut eventloop) = AsyncClient::new(opts, 64);
        // Small request/response messages: no Nagle delay.
        let mut net = rumqttc::NetworkOptions::new();
        net.set_tcp_nodelay(true);
        eventloop.set_network_options(net);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Event, String>>(64);
        let poller = tokio::spawn(async move {
            let mut backoff = Duration::from_secs(1);
            loop {
                match eventloop.poll().await {
                    Ok(ev) => {
                        if matches!(ev, Event::Incoming(Packet::ConnAck(_))) {
                            backoff = Duration::from_secs(1);
                        }
                        if tx.send(Ok(ev)).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        if tx.send(Err(e.to_string())).await.is_err() {
                            break;
                        }
                        tokio::time::sleep(jittered(backoff)).await;
                        backoff = (backoff * 2).min(Duration::from_secs(60));
                    }
                }
            }
        });
        let mut connected = false;
        let mut tags: VecDeque<Tag> = VecDeque::new();
        let mut by_pkid: HashMap<u16, Tag> = HashMap::new();
        let mut inflight: Option<u64> = None;
        let mut tick = tokio::time::interval(self.interval);
        let mut offline_sent = false;
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                ev = rx.recv() => match ev {
                    None => break,
                    Some(Err(e)) => {
                        if connected {
                            tracing::warn!(error = %e, "hq link lost; reconnecting");
                        } else {
                            tracing::debug!(error = %e, "hq link: connect failed");
                        }
                        connected = false;
                        inflight = None;
                        tags.clear();
                        by_pkid.clear();
                        if offline_sent { break; }
                    }
                    Some(Ok(Event::Incoming(Packet::ConnAck(ack)))) => {
                        if ack.code != ConnectReturnCode::Success {
                            tracing::error!(code = ?ack.code, "hq broker refused the connection");
                            continue;
                        }
                        tracing::info!("hq link connected");
                        connected = true;
                        inflight = None;
                        tags.clear();
                        by_pkid.clear();
                        let birth = messages::status(&self.agent, true, crate::clock::now());
                        if client.publish(&self.topics.status, QoS::AtLeastOnce, true, birth).await.is_ok() {
                            tags.push_back(Tag::Status);
                        }
                        for t in [&self.topics.commands, &self.topics.fleet_commands] {
                            let _ = client.subscribe(t.as_str(), QoS::AtLeastOnce).await;
                        }
                    }
                    Some(Ok(Event::Incoming(Packet::Publish(p)))) => {
                        if p.topic == self.topics.commands || p.topic == self.topics.fleet_commands {
                            if self.command(&p.payload) {
                                let _ = client.ack(&p).await;
                            }
                        } else {
                            let _ = client.ack(&p).await;
                        }
                    }
                    Some(Ok(Event::Outgoing(Outgoing::Publish(pkid)))) => {
                        if pkid != 0 {
                            if let Some(tag) = tags.pop_front() {
                                by_pkid.insert(pkid, tag);
                            }
                        }
                    }
                    Some(Ok(Event::Incoming(Packet::PubAck(a)))) => match by_pkid.remove(&a.pkid) {
                        Some(Tag::Outbox(seq)) => {
                            if let Err(e) = self.outbox.ack(seq) {
                                tracing::error!(error = %e, "outbox: could not remove a delivered message");
                            }
                            inflight = None;
                        }
                        Some(Tag::Status) if offline_sent => break,
                        _ => {}
                    },
                    Some(Ok(_)) => {}
                },
                _ = self.outbox.pushed() => {}
                _ = tick.tick() => {
                    if connected {
                        let t = self.telemetry.sample().to_string();
                        let _ = client.try_publish(&self.topics.telemetry, QoS::AtMostOnce, false, t);
                    }
                }
                _ = self.stop.cancelled(), if !offline_sent => {
                    offline_sent = true;
                    deadline = Some(tokio::time::Instant::now() + Duration::from_secs(2));
                    if !connected { break; }
                    let bye = messages::status(&self.agent, false, crate::clock::now());
                    if client.publish(&self.topics.status, QoS::AtLeastOnce, true, bye).await.is_ok() {
                        tags.push_back(Tag::Status);
                    } else {
                        break;
                    }
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => break,
            }
            if connected && inflight.is_none() && !offline_sent {
                match self.outbox.peek() {
                    Ok(Some((seq, e))) => {
                        if client
                            .publish(e.topic, QoS::AtLeastOnce, false, e.payload)
                            .await
                            .is_ok()
                        {
                            tags.push_back(Tag::Outbox(seq));
                            inflight = Some(seq);
                        }
                    }
                    Ok(None) => {}
                    Err(e) => tracing::error!(error = %e, "outbox unreadable"),
                }
            }
        }
        let _ = client.try_disconnect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        poller.abort();
        tracing::info!("hq link stopped");
    }

    /// Applies one command and queues its response; true when the command
    /// may be acknowledged to the broker.
    fn command(&self, payload: &[u8]) -> bool {
        let resp = match self.retention.apply(payload, crate::clock::now()) {
            Ok(r) => r,
            Err(e) => {
                // Not applied, not refused: leave it unacknowledged.
                tracing::error!(error = %e, "command could not be applied");
                return false;
            }
        };
        let text = serde_json::to_string(&resp).unwrap_or_default();
        match self.outbox.push(&self.topics.responses, &text) {
            Ok(_) => true,
            Err(e) => {
                tracing::error!(error = %e, "outbox: could not queue a response");
                false
            }
        }
    }
}
