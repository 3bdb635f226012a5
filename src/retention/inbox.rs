//! The inbox: how `sargs apply` hands a command file to a running agent.
//!
//! ```text
//! <data_dir>/inbox/<name>.cmd        the signed command, as given (written atomically)
//! <data_dir>/inbox/<name>.response   the agent's answer (written atomically)
//! ```
//!
//! Invariant: the agent writes `.response` only after the command's effect is
//! durable (or it was refused), then removes `.cmd`; a `.cmd` found at start
//! is applied then (a command applied twice is refused as a replay, with the
//! original outcome, so a crash between the two steps changes nothing).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::apply::Response;
use super::Retention;
use crate::fsutil;

pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("inbox")
}

/// Applies every waiting command at `now`; returns how many.
pub fn drain(data_dir: &Path, retention: &Retention, now: DateTime<Utc>) -> usize {
    let dir = dir(data_dir);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return 0;
    };
    let mut cmds: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cmd"))
        .collect();
    cmds.sort();
    let mut n = 0;
    for cmd in cmds {
        let bytes = match std::fs::read(&cmd) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(file = %cmd.display(), error = %e, "inbox: unreadable command");
                continue;
            }
        };
        let resp = match retention.apply(&bytes, now) {
            Ok(r) => r,
            Err(e) => {
                // Not applied and not refused: leave the file for the next try.
                tracing::error!(file = %cmd.display(), error = %e, "inbox: could not apply");
                continue;
            }
        };
        let out = cmd.with_extension("response");
        let text = serde_json::to_vec_pretty(&resp).unwrap_or_default();
        if let Err(e) = fsutil::write_atomic(&out, &text, 0o600) {
            tracing::error!(file = %out.display(), error = %e, "inbox: could not write the response");
            continue;
        }
        if let Err(e) = std::fs::remove_file(&cmd) {
            tracing::warn!(file = %cmd.display(), error = %e, "inbox: could not remove an applied command");
        }
        n += 1;
    }
    n
}

/// Hands `bytes` to the running agent and waits up to `timeout` for its answer.
pub fn submit(data_dir: &Path, bytes: &[u8], timeout: Duration) -> Result<Response, String> {
    let dir = dir(data_dir);
    fsutil::create_private_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let name = format!(
        "{}-{}",
        Utc::now().format("%Y%m%dT%H%M%S%.6f"),
        std::process::id()
    );
    let cmd = dir.join(format!("{name}.cmd"));
    let out = dir.join(format!("{name}.response"));
    fsutil::write_atomic(&cmd, bytes, 0o600).map_err(|e| format!("{}: {e}", cmd.display()))?;
    let start = Instant::now();
    loop {
        match std::fs::read(&out) {
            Ok(b) => {
                let resp =
                    serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", out.display()))?;
                let _ = std::fs::remove_file(&out);
                return Ok(resp);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", out.display())),
        }
        if start.elapsed() > timeout {
            return Err(format!(
                "the running agent did not answer within {} s; the command stays queued in {} and is applied when the agent gets to it",
                timeout.as_secs(),
                cmd.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
