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
//!   An alarm about the disk itself goes from the outbox's memory lane,
//!   ahead of its files, and the link never waits on a push the disk holds
//!   ([`lane`]).
//!   Telemetry is QoS 0 and dropped while offline (latest wins).
//! - **Presence.** A retained `online` status is published on every connect;
//!   the broker publishes the retained Last Will `offline` if the agent dies;
//!   a clean stop publishes `offline` itself.
//!
//! - **Commands are not missed.** The session is persistent (clean session
//!   off, client id `sargs-<agent>`): the broker queues commands while the
//!   agent is offline and redelivers one it could not apply.
//!
//! Reconnects back off exponentially (1 s doubling to 60 s, ±25 % jitter,
//! [`Backoff`]).
//! MQTT 5 where the broker speaks it, else 3.1.1 ([`session`]); TLS is
//! rustls with the configured CA and optional client certificate.

pub mod lane;
pub mod messages;
pub mod outbox;
pub mod session;
pub mod telemetry;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use base64::Engine as _;
use rumqttc::QoS;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::clock::Clock;
use crate::config::{LinkSettings, MqttVersion};
use crate::events::EventSink;
use crate::retention::Retention;
use messages::Topics;
use outbox::{Entry, Outbox, Position};
use session::{Client, Failure, Note, Poller, Received, Version};
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
    Outbox(Position),
    /// The front of the outbox's memory lane.
    Lane,
}

impl Link {
    /// Connects (in the background) and keeps connecting until stopped.
    pub fn start(
        settings: &LinkSettings,
        agent: &str,
        retention: Arc<Retention>,
        outbox: Arc<Outbox>,
        telemetry: Telemetry,
        clock: Clock,
    ) -> Result<Link, LinkError> {
        let topics = Topics::new(&settings.prefix, agent);
        // Read the TLS files now: one the link cannot use stops start-up.
        let tls = match &settings.tls {
            Some(files) => Some(Arc::new(
                sargs_core::link::client_config(files).map_err(LinkError::Tls)?,
            )),
            None => None,
        };
        let stop = CancellationToken::new();
        let task = Task {
            agent: agent.to_owned(),
            topics,
            retention,
            outbox,
            telemetry,
            settings: settings.clone(),
            tls,
            clock,
            stop: stop.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("hq-link".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(task.run()),
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
    settings: LinkSettings,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Commands are judged on the agent's retention clock.
    clock: Clock,
    stop: CancellationToken,
}

/// How one session ended.
enum End {
    /// Stopped (the agent is shutting down).
    Stopped,
    /// The broker answered MQTT 5 as a 3.1.1 broker does.
    Downgrade(String),
}

/// Runs the session's event loop, handing what it yields to the link's loop
/// and backing off after every failure.
fn spawn_poller(
    mut poller: Poller,
) -> (
    tokio::task::JoinHandle<()>,
    tokio::sync::mpsc::Receiver<Result<Note, Failure>>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let handle = tokio::spawn(async move {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        loop {
            let ev = poller.poll().await;
            let pause = match &ev {
                Ok(Note::Connected) => {
                    backoff.reset();
                    false
                }
                Ok(Note::Refused(_)) | Err(_) => true,
                Ok(_) => false,
            };
            if tx.send(ev).await.is_err() {
                break;
            }
            if pause {
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    });
    (handle, rx)
}

impl Task {
    async fn run(mut self) {
        let mut version = Version::first(self.settings.protocol);
        // Settled once a broker accepted a version (or the config fixes it).
        let mut settled = self.settings.protocol != MqttVersion::Auto;
        loop {
            let (client, poller) = session::open(
                &self.settings,
                &self.agent,
                self.retention.device_key(),
                &self.topics,
                self.tls.as_ref(),
                version,
            );
            match self.serve(&client, poller, version, &mut settled).await {
                End::Stopped => break,
                End::Downgrade(why) => {
                    tracing::warn!(reason = %why, "hq broker does not speak MQTT 5; using MQTT 3.1.1");
                    version = Version::V311;
                    settled = true;
                }
            }
        }
        tracing::info!("hq link stopped");
    }

    /// One session until the agent stops (or the broker wants another version).
    async fn serve(
        &mut self,
        client: &Client,
        poller: Poller,
        version: Version,
        settled: &mut bool,
    ) -> End {
        let (poller, mut rx) = spawn_poller(poller);
        let mut connected = false;
        let mut tags: VecDeque<Tag> = VecDeque::new();
        let mut by_pkid: HashMap<u16, Tag> = HashMap::new();
        let mut inflight: Option<Position> = None;
        // The lane's front is in flight (one message at a time, either kind).
        let mut lane_inflight = false;
        // The outbox's files were busy (a push the disk holds): look again soon.
        let mut busy = false;
        let mut tick = tokio::time::interval(self.settings.telemetry_interval);
        let mut offline_sent = false;
        let mut deadline: Option<tokio::time::Instant> = None;
        let end = loop {
            tokio::select! {
                ev = rx.recv() => match ev {
                    None => break End::Stopped,
                    Some(Err(failure)) => {
                        let e = match failure {
                            Failure::Version(why) if !*settled => break End::Downgrade(why),
                            Failure::Version(e) | Failure::Link(e) => e,
                        };
                        if connected {
                            tracing::warn!(error = %e, "hq link lost; reconnecting");
                        } else {
                            tracing::debug!(error = %e, "hq link: connect failed");
                        }
                        connected = false;
                        inflight = None;
                        lane_inflight = false;
                        tags.clear();
                        by_pkid.clear();
                        if offline_sent { break End::Stopped; }
                    }
                    Some(Ok(Note::Refused(code))) => {
                        tracing::error!(code = %code, "hq broker refused the connection");
                    }
                    Some(Ok(Note::Connected)) => {
                        tracing::info!(mqtt = version.as_str(), "hq link connected");
                        *settled = true;
                        connected = true;
                        inflight = None;
                        lane_inflight = false;
                        tags.clear();
                        by_pkid.clear();
                        let birth = messages::status(&self.agent, self.retention.device_key(), true, crate::clock::now());
                        if client.publish(&self.topics.status, QoS::AtLeastOnce, true, birth, None).await.is_ok() {
                            tags.push_back(Tag::Status);
                        }
                        for t in [&self.topics.commands, &self.topics.fleet_commands] {
                            let _ = client.subscribe(t).await;
                        }
                    }
                    Some(Ok(Note::Message(m))) => {
                        let topic = m.topic();
                        if topic == self.topics.commands.as_bytes() || topic == self.topics.fleet_commands.as_bytes() {
                            if self.command(&m) {
                                let _ = client.ack(&m).await;
                            }
                        } else {
                            let _ = client.ack(&m).await;
                        }
                    }
                    Some(Ok(Note::Sent(pkid))) => {
                        if pkid != 0 {
                            if let Some(tag) = tags.pop_front() {
                                by_pkid.insert(pkid, tag);
                            }
                        }
                    }
                    Some(Ok(Note::Acked(pkid))) => match by_pkid.remove(&pkid) {
                        Some(Tag::Outbox(pos)) => {
                            if let Err(e) = self.outbox.ack(pos) {
                                tracing::error!(error = %e, "outbox: could not remove a delivered message");
                            }
                            inflight = None;
                        }
                        Some(Tag::Lane) => {
                            self.outbox.lane().ack();
                            lane_inflight = false;
                        }
                        Some(Tag::Status) if offline_sent => break End::Stopped,
                        _ => {}
                    },
                    Some(Ok(Note::Other)) => {}
                },
                _ = self.outbox.pushed() => {}
                _ = tokio::time::sleep(Duration::from_millis(100)), if busy => {}
                _ = tick.tick() => {
                    if connected {
                        let t = self.telemetry.sample().to_string();
                        let _ = client.try_publish(&self.topics.telemetry, t);
                    }
                }
                _ = self.stop.cancelled(), if !offline_sent => {
                    offline_sent = true;
                    deadline = Some(tokio::time::Instant::now() + Duration::from_secs(2));
                    if !connected { break End::Stopped; }
                    let bye = messages::status(&self.agent, self.retention.device_key(), false, crate::clock::now());
                    if client.publish(&self.topics.status, QoS::AtLeastOnce, true, bye, None).await.is_ok() {
                        tags.push_back(Tag::Status);
                    } else {
                        break End::Stopped;
                    }
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => break End::Stopped,
            }
            busy = false;
            if connected && inflight.is_none() && !lane_inflight && !offline_sent {
                if let Some(e) = self.outbox.lane().front() {
                    if client
                        .publish(&e.topic, QoS::AtLeastOnce, false, e.payload, None)
                        .await
                        .is_ok()
                    {
                        tags.push_back(Tag::Lane);
                        lane_inflight = true;
                    }
                    continue;
                }
                match self.outbox.try_peek().unwrap_or_else(|| {
                    busy = true;
                    Ok(None)
                }) {
                    Ok(Some((pos, e))) => {
                        let correlation = e
                            .correlation
                            .as_deref()
                            .and_then(|c| base64::engine::general_purpose::STANDARD.decode(c).ok());
                        if client
                            .publish(&e.topic, QoS::AtLeastOnce, false, e.payload, correlation)
                            .await
                            .is_ok()
                        {
                            tags.push_back(Tag::Outbox(pos));
                            inflight = Some(pos);
                        }
                    }
                    Ok(None) => {}
                    Err(e) => tracing::error!(error = %e, "outbox unreadable"),
                }
            }
        };
        if matches!(end, End::Stopped) {
            client.try_disconnect();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        poller.abort();
        end
    }

    /// Applies one command and queues its response, with the events it
    /// caused, in one durable write; true when the command may be
    /// acknowledged to the broker. The response carries the command's MQTT 5
    /// correlation data; it always goes to this agent's `…/responses` (a
    /// response topic the sender asked for is not followed: the broker's ACL
    /// confines each agent to its own topics).
    fn command(&self, m: &Received) -> bool {
        let (resp, events) = self
            .retention
            .apply_collecting(m.payload(), self.clock.wall());
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                // Not applied, not refused: leave it unacknowledged (the
                // broker redelivers it); what it caused is still reported.
                tracing::error!(error = %e, "command could not be applied");
                self.queue(Vec::new(), events);
                return false;
            }
        };
        let mut response = Entry::new(
            &self.topics.responses,
            serde_json::to_string(&resp).unwrap_or_default(),
        );
        response.correlation = m
            .correlation()
            .map(|c| base64::engine::general_purpose::STANDARD.encode(c));
        self.queue(vec![response], events)
    }

    /// Queues `batch`, then `events`, durably in one write.
    fn queue(&self, mut batch: Vec<Entry>, events: Vec<crate::events::Event>) -> bool {
        batch.extend(messages::event_entries(
            &self.agent,
            &self.topics.events,
            &events,
        ));
        crate::events::LogEvents.emit_all(events);
        match self.outbox.push_batch(&batch) {
            Ok(_) => true,
            Err(e) => {
                tracing::error!(error = %e, "outbox: could not queue a response");
                false
            }
        }
    }
}
