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
//!
//! The running agent reads the inbox when a `.cmd` lands in it ([`Watch`],
//! inotify) and on every idle turn of its retention thread (every 2 s), so a
//! command is never missed: inotify only makes it quick.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use inotify::{EventMask, EventStream, Inotify, WatchMask};

use super::apply::Response;
use super::Retention;
use sargs_core::fsutil;

pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("inbox")
}

/// Notice of commands landing in the inbox. Must be made and used inside a
/// tokio runtime with I/O enabled.
pub struct Watch {
    events: Option<EventStream<Vec<u8>>>,
    /// A failure to watch was logged (once, not on every idle turn).
    warned: bool,
}

impl Watch {
    /// Creates the inbox (private) and watches it. If either fails, the
    /// reason is logged and [`Watch::landed`] never returns: the inbox is
    /// then read on idle turns only, until [`Watch::renew`] succeeds.
    pub fn new(data_dir: &Path) -> Watch {
        let mut w = Watch {
            events: None,
            warned: false,
        };
        w.renew(data_dir);
        w
    }

    /// Watches the inbox again if the watch was lost (the directory was
    /// removed, inotify failed).
    pub fn renew(&mut self, data_dir: &Path) {
        if self.events.is_some() {
            return;
        }
        let dir = dir(data_dir);
        let watched = fsutil::create_private_dir(&dir)
            .and_then(|()| Inotify::init())
            .and_then(|inotify| {
                // `write_atomic` renames into place (MOVED_TO); a copy closes it.
                inotify
                    .watches()
                    .add(&dir, WatchMask::MOVED_TO | WatchMask::CLOSE_WRITE)?;
                inotify.into_event_stream(vec![0u8; 4096])
            });
        match watched {
            Ok(events) => {
                self.events = Some(events);
                self.warned = false;
            }
            Err(e) if !self.warned => {
                self.warned = true;
                tracing::warn!(dir = %dir.display(), error = %e,
                    "inbox: cannot watch; commands are read every 2 s")
            }
            Err(e) => {
                tracing::debug!(dir = %dir.display(), error = %e, "inbox: still cannot watch")
            }
        }
    }

    /// Returns once a `.cmd` file has landed (or the watch ended: then the
    /// inbox should be read, and the watch is renewed on the next idle turn).
    pub async fn landed(&mut self) {
        let Some(events) = self.events.as_mut() else {
            return std::future::pending().await;
        };
        loop {
            match events.next().await {
                Some(Ok(e)) if e.mask.contains(EventMask::IGNORED) => break,
                Some(Ok(e)) if e.mask.contains(EventMask::Q_OVERFLOW) => return,
                Some(Ok(e)) => {
                    let name = e.name.as_deref().map(Path::new);
                    if name.is_some_and(|n| n.extension().is_some_and(|x| x == "cmd")) {
                        return;
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "inbox: watch failed");
                    break;
                }
                None => break,
            }
        }
        self.events = None;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    /// `landed` within 10 s (a hang fails the test instead of blocking it).
    async fn lands(w: &mut Watch) -> bool {
        tokio::time::timeout(Duration::from_secs(10), w.landed())
            .await
            .is_ok()
    }

    async fn quiet(w: &mut Watch) -> bool {
        tokio::time::timeout(Duration::from_millis(300), w.landed())
            .await
            .is_err()
    }

    #[test]
    fn a_command_landing_wakes_the_watch_and_other_files_do_not() {
        let data = tempfile::tempdir().expect("tempdir");
        runtime().block_on(async {
            let mut w = Watch::new(data.path());
            let inbox = dir(data.path());
            assert!(inbox.is_dir(), "the watch creates the inbox");
            fsutil::write_atomic(&inbox.join("a.response"), b"{}", 0o600).expect("write");
            assert!(quiet(&mut w).await, "a response is not a command");
            fsutil::write_atomic(&inbox.join("b.cmd"), b"x", 0o600).expect("write");
            assert!(lands(&mut w).await, "a command renamed into place");
            std::fs::write(inbox.join("c.cmd"), b"x").expect("write");
            assert!(lands(&mut w).await, "a command copied in");
        });
    }

    #[test]
    fn a_removed_inbox_ends_the_watch_until_it_is_renewed() {
        let data = tempfile::tempdir().expect("tempdir");
        runtime().block_on(async {
            let mut w = Watch::new(data.path());
            let inbox = dir(data.path());
            std::fs::remove_dir(&inbox).expect("remove");
            assert!(lands(&mut w).await, "the end of the watch is reported");
            assert!(
                quiet(&mut w).await,
                "no watch: only idle turns read the inbox"
            );
            w.renew(data.path());
            assert!(inbox.is_dir(), "renewing creates the inbox again");
            fsutil::write_atomic(&inbox.join("d.cmd"), b"x", 0o600).expect("write");
            assert!(lands(&mut w).await, "the renewed watch sees commands");
        });
    }
}
