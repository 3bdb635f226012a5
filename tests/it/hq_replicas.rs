//! Two `sargs-hq` replicas against one PostgreSQL, sharing the fleet's
//! topics through an MQTT 5 shared subscription; one is killed with kill -9
//! in the middle of a burst and comes back. The ledger ends equal to the
//! agent's own files: every record and receipt once, none missing, none
//! counted twice.

use std::path::Path;
use std::time::Duration;

use crate::harness::*;
use crate::hq_service::{hq, hq_json, start_hq_with};
use crate::mqtt::{hq_tables, response, sargsctl_command, topic};
use crate::support::mosquitto::{Broker, Watcher};
use crate::support::postgres::Postgres;

const T: Duration = Duration::from_secs(90);

fn replica_toml(dir: &Path, name: &str, broker: &str, db: &str, key: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[broker]\nurl = \"{broker}\"\nclient_id = \"{name}\"\nshare_group = \"hq\"\nkeep_alive_s = 5\n\n[database]\nurl = \"{db}\"\n\n[commands]\ntrusted_keys = [\"{key}\"]\n\n[api]\nlisten = \"\"\n\n[ledger]\ncheck_interval_s = 1\n"
        ),
    )
    .expect("replica config");
    path
}

#[test]
fn two_replicas_share_the_fleet_and_a_kill_9_loses_and_doubles_nothing() {
    let pg = Postgres::start();
    let db = pg.create_db("hq");
    let home = Home::new();
    let dir = home.path();
    let broker = Broker::start(dir, None);
    let key = hq_keygen(dir);
    let cams =
        hq_tables(&broker.url(), &key, None) + &test_camera("cam-old", "cctv", "enabled = false");
    let config = home.config_with(2, "min_free_mb = 1", &cams);
    let one = replica_toml(dir, "hq-1", &broker.url(), &db, &key);
    let two = replica_toml(dir, "hq-2", &broker.url(), &db, &key);
    // `hq.toml` for the shared helpers: the same database.
    std::fs::copy(&one, dir.join("hq.toml")).expect("hq.toml");
    let mut r1 = start_hq_with(dir, &one, "hq-1.log");
    let r2 = start_hq_with(dir, &two, "hq-2.log");
    let device_key = {
        // The agent's key exists once the config made its data directory.
        let agent = sargs::agent::Agent::start(&config).expect("agent");
        agent.stop().expect("stop");
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(home.device_key())
    };
    hq(
        dir,
        &["agent", "add", "test-gw", "--device-key", &device_key],
    );
    let mut w = Watcher::connect(broker.port, "hq-watch", None, &["sargs/agents/test-gw/#"]);
    let agent = sargs::agent::Agent::start(&config).expect("agent");

    // A burst: 400 old records deleted with receipts, then announced again
    // (the agent's files are all it has: no camera records meanwhile, so
    // the ledger can be compared with them while the agent runs).
    old_segments(&home, "cam-old", 400, 40);
    let mut deleted = 0;
    w.wait("/events", T, |v| {
        deleted += usize::from(v["event"] == "segment.deleted");
        deleted >= 150
    });
    // SAFETY: SIGKILL to our own child, mid-burst.
    unsafe { libc::kill(r1.id() as i32, libc::SIGKILL) };
    r1.wait().expect("killed");
    let resend = sargsctl_command(dir, "c-resend", &["resend", "--records-from", "cam-old=1"]);
    w.publish(&topic("commands"), resend);
    assert_eq!(response(&mut w, "c-resend")["status"], "applied");
    let r1_again = start_hq_with(dir, &one, "hq-1b.log");

    let segments_on_disk = |camera: &str| -> usize {
        std::fs::read_dir(home.camera_dir(camera))
            .expect("camera dir")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .filter(|e| {
                let bytes = std::fs::read(e.path()).expect("manifest");
                let env = sargs_core::seal::sign::Envelope::open(&bytes, None).expect("envelope");
                env.payload.contains("\"record\":\"segment\"")
            })
            .count()
    };
    let made = segments_on_disk("cam-old");
    assert_eq!(made, 400);
    let report = || {
        hq_json(
            dir,
            &["report", "--format", "json", "--to", "2100-01-01T00:00:00Z"],
        )
    };
    assert!(
        wait_until(T, || report()["totals"]["recorded"] == made),
        "every record the agent made ({made}), once: {}",
        report()["totals"]
    );
    let r = report();
    let t = &r["totals"];
    assert_eq!(t["late"], 400, "every receipt, once: {t}");
    assert_eq!(t["missing"], 0, "{t}");
    assert_eq!(t["overdue"], 0, "{t}");
    agent.stop().expect("clean stop");
    for mut r in [r2, r1_again] {
        // SAFETY: SIGTERM to our own child: a clean stop.
        unsafe { libc::kill(r.id() as i32, libc::SIGTERM) };
        assert!(r.wait().expect("stops").success());
    }
    // Both replicas kept part of the stream: the topics were shared.
    for log in ["hq-2.log", "hq-1b.log"] {
        let text = std::fs::read_to_string(dir.join(log)).unwrap_or_default();
        let kept: u64 = text
            .lines()
            .filter(|l| l.contains("stopped"))
            .find_map(|l| {
                l.split("kept=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or(0);
        assert!(kept > 0, "{log} kept nothing: {text}");
    }
}
