//! A failing evidence store is seen at HQ: with Garage stopped, the agent
//! reports `offload.failed` (the store, the object key, the error) once for
//! the many attempts it backs off between, and telemetry counts them with
//! the last error and the wait; once Garage is back the queue drains and
//! nothing is lost. Real Garage, real Mosquitto, the agent in process.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use crate::harness::*;
use crate::mqtt::{hq_tables, T};
use crate::offload::{assert_store_matches_index, offloaded, offloading_camera, site, Reader};
use crate::support::mosquitto::{Broker, Watcher};

fn events(w: &Watcher, event: &str) -> Vec<Value> {
    w.seen
        .iter()
        .filter(|(t, _, _)| t.ends_with("/events"))
        .filter_map(|(_, p, _)| serde_json::from_slice::<Value>(p).ok())
        .filter(|v| v["event"] == event)
        .collect()
}

#[test]
fn a_store_that_is_down_is_reported_counted_and_loses_nothing_when_back() {
    let (mut g, key, home, table) = site();
    g.stop();
    let broker = Broker::start(home.path(), None);
    let hq = hq_keygen(home.path());
    let cams = hq_tables(&broker.url(), &hq, None) + &offloading_camera("cam-f") + &table;
    let config = home.config_with(2, "min_free_mb = 1", &cams);
    let mut w = Watcher::connect(broker.port, "hq-offload", None, &["sargs/agents/test-gw/#"]);
    let agent = sargs::agent::Agent::start(&config).expect("agent");

    let failed = w
        .wait("/events", RECORDING, |v| v["event"] == "offload.failed")
        .expect("offload.failed while the store is down");
    let f = &failed["offload"];
    assert_eq!(f["kind"], "store", "{failed}");
    assert_eq!(f["store"], format!("{}/evidence", g.endpoint()), "{failed}");
    assert!(
        f["key"]
            .as_str()
            .is_some_and(|k| k.starts_with("test-gw/cam-f/")),
        "{failed}"
    );
    assert!(
        f["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{failed}"
    );
    assert_eq!(f["failures"], 1, "{failed}");
    assert!(f["retry_in_s"].as_u64().is_some(), "{failed}");
    // Several attempts, backing off; telemetry counts them all.
    let tele = w
        .wait("/telemetry", RECORDING, |v| {
            v["offload"]["failures_in_a_row"].as_u64() >= Some(3)
        })
        .expect("telemetry counts the failures");
    let o = &tele["offload"];
    assert!(o["failures"].as_u64() >= Some(3), "{tele}");
    assert!(
        o["last_error"].as_str().is_some_and(|e| !e.is_empty()),
        "{tele}"
    );
    assert!(o["last_failure"].is_string(), "{tele}");
    assert!(o["retry_in_s"].as_u64() >= Some(2), "backing off: {tele}");
    assert!(o["queue_records"].as_u64() >= Some(1), "{tele}");
    assert!(o["last_success"].is_null(), "{tele}");
    assert_eq!(
        events(&w, "offload.failed").len(),
        1,
        "one event for the failures within the period"
    );

    // Back: what waited goes, and telemetry says so.
    let head = record_count(&home.camera_dir("cam-f")) as u64;
    g.restart();
    let drained = wait_until(Duration::from_secs(120), || {
        let done: BTreeSet<u64> = offloaded(&home).into_iter().map(|(_, s, _)| s).collect();
        (1..=head).all(|s| done.contains(&s))
    });
    let tele = w.wait("/telemetry", T, |v| {
        v["offload"]["last_success"].is_string() && v["offload"]["failures_in_a_row"] == 0
    });
    agent.stop().expect("clean stop");
    assert!(drained, "records 1 to {head} went once the store was back");
    let tele = tele.expect("telemetry after the store came back");
    assert!(tele["offload"]["retry_in_s"].is_null(), "{tele}");
    assert!(!events(&w, "segment.offloaded").is_empty());
    let reader = Reader::new(&g, &key);
    assert!(assert_store_matches_index(&home, &reader, false) as u64 >= head);
}
