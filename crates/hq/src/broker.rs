//! HQ's side of the link, for `sargsctl`: publish a signed command and
//! collect the responses, or watch what a fleet reports.
//!
//! Subscriptions are made (and acknowledged by the broker) before anything
//! is published, so no response can slip past.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use serde_json::Value;

use sargs_core::link::TlsFiles;

/// How to reach the broker.
#[derive(Debug, Clone, Default)]
pub struct BrokerOptions {
    pub url: String,
    pub ca: Option<std::path::PathBuf>,
    pub client_cert: Option<std::path::PathBuf>,
    pub client_key: Option<std::path::PathBuf>,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// A connected HQ client.
pub struct HqClient {
    client: Client,
    rx: mpsc::Receiver<Result<(String, Vec<u8>), String>>,
    subacks: mpsc::Receiver<()>,
}

impl HqClient {
    /// Connects and subscribes to `topics` (QoS 1), waiting for the broker's
    /// SUBACKs (at most `timeout`).
    pub fn connect(
        o: &BrokerOptions,
        client_id: &str,
        topics: &[String],
        timeout: Duration,
    ) -> Result<HqClient, String> {
        let (tls, host, port) = sargs_core::link::parse_url(&o.url)?;
        let mut opts = MqttOptions::new(client_id, host, port);
        opts.set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(64 << 20, 16 << 20);
        if tls {
            let ca = o.ca.clone().ok_or("--ca-file is required for mqtts://")?;
            let cfg = sargs_core::link::client_config(&TlsFiles {
                ca,
                client_cert: o.client_cert.clone(),
                client_key: o.client_key.clone(),
            })?;
            opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                std::sync::Arc::new(cfg),
            )));
        }
        if let Some(u) = &o.username {
            opts.set_credentials(u, o.password.clone().unwrap_or_default());
        }
        let (client, mut conn) = Client::new(opts, 64);
        let mut net = rumqttc::NetworkOptions::new();
        net.set_tcp_nodelay(true);
        conn.eventloop.set_network_options(net);
        for t in topics {
            client
                .subscribe(t.as_str(), QoS::AtLeastOnce)
                .map_err(|e| e.to_string())?;
        }
        let (tx, rx) = mpsc::channel();
        let (sub_tx, subacks) = mpsc::channel();
        std::thread::spawn(move || {
            for ev in conn.iter() {
                let sent = match ev {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        tx.send(Ok((p.topic.clone(), p.payload.to_vec()))).is_ok()
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => sub_tx.send(()).is_ok(),
                    Ok(_) => true,
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        false
                    }
                };
                if !sent {
                    break;
                }
            }
        });
        let c = HqClient {
            client,
            rx,
            subacks,
        };
        let end = Instant::now() + timeout;
        for _ in topics {
            let left = end.saturating_duration_since(Instant::now());
            if c.subacks.recv_timeout(left).is_err() {
                // A connection error is waiting in `rx`: report it.
                let why =
                    c.rx.try_recv()
                        .ok()
                        .and_then(|r| r.err())
                        .unwrap_or_else(|| format!("no answer within {} s", timeout.as_secs()));
                return Err(format!("{}: {why}", o.url));
            }
        }
        Ok(c)
    }

    pub fn publish(&self, topic: &str, payload: Vec<u8>) -> Result<(), String> {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .map_err(|e| e.to_string())
    }

    /// The next message, or `None` after `timeout`.
    pub fn next(&self, timeout: Duration) -> Result<Option<(String, Value)>, String> {
        match self.rx.recv_timeout(timeout) {
            Ok(Ok((t, p))) => Ok(Some((t, serde_json::from_slice(&p).unwrap_or(Value::Null)))),
            Ok(Err(e)) => Err(e),
            Err(_) => Ok(None),
        }
    }

    /// Responses to `command_id` until `expect` arrived (one per agent) or
    /// `timeout` passed.
    pub fn responses(
        &self,
        command_id: &str,
        expect: Option<usize>,
        timeout: Duration,
    ) -> Result<Vec<Value>, String> {
        let end = Instant::now() + timeout;
        let mut seen = std::collections::BTreeMap::new();
        while expect.is_none_or(|n| seen.len() < n) {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match self.next(left)? {
                Some((t, v)) if t.ends_with("/responses") && v["command_id"] == command_id => {
                    let agent = v["agent_id"].as_str().unwrap_or_default().to_owned();
                    seen.entry(agent).or_insert(v);
                }
                Some(_) => {}
                None => break,
            }
        }
        Ok(seen.into_values().collect())
    }
}

/// One line for a message `sargsctl watch` shows.
pub fn summary(topic: &str, v: &Value) -> String {
    let agent = v["agent"]
        .as_str()
        .or(v["agent_id"].as_str())
        .unwrap_or("?");
    let at = v["at"].as_str().unwrap_or("");
    let kind = topic.rsplit('/').next().unwrap_or("");
    let what = match kind {
        "status" => v["state"].as_str().unwrap_or("?").to_owned(),
        "events" => {
            let e = v["event"].as_str().unwrap_or("?");
            match e {
                "segment.deleted" => format!(
                    "{e} {} ({})",
                    v["receipt"]["segment_id"].as_str().unwrap_or("?"),
                    v["receipt"]["reason"].as_str().unwrap_or("?")
                ),
                "command.rejected" => format!(
                    "{e} {} {}",
                    v["command_id"].as_str().unwrap_or("?"),
                    v["code"].as_str().unwrap_or("?")
                ),
                _ => format!(
                    "{e} {}",
                    v["hold"].as_str().or(v["message"].as_str()).unwrap_or("")
                ),
            }
        }
        "responses" => format!(
            "response {} {} {}",
            v["command_id"].as_str().unwrap_or("?"),
            v["status"].as_str().unwrap_or("?"),
            v["reason"].as_str().unwrap_or("")
        ),
        "telemetry" => format!(
            "telemetry cpu {:.0}% holds {} outbox {}",
            v["cpu_percent"].as_f64().unwrap_or(0.0),
            v["storage"]["holds_active"].as_u64().unwrap_or(0),
            v["outbox"]["depth"].as_u64().unwrap_or(0)
        ),
        _ => kind.to_owned(),
    };
    format!("{at} {agent} {what}")
}
