//! The command line: check-config errors and the demo.

use std::process::Command;

use crate::harness::*;

fn sargs(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sargs"))
        .args(args)
        .output()
        .expect("sargs runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_accepts_good_and_names_file_and_key_of_bad() {
    let home = Home::new();
    home.config(60, &test_camera("cam-ok", "cctv", ""));
    let path = home.config_path();
    let p = path.to_str().expect("utf8");
    let (ok, out, err) = sargs(&["check-config", "--config", p]);
    assert!(ok, "{err}");
    assert!(out.contains("OK"), "{out}");

    let good = std::fs::read_to_string(&path).expect("read");
    let cases = [
        (
            good.replace("[agent]\n", "[agent]\ncolour = \"blue\"\n"),
            "colour",
        ),
        (
            good.replace("class = \"cctv\"", "class = \"forever\""),
            "class",
        ),
        (
            good.replace(
                "purpose = \"property-protection\"",
                "purpose = \"curiosity\"",
            ),
            "purpose",
        ),
        (
            good.replace("recipients = [\"", "recipients = [\"x"),
            "recipients",
        ),
        (
            good.replace("segment_seconds = 60", "segment_seconds = 0"),
            "segment_seconds",
        ),
        (good.replace("width = 320", "width = 321"), "width"),
        (
            good.replace("policy = \"policy.toml\"", "policy = \"missing.toml\""),
            "missing.toml",
        ),
        (good.replace("[seal]", "[seal"), "sargs.toml"),
    ];
    for (text, key) in cases {
        std::fs::write(&path, &text).expect("write");
        let (ok, _, err) = sargs(&["check-config", "--config", p]);
        assert!(!ok, "bad config accepted:\n{text}");
        assert!(err.contains(key), "error names {key}: {err}");
        assert!(
            err.contains(home.path().to_str().expect("utf8")),
            "error names the file: {err}"
        );
    }
}

#[test]
fn demo_records_and_prints_a_working_age_command() {
    let home = Home::new();
    let dir = home.path().join("demo");
    let d = dir.to_str().expect("utf8");
    let (ok, out, err) = sargs(&["demo", "--dir", d, "--seconds", "12"]);
    assert!(ok, "demo failed: {err}");
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with("age -d -i"))
        .unwrap_or_else(|| panic!("demo prints an age command:\n{out}"));
    // Run the printed command (without the player) and probe what it decrypts.
    let cmd = line.trim().split(" > ").next().expect("command");
    let args: Vec<&str> = cmd.split_whitespace().collect();
    let plain = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("age runs");
    assert!(
        plain.status.success(),
        "{}",
        String::from_utf8_lossy(&plain.stderr)
    );
    assert_eq!(probe(&plain.stdout).codec, "h264");

    // A second run reuses the folder and continues the chains; the pause
    // between the runs (longer than the 2 s contiguity tolerance) is a gap.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let (ok, _, err) = sargs(&["demo", "--dir", d, "--seconds", "4"]);
    assert!(ok, "second demo run failed: {err}");
    let (ok, out, err) = sargs(&["verify", "--config", &format!("{d}/sargs.toml")]);
    assert!(ok, "verify: {out}{err}");
    assert!(
        out.contains("1 gaps"),
        "the pause between runs is a gap record: {out}"
    );
}
