//! HQ's side: `sargsctl` writes signed command files that the library and
//! `sargs apply` accept, and refuses bad options without writing anything.

use std::path::Path;

use chrono::Utc;
use sargs_core::command::{Action, Scope, Target, Trust};

use crate::harness::*;

pub const COMMON: [&str; 6] = [
    "--key",
    "hq/signing.pk8",
    "--agent",
    "test-gw",
    "--issuer",
    "HQ duty officer",
];

#[test]
fn every_verb_writes_a_command_the_agent_verifies() {
    let home = Home::new();
    let dir = home.path();
    let key = hq_keygen(dir);
    let trust = Trust::from_b64(&[key]).expect("key");
    let range = [
        "--cameras",
        "cam-1,cam-2",
        "--from",
        "2026-11-20",
        "--to",
        "2026-11-20T09:30:00Z",
    ];
    let verbs: Vec<(Vec<&str>, &str)> = vec![
        (
            [
                &["hold", "--hold", "H-1", "--case", "KP 1/2026"][..],
                &range,
            ]
            .concat(),
            "hold.place",
        ),
        (
            vec![
                "hold",
                "--hold",
                "H-2",
                "--case",
                "c",
                "--segments",
                "test-gw/cam-1/3,test-gw/cam-1/4",
                "--until",
                "2027-01-01",
            ],
            "hold.place",
        ),
        (vec!["release", "--hold", "H-1"], "hold.release"),
        (
            vec![
                "extend",
                "--hold",
                "H-1",
                "--beyond-cap-until",
                "2030-01-01",
            ],
            "hold.extend",
        ),
        (
            [&["request", "open", "--request", "R-1"][..], &range].concat(),
            "request.open",
        ),
        (
            vec![
                "request",
                "extend",
                "--request",
                "R-1",
                "--due",
                "2027-01-15",
            ],
            "request.extend",
        ),
        (
            vec!["request", "close", "--request", "R-1"],
            "request.close",
        ),
        ([&["inventory"][..], &range].concat(), "inventory"),
        (
            [
                &["restrict", "--restriction", "X-1", "--reason", "contested"][..],
                &range,
            ]
            .concat(),
            "restrict",
        ),
        (vec!["restrict", "--lift", "X-1"], "unrestrict"),
        (
            [&["erase", "--request", "R-1"][..], &range].concat(),
            "erase",
        ),
        (
            vec![
                "resend",
                "--receipts-from",
                "7",
                "--records-from",
                "cam-1=4711",
            ],
            "resend",
        ),
    ];
    for (i, (args, kind)) in verbs.into_iter().enumerate() {
        let out = format!("cmd-{i}.json");
        let full = [&args[..], &COMMON, &["--out", &out]].concat();
        let (ok, stdout, err) = sargsctl_in(&full, dir);
        assert!(ok, "{args:?}: {err}");
        assert!(stdout.contains(kind), "{stdout}");
        let bytes = std::fs::read(dir.join(&out)).expect("written");
        let v =
            sargs_core::command::verify(&bytes, &trust, "test-gw", Utc::now()).expect("verifies");
        assert_eq!(v.command.action.kind(), kind);
        assert_eq!(v.command.target, Target::Agent("test-gw".into()));
        assert_eq!(v.command.issuer, "HQ duty officer");
        if i == 0 {
            let Action::HoldPlace {
                scope: Scope::Range { cameras, from, to },
                case,
                ..
            } = v.command.action
            else {
                panic!("hold.place with a range");
            };
            assert_eq!(cameras, ["cam-1", "cam-2"]);
            assert_eq!(from.to_rfc3339(), "2026-11-20T00:00:00+00:00");
            assert_eq!(to.to_rfc3339(), "2026-11-20T09:30:00+00:00");
            assert_eq!(case, "KP 1/2026");
        }
    }
}

#[test]
fn bad_options_name_the_option_and_write_nothing() {
    let home = Home::new();
    let dir = home.path();
    hq_keygen(dir);
    let hold = ["hold", "--hold", "H", "--case", "c", "--cameras", "a"];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            [&hold[..], &["--from", "2026-11-21", "--to", "2026-11-20"]].concat(),
            "--from",
        ),
        (
            [&hold[..], &["--from", "yesterday", "--to", "2026-11-20"]].concat(),
            "--from",
        ),
        (hold[..5].to_vec(), "--cameras"),
        (
            vec![
                "hold",
                "--hold",
                "H bad",
                "--case",
                "c",
                "--segments",
                "x/y/1",
            ],
            "args.hold",
        ),
        (
            vec!["release", "--hold", "H", "--expires-in", "90d"],
            "--expires-in",
        ),
        (vec!["resend"], "--receipts-from"),
        (vec!["resend", "--records-from", "cam-1"], "--records-from"),
        (
            vec!["resend", "--records-from", "cam/1=3"],
            "args.records_from",
        ),
    ];
    for (args, named) in cases {
        let full = [&args[..], &COMMON, &["--out", "bad.json"]].concat();
        let (ok, _, err) = sargsctl_in(&full, dir);
        assert!(!ok, "{args:?} was accepted");
        assert!(err.contains(named), "{args:?}: {err} should name {named}");
        assert!(!dir.join("bad.json").exists(), "{args:?} wrote a file");
    }
    // Neither --agent nor --fleet.
    let (ok, _, err) = sargsctl_in(
        &[
            "release",
            "--hold",
            "H",
            "--key",
            "hq/signing.pk8",
            "--issuer",
            "x",
            "--out",
            "bad.json",
        ],
        dir,
    );
    assert!(!ok && err.contains("--agent"), "{err}");
    // An existing --out is never overwritten.
    std::fs::write(dir.join("taken.json"), b"keep").expect("write");
    let full = [
        &["release", "--hold", "H"][..],
        &COMMON,
        &["--out", "taken.json"],
    ]
    .concat();
    let (ok, _, err) = sargsctl_in(&full, dir);
    assert!(!ok && err.contains("--out"), "{err}");
    assert_eq!(
        std::fs::read(dir.join("taken.json")).expect("read"),
        b"keep"
    );
}

#[test]
fn hold_and_release_from_sargsctl_through_sargs_apply() {
    let home = Home::new();
    let dir = home.path();
    let key = hq_keygen(dir);
    let cams = format!(
        "[retention]\ntrust_unsynchronised_clock = true\nfree_space_floor_mb = 1\n\n[hq]\ncommand_keys = [\"{key}\"]\n\n{}",
        test_camera("cam-1", "cctv", "")
    );
    let config = home.config_with(2, "min_free_mb = 1", &cams);
    record_sealed(&config, &["cam-1"], 1);
    let cfg = home.config_path();
    let cfg = cfg.to_str().expect("utf8");
    let now = Utc::now();
    let from = (now - chrono::Duration::hours(1)).to_rfc3339();
    let to = (now + chrono::Duration::hours(1)).to_rfc3339();
    let hold = [
        &[
            "hold",
            "--hold",
            "H-7",
            "--case",
            "KP 7",
            "--cameras",
            "cam-1",
            "--from",
            &from,
            "--to",
            &to,
        ][..],
        &COMMON,
        &["--out", "hold.json"],
    ]
    .concat();
    assert!(sargsctl_in(&hold, dir).0);
    let (ok, out, err) = sargs_in(&["apply", "--config", cfg, "hold.json"], dir);
    assert!(ok, "{out} {err}");
    let resp: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(resp["status"], "applied");
    assert!(
        resp["result"]["covered_segments"].as_u64().unwrap_or(0) >= 2,
        "{resp}"
    );
    let status = |dir: &Path| -> serde_json::Value {
        let (ok, out, err) = sargs_in(&["status", "--json", "--config", cfg], dir);
        assert!(ok, "{err}");
        serde_json::from_str(&out).expect("status JSON")
    };
    assert_eq!(status(dir)["holds"], serde_json::json!(["H-7"]));
    let (ok, text, _) = sargs_in(&["status", "--config", cfg], dir);
    assert!(
        ok && text.contains("class cctv") && text.contains("H-7"),
        "{text}"
    );
    let release = [
        &["release", "--hold", "H-7"][..],
        &COMMON,
        &["--out", "release.json"],
    ]
    .concat();
    assert!(sargsctl_in(&release, dir).0);
    let (ok, out, err) = sargs_in(&["apply", "--config", cfg, "release.json"], dir);
    assert!(ok, "{out} {err}");
    assert_eq!(status(dir)["holds"], serde_json::json!([]));
    // A command for another agent is refused with its reason.
    let other = [
        &[
            "release",
            "--hold",
            "H-7",
            "--key",
            "hq/signing.pk8",
            "--agent",
            "gw-elsewhere",
            "--issuer",
            "x",
        ][..],
        &["--out", "other.json"],
    ]
    .concat();
    assert!(sargsctl_in(&other, dir).0);
    let (ok, out, _) = sargs_in(&["apply", "--config", cfg, "other.json"], dir);
    assert!(!ok);
    assert!(out.contains("wrong-target"), "{out}");
}
