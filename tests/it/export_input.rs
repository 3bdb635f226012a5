//! `sargsctl export` with bad input names what is wrong and where and writes
//! nothing; it exports from a copy of a data directory and into an existing
//! empty folder; and beside a running agent it checks restrictions against
//! the live index.

use std::time::Duration;

use sargs_hq::export::{ExportRecord, RefusalReason};

use crate::export::{segment_ids, snapshot, wide_range, Hq};
use crate::harness::*;

/// The names in a folder, to see that nothing (not even a staging folder)
/// was left behind.
fn names(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn bad_input_is_named_and_nothing_is_written() {
    let hq = Hq::new();
    let config = sargs::config::Config::load(&hq.home.config_path()).expect("config");
    record_sealed(&config, &["cam-1"], 1);
    let segments = segment_ids(&hq.records());
    assert!(!segments.is_empty());
    let range = wide_range();
    let range: Vec<&str> = range.iter().map(String::as_str).collect();
    let cam1 = [&["--cameras", "cam-1"][..], &range].concat();
    std::fs::create_dir(hq.dir().join("full")).expect("mkdir");
    std::fs::write(hq.dir().join("full/keep.txt"), b"keep").expect("write");
    let data = hq.dir().join("data");
    let before = snapshot(&data);
    let listing = names(hq.dir());
    let other = format!(
        "other-gw/cam-1/{}",
        segments[0].rsplit('/').next().expect("seq")
    );
    let wrong_key = hq.command_key.clone();
    let none: Vec<&str> = Vec::new();
    let cases: Vec<(Vec<&str>, Vec<&str>, &str)> = vec![
        (cam1.clone(), none.clone(), "no such data directory"),
        (
            cam1.clone(),
            vec!["-i", "hq/identity.txt"],
            "wrong identity",
        ),
        (
            cam1.clone(),
            vec!["-i", "nowhere.txt"],
            "identity nowhere.txt",
        ),
        (
            cam1.clone(),
            vec!["--device-key", &wrong_key],
            "wrong device key",
        ),
        (
            [&["--cameras", "cam-9"][..], &range].concat(),
            none.clone(),
            "no camera \"cam-9\"",
        ),
        (
            vec![
                "--cameras",
                "cam-1",
                "--from",
                "2026-11-21",
                "--to",
                "2026-11-20",
            ],
            none.clone(),
            "--from",
        ),
        (
            vec!["--segments", &other],
            none.clone(),
            "not of agent test-gw",
        ),
        (
            vec!["--segments", "test-gw/cam-1/9999"],
            none.clone(),
            "no segment test-gw/cam-1/9999",
        ),
        (
            vec!["--segments", "test-gw/cam-1"],
            none.clone(),
            "not agent/camera/sequence",
        ),
        (cam1.clone(), vec!["--out", "full"], "is not empty"),
        (
            cam1.clone(),
            vec!["--out", "data/x"],
            "inside the data directory",
        ),
        (cam1.clone(), vec!["--case", " "], "case"),
        (cam1.clone(), vec!["--key", "hq/nowhere.pk8"], "--key"),
    ];
    for (i, (scope, extra, needle)) in cases.into_iter().enumerate() {
        // The first case names a data directory that does not exist.
        let data = if i == 0 { "nowhere" } else { "data" };
        let (ok, stdout, err) = hq.export_from(data, &scope, "out", &extra);
        assert!(!ok, "case {i} accepted: {stdout}");
        assert!(
            err.contains(needle),
            "case {i}: {err:?} should say {needle:?}"
        );
        assert_eq!(names(hq.dir()), listing, "case {i} left something behind");
    }
    assert_eq!(names(&hq.dir().join("full")), ["keep.txt"]);
    assert_eq!(snapshot(&data), before, "the data directory is not changed");

    // A copy of the data directory without its index: restrictions cannot be
    // checked, so nothing is exported.
    let copy = hq.dir().join("copy");
    let status = std::process::Command::new("cp")
        .args(["-a", "data", "copy"])
        .current_dir(hq.dir())
        .status()
        .expect("cp");
    assert!(status.success());
    let index = copy.join("index.sqlite");
    std::fs::rename(&index, hq.dir().join("index.sqlite.aside")).expect("move index");
    let (ok, _, err) = hq.export_from("copy", &cam1, "from-copy", &[]);
    assert!(
        !ok && err.contains("index.sqlite") && err.contains("restricted"),
        "{err}"
    );
    assert!(!hq.dir().join("from-copy").exists());
    // With its index, the copy exports — into an existing empty folder.
    std::fs::rename(hq.dir().join("index.sqlite.aside"), &index).expect("restore index");
    std::fs::create_dir(hq.dir().join("from-copy")).expect("mkdir");
    let copied = snapshot(&copy);
    let (ok, out, err) = hq.export_from("copy", &cam1, "from-copy", &[]);
    assert!(ok, "{out} {err}");
    let record = hq.check_export("from-copy");
    assert_eq!(record.sources.len(), segments.len());
    assert_eq!(
        names(&hq.dir().join("from-copy")),
        ["cameras", "export.json"]
    );
    assert_eq!(snapshot(&copy), copied, "the copy is not changed");
}

#[test]
fn beside_a_running_agent_restrictions_are_read_live() {
    let hq = Hq::new();
    let mut agent = spawn_agent(&hq.home);
    let dir = hq.home.camera_dir("cam-1");
    assert!(
        wait_until(Duration::from_secs(30), || dir.exists()
            && segments(&dir).len() >= 2),
        "the agent records"
    );
    let ids = segment_ids(&hq.records());
    let resp = hq.apply(
        "c-restrict",
        &[
            "restrict",
            "--restriction",
            "X-9",
            "--reason",
            "objection",
            "--segments",
            &ids[0],
        ],
    );
    assert_eq!(resp["status"], "applied", "{resp}");
    let scope = ids[..2].join(",");
    let (ok, out, err) = hq.export(&["--segments", &scope], "export", &["--json"]);
    assert!(!ok, "{out}");
    assert!(err.contains("1 record(s) in scope refused"), "{err}");
    let printed: ExportRecord = serde_json::from_str(&out).expect("JSON");
    let record = hq.check_export("export");
    assert_eq!(printed, record);
    assert!(
        record.restrictions_as_of.live,
        "read beside the running agent"
    );
    assert_eq!(record.refused[0].reason, RefusalReason::Restricted);
    assert_eq!(record.refused[0].restriction.as_deref(), Some("X-9"));
    assert_eq!(record.sources[0].segment_id, ids[1]);
    // SAFETY: sending SIGTERM to our own child.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    let status = agent.wait().expect("wait");
    assert!(status.success(), "clean stop: {status:?}");
}
