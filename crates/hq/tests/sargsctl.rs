//! `sargsctl` on its own, without an agent: HQ's keys. (The system tests at
//! the top of the workspace run it against real agents.)

// Test and measurement code: a panic here is a failed run with its reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

/// `sargsctl ARGS` in `cwd`; under `SARGS_TEST_RUNNER` (e.g. qemu-user for
/// a cross-built suite, see `cross/test`) through that runner.
fn sargsctl(args: &[&str], cwd: &std::path::Path) -> (bool, String, String) {
    let bin = env!("CARGO_BIN_EXE_sargsctl");
    let runner = std::env::var("SARGS_TEST_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    let mut cmd = match words.next() {
        Some(program) => {
            let mut c = Command::new(program);
            c.args(words).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    let out = cmd
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("sargsctl runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn keygen_makes_a_private_identity_and_a_command_key_and_never_overwrites_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = [
        "keygen",
        "--out",
        "hq/id.txt",
        "--signing-key",
        "hq/sign.pk8",
    ];
    let (ok, out, err) = sargsctl(&args, dir.path());
    assert!(ok, "keygen failed: {err}");
    let mut lines = out.lines();
    let recipient = lines.next().expect("recipient line");
    assert!(recipient.starts_with("age1"), "{out}");
    let key_line = lines.next().expect("command key line");
    assert!(key_line.starts_with("command key: "), "{out}");

    let id_path = dir.path().join("hq/id.txt");
    let text = std::fs::read_to_string(&id_path).expect("identity");
    assert!(
        text.contains(&format!("# public key: {recipient}")),
        "{text}"
    );
    let secret = text
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-1"))
        .expect("secret line");
    let parsed: age::x25519::Identity = secret.parse().expect("a valid age identity");
    assert_eq!(parsed.to_public().to_string(), recipient);
    let mode = std::fs::metadata(&id_path)
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "identity readable by others: {mode:o}");

    let (ok, _, err) = sargsctl(&args, dir.path());
    assert!(!ok, "a second keygen overwrote the keys");
    assert!(err.contains("exists; refusing to overwrite a key"), "{err}");
    let again = std::fs::read_to_string(&id_path).expect("identity");
    assert_eq!(again, text, "the identity changed");
}
