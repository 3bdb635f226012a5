//! The agent under a service manager: systemd's notify protocol
//! (`Type=notify`, `WatchdogSec=`; deploy/sargs.service).
//!
//! - `READY=1` once start-up is complete: the data directory is taken, the
//!   device key loaded, the retention engine open, the HQ link and every
//!   camera thread started. Until then systemd reports the unit as
//!   "activating", and a start-up error ends the process instead.
//! - `WATCHDOG=1` every quarter of `WATCHDOG_USEC`, but only while every
//!   watched loop is alive ([`crate::liveness`]): a camera loop or the
//!   retention loop that has shown no sign of life for half of
//!   `WATCHDOG_USEC` (at least [`MIN_STALL`]) stops the pings, the reason
//!   goes to the log and into `STATUS=`, and systemd restarts the agent.
//!   The pings come from the main thread's event loop, which also waits for
//!   the stop signals, so a stuck main thread stops them too.
//! - `STOPPING=1` when shutdown begins (before the open segments close).
//!
//! Without `NOTIFY_SOCKET` (run by hand, `sargs demo`) nothing is sent. The
//! protocol is one datagram of `KEY=VALUE` lines to the Unix socket named by
//! `NOTIFY_SOCKET` (a path, or `@name` for an abstract socket): written here
//! in a few lines rather than taken from a crate, so that the socket is a
//! value the tests hand over, not only process environment. A failed send
//! is logged and never stops the agent.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

use crate::liveness::Liveness;

/// A loop is declared stalled after at least this long without a beat,
/// however short `WatchdogSec` is (a camera teardown may take 5 s, a closing
/// segment 10 s).
pub const MIN_STALL: Duration = Duration::from_secs(20);

/// Where notifications go: `NOTIFY_SOCKET`'s socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifySocket {
    Path(PathBuf),
    /// Linux abstract socket (`@name` in `NOTIFY_SOCKET`).
    Abstract(Vec<u8>),
}

impl NotifySocket {
    /// Parses `NOTIFY_SOCKET`; None for an empty or relative value (systemd
    /// only ever sets absolute paths or `@` names).
    pub fn parse(value: &std::ffi::OsStr) -> Option<NotifySocket> {
        use std::os::unix::ffi::OsStrExt;
        let bytes = value.as_bytes();
        match bytes.first() {
            Some(b'@') => Some(NotifySocket::Abstract(bytes[1..].to_vec())),
            Some(b'/') => Some(NotifySocket::Path(PathBuf::from(value))),
            _ => None,
        }
    }

    /// Sends one notification datagram.
    pub fn send(&self, message: &str) -> std::io::Result<()> {
        let sock = UnixDatagram::unbound()?;
        let sent = match self {
            NotifySocket::Path(p) => sock.send_to(message.as_bytes(), p)?,
            NotifySocket::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                sock.send_to_addr(message.as_bytes(), &addr)?
            }
        };
        if sent != message.len() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                "notification datagram cut short",
            ));
        }
        Ok(())
    }
}

/// The service manager's end of the protocol.
#[derive(Debug)]
pub struct ServiceManager {
    socket: Option<NotifySocket>,
    watchdog: Option<Duration>,
    /// The last stall reported, so each change is logged once.
    reported: std::sync::Mutex<Vec<String>>,
}

impl ServiceManager {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` (a watchdog
    /// meant for another process is not ours).
    pub fn from_env() -> ServiceManager {
        let socket = std::env::var_os("NOTIFY_SOCKET").and_then(|v| NotifySocket::parse(&v));
        let for_us = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
            .is_none_or(|pid| pid == std::process::id());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|&u| u > 0 && for_us)
            .map(Duration::from_micros);
        ServiceManager::new(socket, watchdog)
    }

    /// A service manager listening on `socket`, with a watchdog of `watchdog`.
    pub fn new(socket: Option<NotifySocket>, watchdog: Option<Duration>) -> ServiceManager {
        ServiceManager {
            socket,
            watchdog,
            reported: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// How often to feed the watchdog, if it is enabled.
    pub fn watchdog_period(&self) -> Option<Duration> {
        self.watchdog
            .filter(|_| self.socket.is_some())
            .map(|d| d / 4)
    }

    /// How long a loop may be silent before the watchdog is starved.
    pub fn stall_limit(&self) -> Duration {
        self.watchdog.map_or(MIN_STALL, |d| (d / 2).max(MIN_STALL))
    }

    fn send(&self, lines: &[&str]) {
        let Some(socket) = &self.socket else {
            return;
        };
        let mut message = lines.join("\n");
        message.push('\n');
        if let Err(e) = socket.send(&message) {
            tracing::warn!(error = %e, "could not notify the service manager");
        }
    }

    /// Start-up is complete.
    pub fn ready(&self, status: &str) {
        self.send(&["READY=1", &status_line(status)]);
    }

    /// Shutdown has begun.
    pub fn stopping(&self) {
        self.send(&["STOPPING=1", "STATUS=stopping"]);
    }

    /// One watchdog turn: `WATCHDOG=1` if every loop of `liveness` is
    /// alive; otherwise no ping, and the stalled loops logged and shown in
    /// `STATUS=`. Returns whether it pinged.
    pub fn feed(&self, liveness: &Liveness, status: &str) -> bool {
        let stalled = liveness.stalled(self.stall_limit());
        let mut reported = crate::sync::lock(&self.reported);
        if stalled.is_empty() {
            if !reported.is_empty() {
                tracing::info!("every loop is alive again; feeding the watchdog");
                reported.clear();
                self.send(&[&status_line(status)]);
            }
            self.send(&["WATCHDOG=1"]);
            return true;
        }
        if *reported != stalled {
            tracing::error!(stalled = %stalled.join("; "),
                "a loop of the agent is stuck: not feeding the watchdog, so the service manager restarts the agent");
            self.send(&[&status_line(&format!("stalled: {}", stalled.join("; ")))]);
            *reported = stalled;
        }
        false
    }
}

/// A `STATUS=` line: one line of text (a newline would start another key).
fn status_line(text: &str) -> String {
    format!("STATUS={}", text.replace('\n', " "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    fn listener() -> (tempfile::TempDir, UnixDatagram, NotifySocket) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("n.sock");
        let sock = UnixDatagram::bind(&path).expect("bind");
        sock.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        (dir, sock, NotifySocket::Path(path))
    }

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn notify_socket_values_parse_as_systemd_sets_them() {
        assert_eq!(
            NotifySocket::parse(OsStr::new("/run/systemd/notify")),
            Some(NotifySocket::Path("/run/systemd/notify".into()))
        );
        assert_eq!(
            NotifySocket::parse(OsStr::new("@/org/freedesktop/systemd1/notify/1")),
            Some(NotifySocket::Abstract(
                b"/org/freedesktop/systemd1/notify/1".to_vec()
            ))
        );
        assert_eq!(NotifySocket::parse(OsStr::new("")), None);
        assert_eq!(NotifySocket::parse(OsStr::new("relative.sock")), None);
    }

    #[test]
    fn ready_watchdog_and_stopping_reach_a_real_socket() {
        let (_dir, sock, addr) = listener();
        let sm = ServiceManager::new(Some(addr), Some(Duration::from_secs(60)));
        assert_eq!(sm.watchdog_period(), Some(Duration::from_secs(15)));
        assert_eq!(sm.stall_limit(), Duration::from_secs(30));
        sm.ready("recording 2 camera(s)\ninto /var/lib/sargs");
        assert_eq!(
            recv(&sock),
            "READY=1\nSTATUS=recording 2 camera(s) into /var/lib/sargs\n"
        );
        let live = Liveness::new();
        let _beat = live.register("camera a");
        assert!(sm.feed(&live, "ok"));
        assert_eq!(recv(&sock), "WATCHDOG=1\n");
        sm.stopping();
        assert_eq!(recv(&sock), "STOPPING=1\nSTATUS=stopping\n");
    }

    #[test]
    fn a_stalled_loop_starves_the_watchdog_and_shows_in_status() {
        let (_dir, sock, addr) = listener();
        // A short watchdog: the floor of MIN_STALL still applies.
        let sm = ServiceManager::new(Some(addr), Some(Duration::from_secs(2)));
        assert_eq!(sm.stall_limit(), MIN_STALL);
        let live = Liveness::new();
        let beat = live.register("camera a");
        let dead = live.register("camera b");
        let _ = std::thread::spawn(move || {
            let _dead = dead;
            panic!("stuck");
        })
        .join();
        assert!(!sm.feed(&live, "ok"), "no ping while a loop is dead");
        assert_eq!(recv(&sock), "STATUS=stalled: camera b: thread panicked\n");
        // Reported once, not at every turn.
        assert!(!sm.feed(&live, "ok"));
        sock.set_nonblocking(true).expect("nonblocking");
        let mut buf = [0u8; 64];
        assert!(sock.recv(&mut buf).is_err(), "nothing more was sent");
        beat.beat();
    }

    #[test]
    fn an_abstract_socket_is_reached_too() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("sargs-test-notify-{}", std::process::id());
        let addr =
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("addr");
        let sock = UnixDatagram::bind_addr(&addr).expect("bind abstract");
        sock.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let value = format!("@{name}");
        let sm = ServiceManager::new(NotifySocket::parse(OsStr::new(&value)), None);
        assert_eq!(sm.watchdog_period(), None);
        sm.ready("up");
        assert_eq!(recv(&sock), "READY=1\nSTATUS=up\n");
    }

    #[test]
    fn without_a_socket_nothing_is_sent_and_no_watchdog_runs() {
        let sm = ServiceManager::new(None, Some(Duration::from_secs(60)));
        assert_eq!(sm.watchdog_period(), None);
        sm.ready("up");
        sm.stopping();
    }
}
