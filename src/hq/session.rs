//! One connection to HQ's broker, in MQTT 5 or MQTT 3.1.1, behind one small
//! surface the link's loop uses for both.
//!
//! MQTT 5 is preferred: responses then carry the correlation data of the
//! command they answer (HQ tools that use MQTT 5 request/response match on
//! it), every publish says it is UTF-8 JSON, and the session's expiry is
//! explicit. With `hq.protocol = "auto"` (the default) the link first speaks
//! MQTT 5; a broker that answers that as a 3.1.1 broker does — CONNACK
//! "unacceptable protocol version", a CONNACK it cannot have meant as MQTT 5,
//! or closing the connection at the CONNECT — is spoken to in 3.1.1 from then
//! on, until the agent restarts. A broker that cannot be reached at all
//! changes nothing: the version is judged only by a broker's answer.
//!
//! Both versions keep the same session rules: persistent session (client id
//! `sargs-<agent>`, clean start off, in MQTT 5 a session that never expires),
//! manual acknowledgement of commands, the retained Last Will `offline`.

use std::sync::Arc;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5 as p5;
use rumqttc::v5::mqttbytes::QoS as QoS5;
use rumqttc::{Outgoing, QoS, TlsConfiguration, Transport};

use super::messages::{self, Topics};
use crate::config::{LinkSettings, MqttVersion};

/// Largest packet either way (an erasure's inventory can be large).
const MAX_PACKET: usize = 16 << 20;

/// The MQTT version a session speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V5,
    V311,
}

impl Version {
    /// The first version to try under `setting`.
    pub fn first(setting: MqttVersion) -> Version {
        match setting {
            MqttVersion::Auto | MqttVersion::V5 => Version::V5,
            MqttVersion::V311 => Version::V311,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Version::V5 => "5",
            Version::V311 => "3.1.1",
        }
    }
}

/// The client half: what the loop sends.
pub enum Client {
    V4(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

/// The event-loop half: what the loop receives.
pub enum Poller {
    V4(Box<rumqttc::EventLoop>),
    V5(Box<rumqttc::v5::EventLoop>),
}

/// A command as it arrived, to be acknowledged once handled.
pub enum Received {
    V4(rumqttc::Publish),
    V5(p5::Publish),
}

impl Received {
    pub fn topic(&self) -> &[u8] {
        match self {
            Received::V4(p) => p.topic.as_bytes(),
            Received::V5(p) => &p.topic,
        }
    }

    pub fn payload(&self) -> &[u8] {
        match self {
            Received::V4(p) => &p.payload,
            Received::V5(p) => &p.payload,
        }
    }

    /// MQTT 5 correlation data, if the sender set it.
    pub fn correlation(&self) -> Option<&[u8]> {
        match self {
            Received::V4(_) => None,
            Received::V5(p) => p
                .properties
                .as_ref()
                .and_then(|pr| pr.correlation_data.as_deref()),
        }
    }
}

/// What the broker did, in the loop's terms.
pub enum Note {
    /// CONNACK success.
    Connected,
    /// CONNACK refusal in this version (bad credentials, not authorised …).
    Refused(String),
    /// A message on a subscribed topic.
    Message(Received),
    /// A QoS 1 publish left with this packet id.
    Sent(u16),
    /// The broker acknowledged packet id.
    Acked(u16),
    Other,
}

/// Why a poll failed.
pub enum Failure {
    /// The broker answered the CONNECT, but not in this version.
    Version(String),
    /// Anything else: unreachable, TLS, lost connection, protocol error.
    Link(String),
}

/// Builds a session for `version` (nothing is sent until the poller runs).
pub fn open(
    settings: &LinkSettings,
    agent: &str,
    device_key: &str,
    topics: &Topics,
    tls: Option<&Arc<rustls::ClientConfig>>,
    version: Version,
) -> (Client, Poller) {
    let id = format!("sargs-{agent}");
    let will = messages::status(agent, device_key, false, crate::clock::now());
    let transport =
        || tls.map(|cfg| Transport::tls_with_config(TlsConfiguration::Rustls(cfg.clone())));
    let mut net = rumqttc::NetworkOptions::new();
    // Small request/response messages: no Nagle delay.
    net.set_tcp_nodelay(true);
    match version {
        Version::V311 => {
            let mut o = rumqttc::MqttOptions::new(id, &settings.host, settings.port);
            o.set_keep_alive(settings.keep_alive)
                // A persistent session: the broker keeps the subscriptions and
                // queues QoS 1 commands while the agent is away, and redelivers
                // a command the agent could not apply (left unacknowledged).
                .set_clean_session(false)
                .set_manual_acks(true)
                .set_max_packet_size(MAX_PACKET, MAX_PACKET)
                .set_last_will(rumqttc::LastWill::new(
                    &topics.status,
                    will,
                    QoS::AtLeastOnce,
                    true,
                ));
            if let Some(t) = transport() {
                o.set_transport(t);
            }
            if let Some(user) = &settings.username {
                o.set_credentials(user, settings.password.clone().unwrap_or_default());
            }
            let (client, mut eventloop) = rumqttc::AsyncClient::new(o, 64);
            eventloop.set_network_options(net);
            (Client::V4(client), Poller::V4(Box::new(eventloop)))
        }
        Version::V5 => {
            let mut o = rumqttc::v5::MqttOptions::new(id, &settings.host, settings.port);
            o.set_keep_alive(settings.keep_alive)
                .set_clean_start(false)
                // 0xFFFFFFFF: the session never expires (as a 3.1.1 persistent session).
                .set_session_expiry_interval(Some(u32::MAX))
                .set_manual_acks(true)
                .set_max_packet_size(Some(MAX_PACKET as u32))
                .set_network_options(net)
                .set_last_will(p5::LastWill::new(
                    &topics.status,
                    will,
                    QoS5::AtLeastOnce,
                    true,
                    Some(p5::LastWillProperties {
                        payload_format_indicator: Some(1),
                        content_type: Some("application/json".into()),
                        ..empty_will_properties()
                    }),
                ));
            if let Some(t) = transport() {
                o.set_transport(t);
            }
            if let Some(user) = &settings.username {
                o.set_credentials(user, settings.password.clone().unwrap_or_default());
            }
            let (client, eventloop) = rumqttc::v5::AsyncClient::new(o, 64);
            (Client::V5(client), Poller::V5(Box::new(eventloop)))
        }
    }
}

fn empty_will_properties() -> p5::LastWillProperties {
    p5::LastWillProperties {
        delay_interval: None,
        payload_format_indicator: None,
        message_expiry_interval: None,
        content_type: None,
        response_topic: None,
        correlation_data: None,
        user_properties: Vec::new(),
    }
}

/// Properties of every MQTT 5 publish: UTF-8 JSON, and the correlation data
/// of the command a response answers.
fn json_properties(correlation: Option<Vec<u8>>) -> p5::PublishProperties {
    p5::PublishProperties {
        payload_format_indicator: Some(1),
        content_type: Some("application/json".into()),
        correlation_data: correlation.map(Bytes::from),
        ..p5::PublishProperties::default()
    }
}

fn qos5(q: QoS) -> QoS5 {
    match q {
        QoS::AtMostOnce => QoS5::AtMostOnce,
        QoS::AtLeastOnce => QoS5::AtLeastOnce,
        QoS::ExactlyOnce => QoS5::ExactlyOnce,
    }
}

impl Client {
    /// Queues a publish (returns once queued, not when acknowledged).
    pub async fn publish(
        &self,
        topic: &str,
        qos: QoS,
        retain: bool,
        payload: String,
        correlation: Option<Vec<u8>>,
    ) -> Result<(), String> {
        match self {
            Client::V4(c) => c
                .publish(topic, qos, retain, payload)
                .await
                .map_err(|e| e.to_string()),
            Client::V5(c) => {
                let props = json_properties(correlation);
                c.publish_with_properties(topic, qos5(qos), retain, payload, props)
                    .await
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// A QoS 0 publish that never waits (telemetry: dropped when the queue is full).
    pub fn try_publish(&self, topic: &str, payload: String) -> Result<(), String> {
        match self {
            Client::V4(c) => c
                .try_publish(topic, QoS::AtMostOnce, false, payload)
                .map_err(|e| e.to_string()),
            Client::V5(c) => c
                .try_publish_with_properties(
                    topic,
                    QoS5::AtMostOnce,
                    false,
                    payload,
                    json_properties(None),
                )
                .map_err(|e| e.to_string()),
        }
    }

    pub async fn subscribe(&self, topic: &str) -> Result<(), String> {
        match self {
            Client::V4(c) => c
                .subscribe(topic, QoS::AtLeastOnce)
                .await
                .map_err(|e| e.to_string()),
            Client::V5(c) => c
                .subscribe(topic, QoS5::AtLeastOnce)
                .await
                .map_err(|e| e.to_string()),
        }
    }

    /// Acknowledges a received message to the broker.
    pub async fn ack(&self, r: &Received) -> Result<(), String> {
        match (self, r) {
            (Client::V4(c), Received::V4(p)) => c.ack(p).await.map_err(|e| e.to_string()),
            (Client::V5(c), Received::V5(p)) => c.ack(p).await.map_err(|e| e.to_string()),
            _ => Err("a message acknowledged on another session".into()),
        }
    }

    pub fn try_disconnect(&self) {
        let _ = match self {
            Client::V4(c) => c.try_disconnect().map_err(|e| e.to_string()),
            Client::V5(c) => c.try_disconnect().map_err(|e| e.to_string()),
        };
    }
}

impl Poller {
    /// The next thing the broker did.
    pub async fn poll(&mut self) -> Result<Note, Failure> {
        match self {
            Poller::V4(el) => {
                use rumqttc::{ConnectReturnCode as C, Event, Packet};
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(a))) if a.code == C::Success => {
                        Ok(Note::Connected)
                    }
                    Ok(Event::Incoming(Packet::ConnAck(a))) => {
                        Ok(Note::Refused(format!("{:?}", a.code)))
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => Ok(Note::Message(Received::V4(p))),
                    Ok(Event::Incoming(Packet::PubAck(a))) => Ok(Note::Acked(a.pkid)),
                    Ok(Event::Outgoing(Outgoing::Publish(id))) => Ok(Note::Sent(id)),
                    Ok(_) => Ok(Note::Other),
                    Err(rumqttc::ConnectionError::ConnectionRefused(code)) => {
                        Ok(Note::Refused(format!("{code:?}")))
                    }
                    Err(e) => Err(Failure::Link(e.to_string())),
                }
            }
            Poller::V5(el) => {
                use p5::{ConnectReturnCode as C, Packet};
                use rumqttc::v5::{ConnectionError as E, Event, StateError};
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(a))) if a.code == C::Success => {
                        Ok(Note::Connected)
                    }
                    Ok(Event::Incoming(Packet::ConnAck(a))) => {
                        Ok(Note::Refused(format!("{:?}", a.code)))
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => Ok(Note::Message(Received::V5(p))),
                    Ok(Event::Incoming(Packet::PubAck(a))) => Ok(Note::Acked(a.pkid)),
                    Ok(Event::Outgoing(Outgoing::Publish(id))) => Ok(Note::Sent(id)),
                    Ok(_) => Ok(Note::Other),
                    Err(E::ConnectionRefused(
                        code @ (C::RefusedProtocolVersion | C::UnsupportedProtocolVersion),
                    )) => Err(Failure::Version(format!("CONNACK {code:?}"))),
                    Err(E::ConnectionRefused(code)) => Ok(Note::Refused(format!("{code:?}"))),
                    Err(e @ (E::NotConnAck(_) | E::MqttState(StateError::Deserialization(_)))) => {
                        Err(Failure::Version(e.to_string()))
                    }
                    Err(E::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(
                        Failure::Version(format!("connection closed at CONNECT: {e}")),
                    ),
                    Err(e) => Err(Failure::Link(e.to_string())),
                }
            }
        }
    }
}
