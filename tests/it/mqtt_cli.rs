//! The operator's side over a real Mosquitto: `sargsctl` places and
//! releases holds and watches the fleet, and the demo's printed commands
//! work against its broker.

use chrono::Utc;
use serde_json::Value;

use crate::harness::*;
use crate::mqtt::{setup, AGENT, T};
use crate::support::mosquitto::{Broker, Watcher};

#[test]
fn sargsctl_places_and_releases_over_the_broker_and_watches_the_fleet() {
    let home = Home::new();
    let dir = home.path();
    let (broker, config, mut w) = setup(&home, None, "cam-1", "enabled = false");
    let agent = sargs::agent::Agent::start(&config).expect("agent");
    assert!(w.wait("/status", T, |v| v["state"] == "online").is_some());
    let url = broker.url();
    let common = [
        "--key",
        "hq/signing.pk8",
        "--issuer",
        "HQ duty officer",
        "--broker",
        &url,
        "--wait",
        "15",
    ];
    let from = (Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let to = Utc::now().to_rfc3339();
    let hold = [
        &[
            "hold",
            "--hold",
            "H-9",
            "--case",
            "KP 9",
            "--cameras",
            "cam-1",
            "--from",
            &from,
            "--to",
            &to,
            "--agent",
            AGENT,
            "--id",
            "c-h9",
        ][..],
        &common,
    ]
    .concat();
    let (ok, out, err) = sargsctl_in(&hold, dir);
    assert!(ok, "{out} {err}");
    assert!(out.contains("test-gw c-h9 applied"), "{out}");
    // A fleet command, answered by the one agent there is.
    let inv = [
        &[
            "inventory",
            "--cameras",
            "cam-1",
            "--from",
            &from,
            "--to",
            &to,
            "--fleet",
            "--expect",
            "1",
            "--json",
        ][..],
        &common,
    ]
    .concat();
    let (ok, out, err) = sargsctl_in(&inv, dir);
    assert!(ok, "{out} {err}");
    let r: Value = serde_json::from_str(out.lines().next().unwrap_or_default()).expect("JSON line");
    assert_eq!(r["agent_id"], AGENT);
    // A refusal is an error with the reason.
    let bad = [
        &["release", "--hold", "H-none", "--agent", AGENT][..],
        &common,
    ]
    .concat();
    let (ok, out, err) = sargsctl_in(&bad, dir);
    assert!(!ok, "{out}");
    assert!(
        out.contains("rejected") && out.contains("no hold H-none"),
        "{out} {err}"
    );
    // watch shows the retained status and what happens meanwhile.
    let mut watch = Spawned(
        bin_command(&sargsctl_bin())
            .args(["watch", "--broker", &url, "--seconds", "4"])
            .current_dir(dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("sargsctl watch"),
    );
    let lines = line_channel(watch.stdout.take().expect("stdout"));
    let mut out = String::new();
    // It has subscribed once it shows the retained status.
    while let Ok(line) = lines.recv_timeout(T) {
        out += &line;
        out.push('\n');
        if line.contains("test-gw online") {
            break;
        }
    }
    assert!(out.contains("test-gw online"), "{out}");
    let release = [&["release", "--hold", "H-9", "--agent", AGENT][..], &common].concat();
    assert!(sargsctl_in(&release, dir).0);
    // The rest, until watch ends (--seconds 4).
    for line in lines.iter() {
        out += &line;
        out.push('\n');
    }
    let status = watch.wait().expect("watch exits");
    let mut err = String::new();
    if let Some(mut e) = watch.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    assert!(status.success(), "{err}");
    assert!(out.contains("hold.released H-9"), "{out}");
    agent.stop().expect("stop");
}

#[test]
fn the_demo_connects_to_a_broker_and_its_printed_commands_work() {
    let home = Home::new();
    let broker = Broker::start(home.path(), None);
    let mut w = Watcher::connect(
        broker.port,
        "hq-demo",
        None,
        &["sargs/agents/demo-gateway/status"],
    );
    let dir = home.path().join("demo");
    // --seconds only bounds it: it gets Ctrl-C once the commands have run.
    let mut demo = Spawned(
        bin_command(env!("CARGO_BIN_EXE_sargs"))
            .args(["demo", "--seconds", "60", "--mqtt", &broker.url(), "--dir"])
            .arg(&dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("sargs demo"),
    );
    // Read everything the demo prints (to its end: it prints a summary when it stops).
    let rx = line_channel(demo.stdout.take().expect("stdout"));
    let mut printed = Vec::new();
    while let Ok(line) = rx.recv_timeout(T) {
        let done = line.contains("sargs status");
        printed.push(line);
        if done {
            break;
        }
    }
    assert!(
        w.wait("/status", T, |v| v["state"] == "online").is_some(),
        "the demo agent connects"
    );
    let command = |verb: &str| -> Vec<String> {
        let l = printed
            .iter()
            .find(|l| l.trim_start().starts_with(&format!("sargsctl {verb}")))
            .unwrap_or_else(|| panic!("the demo prints `sargsctl {verb}`: {printed:?}"));
        l.split_whitespace().skip(1).map(str::to_owned).collect()
    };
    let run = |args: Vec<String>| {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        sargsctl_in(&a, home.path())
    };
    let (ok, out, err) = run(command("hold"));
    assert!(
        ok && out.contains("demo-gateway") && out.contains("applied"),
        "{out} {err}"
    );
    let (ok, out, err) = run(command("release"));
    assert!(ok && out.contains("applied"), "{out} {err}");
    // Done: Ctrl-C rather than the rest of its --seconds.
    // SAFETY: SIGINT to our own child.
    unsafe { libc::kill(demo.id() as i32, libc::SIGINT) };
    let status = demo.wait().expect("demo exits");
    assert!(status.success(), "{status:?}");
}

/// The lines a child prints, as they come, read on a thread of their own;
/// the channel closes when the child closes its output.
fn line_channel(out: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}
