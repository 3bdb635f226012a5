//! `sargs run` under systemd's notify protocol, with a real Unix datagram
//! socket in place of the service manager: READY=1 once recording has
//! started, WATCHDOG=1 at a quarter of WATCHDOG_USEC, STOPPING=1 on SIGTERM.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use crate::harness::*;

/// Datagrams received, each with when it arrived.
fn collect(sock: &UnixDatagram, until: Instant, seen: &mut Vec<(Instant, String)>) {
    let mut buf = [0u8; 4096];
    while Instant::now() < until {
        if let Ok(n) = sock.recv(&mut buf) {
            seen.push((
                Instant::now(),
                String::from_utf8_lossy(&buf[..n]).into_owned(),
            ));
        }
    }
}

#[test]
fn run_notifies_ready_feeds_the_watchdog_and_notifies_stopping() {
    let home = Home::new();
    home.config(2, &test_camera("cam-n", "cctv", ""));
    let path = home.path().join("notify.sock");
    assert!(
        path.as_os_str().len() < 108,
        "socket path too long for sun_path: {}",
        path.display()
    );
    let sock = UnixDatagram::bind(&path).expect("bind the notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");

    let mut agent = Spawned(
        bin_command(env!("CARGO_BIN_EXE_sargs"))
            .args(["run", "--config"])
            .arg(home.config_path())
            .env("NOTIFY_SOCKET", &path)
            .env("WATCHDOG_USEC", "2000000")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("sargs run"),
    );
    let mut seen = Vec::new();
    let start = Instant::now();
    let ready = loop {
        collect(
            &sock,
            Instant::now() + Duration::from_millis(200),
            &mut seen,
        );
        if let Some(i) = seen.iter().position(|(_, m)| m.contains("READY=1")) {
            break i;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no READY=1: {seen:?}"
        );
        assert!(
            agent.try_wait().expect("wait").is_none(),
            "the agent exited"
        );
    };
    assert_eq!(ready, 0, "READY=1 comes first: {seen:?}");
    assert!(
        seen[0].1.contains("STATUS=recording 1 camera(s) into "),
        "{seen:?}"
    );
    // Start-up was complete: the device key exists and the camera runs.
    assert!(home.path().join("data/device/signing.pk8").exists());

    // WATCHDOG_USEC=2 s: a ping every 0.5 s.
    let window = Instant::now();
    collect(&sock, window + Duration::from_secs(4), &mut seen);
    let pings: Vec<Instant> = seen
        .iter()
        .filter(|(t, m)| *t >= window && m == "WATCHDOG=1\n")
        .map(|(t, _)| *t)
        .collect();
    assert!(pings.len() >= 4, "pings in 4 s: {}: {seen:?}", pings.len());
    assert!(
        pings
            .windows(2)
            .all(|w| w[1] - w[0] < Duration::from_millis(1500)),
        "pings well within the 2 s watchdog: {pings:?}"
    );

    // SIGTERM: STOPPING=1, then a clean exit with the segment sealed.
    // SAFETY: kill has no memory preconditions; the pid is our child's.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    let stop = Instant::now();
    while stop.elapsed() < Duration::from_secs(30) && agent.try_wait().expect("wait").is_none() {
        collect(
            &sock,
            Instant::now() + Duration::from_millis(100),
            &mut seen,
        );
    }
    collect(
        &sock,
        Instant::now() + Duration::from_millis(200),
        &mut seen,
    );
    let status = agent.wait().expect("exit status");
    assert!(status.success(), "clean exit: {status:?}");
    let stopping = seen
        .iter()
        .position(|(_, m)| m.starts_with("STOPPING=1\n"))
        .unwrap_or_else(|| panic!("STOPPING=1 after SIGTERM: {seen:?}"));
    assert!(
        seen[stopping..].iter().all(|(_, m)| !m.contains("READY=1")),
        "{seen:?}"
    );
    assert!(!segments(&home.camera_dir("cam-n")).is_empty());
}
