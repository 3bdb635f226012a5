//! `[offload] schedule` and `interfaces`: while the rule says no, records
//! wait and telemetry says why; once it says yes they go, and nothing was
//! lost. The interface is a real veth pair, brought up and down as a
//! depot's Wi-Fi comes and goes (the suite runs as root, as it does for
//! its FUSE disks); real Garage, real Mosquitto, the agent in process.

use std::collections::BTreeSet;
use std::process::Command;

use chrono::Timelike;

use crate::harness::*;
use crate::mqtt::{hq_tables, T};
use crate::offload::{assert_store_matches_index, offloaded, offloading_camera, site, Reader};
use crate::support::mosquitto::{Broker, Watcher};

/// A veth pair of this process's own name; removed when dropped. Its end
/// `name` is up only while both ends are (operational state `up`; with the
/// peer down it is `lowerlayerdown`).
struct Veth {
    name: String,
    peer: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("ip (iproute2) runs");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Veth {
    fn new() -> Veth {
        let n = std::process::id() % 1_000_000;
        let v = Veth {
            name: format!("sgs{n}a"),
            peer: format!("sgs{n}b"),
        };
        let _ = Command::new("ip").args(["link", "del", &v.name]).output();
        ip(&[
            "link", "add", &v.name, "type", "veth", "peer", "name", &v.peer,
        ]);
        v
    }

    /// Both ends up (the link is there), or the peer down (it is not).
    fn link(&self, up: bool) {
        ip(&["link", "set", &self.name, "up"]);
        ip(&["link", "set", &self.peer, if up { "up" } else { "down" }]);
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.name])
            .output();
    }
}

fn offloaded_seqs(home: &Home) -> BTreeSet<u64> {
    offloaded(home).into_iter().map(|(_, s, _)| s).collect()
}

#[test]
fn uploads_wait_for_their_window_and_their_network_and_lose_nothing() {
    let (g, key, home, table) = site();
    let broker = Broker::start(home.path(), None);
    let hq = hq_keygen(home.path());
    let mut w = Watcher::connect(broker.port, "hq-when", None, &["sargs/agents/test-gw/#"]);
    let base = hq_tables(&broker.url(), &hq, None) + &offloading_camera("cam-w") + &table;

    // 1. A window that opens in two hours: nothing goes, and telemetry says when.
    let local = chrono::Local::now();
    let at = |h: u32| format!("{:02}:{:02}", (local.hour() + h) % 24, local.minute());
    let later = format!("schedule = [\"{}-{}\"]\n", at(2), at(3));
    let config = home.config_with(2, "min_free_mb = 1", &(base.clone() + &later));
    let agent = sargs::agent::Agent::start(&config).expect("agent");
    let tele = w.wait("/telemetry", RECORDING, |v| {
        v["offload"]["queue_records"].as_u64() >= Some(1) && v["offload"]["paused"].is_string()
    });
    agent.stop().expect("clean stop");
    let tele = tele.expect("telemetry: records waiting for the window");
    let why = tele["offload"]["paused"].as_str().unwrap_or_default();
    assert!(why.contains("outside offload.schedule"), "{tele}");
    assert!(
        why.contains("opens in 1 h 59 min") || why.contains("opens in 2 h 00 min"),
        "{tele}"
    );
    assert_eq!(
        offloaded_seqs(&home),
        BTreeSet::new(),
        "nothing went outside the window"
    );

    // 2. The depot's network: down, then up, then down again.
    let veth = Veth::new();
    let rule = format!("interfaces = [\"{}\"]\n", veth.name);
    let config = home.config_with(2, "min_free_mb = 1", &(base + &rule));
    let agent = sargs::agent::Agent::start(&config).expect("agent");
    let down = w.wait("/telemetry", RECORDING, |v| {
        v["offload"]["paused"]
            .as_str()
            .is_some_and(|p| p.contains(&veth.name))
    });
    let none_yet = offloaded_seqs(&home);
    veth.link(true);
    let dir = home.camera_dir("cam-w");
    let head = record_count(&dir) as u64;
    let went = wait_until(RECORDING, || {
        let done = offloaded_seqs(&home);
        (1..=head).all(|s| done.contains(&s))
    });
    let open = w.wait("/telemetry", T, |v| {
        v["offload"]["paused"].is_null() && v["offload"]["offloaded"].as_u64() >= Some(head)
    });
    veth.link(false);
    let closed = w.wait("/telemetry", RECORDING, |v| {
        v["offload"]["paused"]
            .as_str()
            .is_some_and(|p| p.contains("lowerlayerdown"))
    });
    // Records sealed after the gate closed wait.
    let shut_at = record_count(&dir) as u64;
    let sealed_more = wait_until(RECORDING, || record_count(&dir) as u64 > shut_at);
    let after = offloaded_seqs(&home);
    agent.stop().expect("clean stop");

    let down = down.expect("telemetry: paused while the interface is down");
    assert!(
        down["offload"]["paused"]
            .as_str()
            .is_some_and(|p| p.contains("none of offload.interfaces is up") && p.contains(": down")),
        "{down}"
    );
    assert_eq!(
        none_yet,
        BTreeSet::new(),
        "nothing went while the link was down"
    );
    assert!(went, "records 1 to {head} went once the link was up");
    open.expect("telemetry: not paused once the link is up");
    closed.expect("telemetry: paused again once the link went down");
    assert!(sealed_more, "the camera kept recording");
    let late: Vec<u64> = after.iter().copied().filter(|s| *s > shut_at).collect();
    assert!(
        late.is_empty(),
        "records {late:?} went while the link was down"
    );
    let reader = Reader::new(&g, &key);
    assert!(assert_store_matches_index(&home, &reader, false) as u64 >= head);
}
