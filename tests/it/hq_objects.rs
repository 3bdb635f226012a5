//! HQ knows where each offloaded record is: the agent uploads to a real
//! Garage and reports each verified record (`segment.offloaded`); the HQ
//! service keeps it in its ledger, and `/api/v1/records` shows each record
//! with its store and object keys — the same the agent's index holds.
//! Real Garage, Mosquitto, `sargs-hq run` on SQLite, the agent in process.

use std::collections::BTreeMap;

use crate::harness::*;
use crate::hq_service::{hq, hq_json, http, start_hq, write_hq_toml};
use crate::mqtt::{hq_tables, T};
use crate::offload::{offloaded, offloading_camera, site};
use crate::support::mosquitto::{free_port, Broker};

#[test]
fn hq_knows_where_each_offloaded_record_is() {
    let (_g, _key, home, table) = site();
    let dir = home.path();
    let broker = Broker::start(dir, None);
    let command_key = hq_keygen(dir);
    let cams = hq_tables(&broker.url(), &command_key, None) + &offloading_camera("cam-o") + &table;
    let config = home.config_with(2, "min_free_mb = 1", &cams);
    let api = free_port();
    write_hq_toml(dir, &broker.url(), "sqlite://hq.db", &command_key, api);
    let mut service = start_hq(dir);
    let agent = sargs::agent::Agent::start(&config).expect("agent");
    let pending = wait_until(T, || {
        hq_json(dir, &["agent", "list", "--json"])
            .as_array()
            .is_some_and(|a| a.iter().any(|a| a["id"] == "test-gw"))
    });
    assert!(pending, "the agent is heard");
    hq(dir, &["agent", "approve", "test-gw"]);
    let auditor = hq(
        dir,
        &["token", "add", "--owner", "auditor", "--role", "auditor"],
    )
    .trim()
    .to_owned();
    // What the API says of cam-o's records: segment id -> offload.
    let shown = || -> BTreeMap<String, serde_json::Value> {
        let (status, v) = http(
            api,
            "GET",
            "/api/v1/records?agent=test-gw&camera=cam-o",
            Some(&auditor),
            "",
        );
        assert_eq!(status, 200, "{v}");
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter(|r| !r["offload"].is_null())
                    .map(|r| {
                        (
                            r["segment_id"].as_str().unwrap_or("").to_owned(),
                            r["offload"].clone(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let three = wait_until(RECORDING, || shown().len() >= 3);
    agent.stop().expect("clean stop");
    let api_view = shown();
    // SAFETY: SIGKILL to our own child.
    unsafe { libc::kill(service.id() as i32, libc::SIGKILL) };
    service.wait().expect("killed");
    assert!(
        three,
        "three records shown with their objects: {api_view:?}\n{}",
        std::fs::read_to_string(dir.join("hq.log")).unwrap_or_default()
    );
    // Each shown as the agent's index has it.
    let index: BTreeMap<String, _> = offloaded(&home)
        .into_iter()
        .map(|(cam, seq, o)| (format!("test-gw/{cam}/{seq}"), o))
        .collect();
    for (id, shown) in &api_view {
        let o = index
            .get(id)
            .unwrap_or_else(|| panic!("{id} is offloaded at the agent"));
        assert_eq!(shown["store"], o.store.as_str(), "{id}");
        assert_eq!(shown["manifest_key"], o.manifest_key.as_str(), "{id}");
        let media = o.media.as_ref().map(|(k, _)| k.as_str());
        assert_eq!(shown["media_key"].as_str(), media, "{id}");
    }
}
