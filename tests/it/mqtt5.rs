//! MQTT 5 and 3.1.1 against a real Mosquitto: the agent speaks MQTT 5 where
//! the broker does (responses carry the command's correlation data), falls
//! back to 3.1.1 for a broker that answers as a 3.1.1 broker, and is never
//! pushed off MQTT 5 by a broker that is merely down.

use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{Client, Event, MqttOptions};

use crate::harness::*;
use crate::mqtt::{hq_tables, response, sargsctl_command, setup, topic, AGENT, T};
use crate::support::mosquitto::{free_port, Broker, Gate, Watcher};

/// The hold command of these tests, as `sargsctl` writes it.
fn hold(home: &Home, id: &str) -> Vec<u8> {
    let from = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let to = chrono::Utc::now().to_rfc3339();
    sargsctl_command(
        home.path(),
        id,
        &[
            "hold",
            "--hold",
            "H-5",
            "--case",
            "KP 5",
            "--cameras",
            "cam-1",
            "--from",
            &from,
            "--to",
            &to,
        ],
    )
}

/// Waits for the broker to log the agent's connection; returns the line.
fn connect_line(broker: &Broker) -> String {
    let needle = format!("as sargs-{AGENT} (");
    let end = Instant::now() + T;
    while Instant::now() < end {
        if let Some(line) = broker.log().lines().find(|l| l.contains(&needle)) {
            return line.to_owned();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the agent never connected; broker log:\n{}", broker.log());
}

/// An MQTT 5 HQ client subscribed to the agent's responses; what arrives
/// goes to the channel with its properties.
fn hq_v5(
    port: u16,
) -> (
    Client,
    std::sync::mpsc::Receiver<rumqttc::v5::mqttbytes::v5::Publish>,
) {
    let mut opts = MqttOptions::new("hq-v5", "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut conn) = Client::new(opts, 16);
    let (tx, rx) = std::sync::mpsc::channel();
    let (subscribed_tx, subscribed) = std::sync::mpsc::channel();
    client
        .subscribe(topic("responses"), QoS::AtLeastOnce)
        .expect("subscribe");
    std::thread::spawn(move || {
        for ev in conn.iter() {
            match ev {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = subscribed_tx.send(());
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if tx.send(p).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    });
    subscribed.recv_timeout(T).expect("SUBACK");
    (client, rx)
}

#[test]
fn mqtt_5_responses_carry_the_commands_correlation_data() {
    let home = Home::new();
    let (broker, config, mut w) = setup(&home, None, "cam-1", "enabled = false");
    let agent = sargs::agent::Agent::start(&config).expect("agent");
    assert!(w.wait("/status", T, |v| v["state"] == "online").is_some());
    let line = connect_line(&broker);
    assert!(line.contains("(p5,"), "MQTT 5 by default: {line}");

    let (hq, rx) = hq_v5(broker.port);
    let command = hold(&home, "c-corr");
    let send = |correlation: &'static [u8]| {
        let props = PublishProperties {
            correlation_data: Some(correlation.into()),
            response_topic: Some(topic("responses")),
            ..PublishProperties::default()
        };
        hq.publish_with_properties(
            topic("commands"),
            QoS::AtLeastOnce,
            false,
            command.clone(),
            props,
        )
        .expect("publish");
    };
    let answer = |want: &str| {
        let end = Instant::now() + T;
        loop {
            let left = end
                .checked_duration_since(Instant::now())
                .expect("response in time");
            let p = rx.recv_timeout(left).expect("a response");
            let v: serde_json::Value = serde_json::from_slice(&p.payload).expect("JSON");
            if v["command_id"] == "c-corr" && v["status"] == want {
                return (v, p.properties.expect("MQTT 5 properties"));
            }
        }
    };

    send(b"hq-request-7");
    let (v, props) = answer("applied");
    assert_eq!(v["kind"], "hold.place");
    assert_eq!(
        props.correlation_data.as_deref(),
        Some(&b"hq-request-7"[..])
    );
    assert_eq!(props.payload_format_indicator, Some(1), "UTF-8 payload");
    assert_eq!(props.content_type.as_deref(), Some("application/json"));

    // The same command again: refused as a replay, under its own correlation.
    send(b"hq-request-8");
    let (v, props) = answer("rejected");
    assert_eq!(v["code"], "replayed", "{v}");
    assert_eq!(
        props.correlation_data.as_deref(),
        Some(&b"hq-request-8"[..])
    );

    // A 3.1.1 client on the same broker sees the same response, without properties.
    assert_eq!(response(&mut w, "c-corr")["status"], "applied");
    agent.stop().expect("stop");
}

#[test]
fn a_broker_that_speaks_only_3_1_1_is_spoken_to_in_3_1_1() {
    let home = Home::new();
    let broker = Broker::start(home.path(), None);
    let gate = Gate::start(broker.port);
    let key = hq_keygen(home.path());
    let url = format!("mqtt://127.0.0.1:{}", gate.port);
    let cams = hq_tables(&url, &key, None) + &test_camera("cam-1", "cctv", "enabled = false");
    let config = home.config_with(2, "min_free_mb = 1", &cams);
    let mut w = Watcher::connect(broker.port, "hq-test", None, &["sargs/agents/test-gw/#"]);

    let agent = sargs::agent::Agent::start(&config).expect("agent");
    assert!(
        w.wait("/status", T, |v| v["state"] == "online").is_some(),
        "online through the gate"
    );
    let line = connect_line(&broker);
    assert!(line.contains("(p2,"), "3.1.1 after the refusal: {line}");
    let levels = gate.levels();
    assert_eq!(
        levels[..2],
        [5, 4],
        "MQTT 5 first, refused, then 3.1.1: {levels:?}"
    );

    // Commands and responses work as before.
    w.publish(&topic("commands"), hold(&home, "c-311"));
    assert_eq!(response(&mut w, "c-311")["status"], "applied");
    agent.stop().expect("stop");
    assert!(
        w.wait("/status", T, |v| v["state"] == "offline").is_some(),
        "a clean stop says offline over 3.1.1 too"
    );
    assert!(
        gate.levels().iter().skip(2).all(|l| *l == 4),
        "settled on 3.1.1: {:?}",
        gate.levels()
    );
}

#[test]
fn a_broker_that_is_down_at_start_does_not_push_the_link_off_mqtt_5() {
    let home = Home::new();
    let port = free_port();
    let key = hq_keygen(home.path());
    let url = format!("mqtt://127.0.0.1:{port}");
    let cams = hq_tables(&url, &key, None) + &test_camera("cam-1", "cctv", "enabled = false");
    let config = home.config_with(2, "min_free_mb = 1", &cams);
    let agent = sargs::agent::Agent::start(&config).expect("agent");
    // Two or three refused TCP connections (back-off 1 s, 2 s) … A refused
    // connection leaves nothing to wait for: the time has to pass.
    std::thread::sleep(Duration::from_secs(3));
    let broker = Broker::start_on(home.path(), None, port);
    let line = connect_line(&broker);
    assert!(
        line.contains("(p5,"),
        "still MQTT 5 once the broker is up: {line}"
    );
    agent.stop().expect("stop");
}

#[test]
fn protocol_3_1_1_in_the_config_is_spoken_from_the_start() {
    let home = Home::new();
    let broker = Broker::start(home.path(), None);
    let key = hq_keygen(home.path());
    let cams = hq_tables(&broker.url(), &key, None)
        + "protocol = \"3.1.1\"\n\n"
        + &test_camera("cam-1", "cctv", "enabled = false");
    let config = home.config_with(2, "min_free_mb = 1", &cams);
    let agent = sargs::agent::Agent::start(&config).expect("agent");
    let line = connect_line(&broker);
    assert!(line.contains("(p2,"), "{line}");
    agent.stop().expect("stop");
}
