//! The Mosquitto ACL shipped in deploy/mosquitto/sargs.acl, on a real broker
//! with password logins: a real agent works under it (status, telemetry,
//! commands in, responses out), while a gateway's credentials cannot publish
//! to another gateway's topics or any commands, cannot read another
//! gateway's topics, and cannot read its commands by taking over its
//! client id.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::harness::*;
use crate::support::mosquitto::{Broker, Watcher};

const T: Duration = Duration::from_secs(20);

fn shipped_acl() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/mosquitto/sargs.acl")
}

/// A Mosquitto password file with `users` (each user's password is its name
/// reversed), made with mosquitto_passwd.
fn password_file(dir: &Path, users: &[&str]) -> PathBuf {
    let path = dir.join("mosquitto.passwd");
    for (i, user) in users.iter().enumerate() {
        let password: String = user.chars().rev().collect();
        let mut cmd = Command::new("mosquitto_passwd");
        if i == 0 {
            cmd.arg("-c");
        }
        let ok = cmd
            .arg("-b")
            .arg(&path)
            .args([*user, &password])
            .status()
            .expect("mosquitto_passwd (Debian package mosquitto)");
        assert!(ok.success(), "mosquitto_passwd {user}");
    }
    path
}

fn password(user: &str) -> String {
    user.chars().rev().collect()
}

/// Waits `d` and returns the topics `w` received meanwhile.
fn topics_within(w: &mut Watcher, d: Duration) -> Vec<String> {
    let _ = w.wait("/never-published", d, |_| false);
    w.seen.iter().map(|(t, _, _)| t.clone()).collect()
}

/// HQ publishes a probe on `topic` every half second until `reader` gets one
/// (at most [`T`]): true once it has.
fn until_received(hq: &Watcher, reader: &mut Watcher, topic: &str) -> bool {
    let end = std::time::Instant::now() + T;
    while std::time::Instant::now() < end {
        hq.publish(topic, b"{\"probe\":true}".to_vec());
        if reader
            .wait(topic, Duration::from_millis(500), |v| v["probe"] == true)
            .is_some()
        {
            return true;
        }
    }
    false
}

#[test]
fn the_shipped_acl_confines_each_gateway_and_lets_only_hq_command() {
    let home = Home::new();
    let dir = home.path();
    let passwd = password_file(dir, &["sargs-hq", "gw-a", "gw-b"]);
    let broker = Broker::start_with_acl(dir, &passwd, &shipped_acl());
    let url = broker.url();
    let hq_pass = password("sargs-hq");
    let mut hq = Watcher::connect_as(
        broker.port,
        "hq",
        ("sargs-hq", &hq_pass),
        true,
        &["sargs/#"],
    );

    // A real agent, gw-a, logging in as itself.
    let key = hq_keygen(dir);
    std::fs::write(dir.join("gw-a.password"), format!("{}\n", password("gw-a"))).expect("pw");
    let hq_table = format!(
        "[hq]\nbroker = \"{url}\"\ncommand_keys = [\"{key}\"]\nusername = \"gw-a\"\npassword_file = \"gw-a.password\"\ntelemetry_interval_s = 1\n\n"
    );
    home.config_with(2, "", &(hq_table + &test_camera("cam-1", "cctv", "")));
    let text = std::fs::read_to_string(home.config_path())
        .expect("config")
        .replace("id = \"test-gw\"", "id = \"gw-a\"");
    std::fs::write(home.config_path(), text).expect("config");
    let mut agent = spawn_agent(&home);
    assert!(
        hq.wait("sargs/agents/gw-a/status", T, |v| v["state"] == "online")
            .is_some(),
        "the agent publishes its status under the ACL"
    );
    assert!(
        hq.wait("sargs/agents/gw-a/telemetry", T, |_| true)
            .is_some(),
        "and its telemetry"
    );
    // HQ's command reaches it and its response reaches HQ.
    let hq_pw_file = dir.join("hq.password");
    std::fs::write(&hq_pw_file, format!("{hq_pass}\n")).expect("pw");
    let from = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let to = chrono::Utc::now().to_rfc3339();
    let mut args: Vec<&str> = "hold --hold H-acl --case KP-1 --cameras cam-1 --agent gw-a \
        --key hq/signing.pk8 --issuer HQ --username sargs-hq --password-file hq.password --wait 15"
        .split_whitespace()
        .collect();
    args.extend(["--from", &from, "--to", &to, "--broker", &url]);
    let (ok, out, err) = sargsctl_in(&args, dir);
    assert!(
        ok && out.contains("applied"),
        "hold through the ACL: {out} {err}"
    );

    // gw-b's credentials: everything forbidden is dropped by the broker.
    let b_pass = password("gw-b");
    let mut rogue = Watcher::connect_as(
        broker.port,
        "sargs-gw-b",
        ("gw-b", &b_pass),
        true,
        &["sargs/#"],
    );
    // Its subscription is in place once it reads what it may: its own commands.
    assert!(
        until_received(&hq, &mut rogue, "sargs/agents/gw-b/commands"),
        "gw-b reads its own commands"
    );
    let forged = br#"{"v":1,"agent":"gw-a","event":"segment.deleted"}"#.to_vec();
    for topic in [
        "sargs/agents/gw-a/events",
        "sargs/agents/gw-a/status",
        "sargs/agents/gw-a/responses",
        "sargs/agents/gw-a/commands",
        "sargs/agents/gw-b/commands",
        "sargs/fleet/commands",
    ] {
        rogue.publish(topic, forged.clone());
    }
    // Its own topic is allowed: when that arrives, so would have the rest.
    rogue.publish(
        "sargs/agents/gw-b/events",
        br#"{"v":1,"marker":true}"#.to_vec(),
    );
    assert!(
        hq.wait("sargs/agents/gw-b/events", T, |v| v["marker"] == true)
            .is_some(),
        "gw-b may publish its own events"
    );
    let forged_seen: Vec<_> = hq
        .seen
        .iter()
        .filter(|(_, p, _)| p == &forged)
        .map(|(t, _, _)| t.clone())
        .collect();
    assert!(
        forged_seen.is_empty(),
        "forged messages reached HQ on {forged_seen:?}"
    );
    // Subscribed to everything, gw-b sees none of gw-a's traffic (gw-a
    // publishes telemetry every second).
    rogue.seen.clear();
    let b_saw = topics_within(&mut rogue, Duration::from_secs(3));
    assert!(
        b_saw.iter().all(|t| !t.contains("/gw-a/")),
        "gw-b read gw-a's topics: {b_saw:?}"
    );

    // Session takeover: with gw-a stopped (its persistent session stays on
    // the broker), gw-b's credentials under gw-a's client id read nothing.
    // SAFETY: kill has no memory preconditions; the pid is our child's.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    assert!(agent.wait().expect("agent exits").success());
    let mut takeover =
        Watcher::connect_as(broker.port, "sargs-gw-a", ("gw-b", &b_pass), false, &[]);
    assert!(
        takeover.wait_answered(T),
        "the broker answers the takeover's CONNECT"
    );
    hq.publish("sargs/agents/gw-a/commands", b"{\"probe\":1}".to_vec());
    let stolen = topics_within(&mut takeover, Duration::from_secs(2));
    assert!(stolen.is_empty(), "gw-b read gw-a's session: {stolen:?}");
    takeover.disconnect();
    // Control: gw-a's own credentials on the same session do get commands.
    let a_pass = password("gw-a");
    let mut own = Watcher::connect_as(
        broker.port,
        "sargs-gw-a",
        ("gw-a", &a_pass),
        false,
        &["sargs/agents/gw-a/commands"],
    );
    assert!(
        until_received(&hq, &mut own, "sargs/agents/gw-a/commands"),
        "gw-a reads its own commands"
    );
}
