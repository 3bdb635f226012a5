//! RTSP cameras: H.264 and H.265 passed through untouched over TCP and UDP,
//! and a camera that goes away and comes back.

use std::time::Duration;

use sargs_core::seal::manifest::RecordKind;

use crate::harness::*;
use crate::support::rtsp::{Codec, RtspServer};

fn rtsp_camera(id: &str, url: &str) -> String {
    rtsp_camera_over(id, url, "tcp")
}

fn rtsp_camera_over(id: &str, url: &str, transport: &str) -> String {
    format!(
        "[[camera]]\nid = \"{id}\"\nkind = \"vehicle\"\npurpose = \"public-order\"\nclass = \"municipal-police\"\n[camera.source]\ntype = \"rtsp\"\nurl = \"{url}\"\ntransport = \"{transport}\"\nlatency_ms = 100\n\n"
    )
}

fn passthrough(codec: Codec, name: &str, transport: &str) {
    let server = RtspServer::start(codec, 320, 240, 25);
    let home = Home::new();
    let config = home.config(2, &rtsp_camera_over("cam-rtsp", &server.url(), transport));
    record_sealed(&config, &["cam-rtsp"], 1);
    server.stop();
    let dir = home.camera_dir("cam-rtsp");
    let ms = manifests(&dir, &home.device_key());
    let segs: Vec<_> = ms
        .iter()
        .filter(|m| m.record == RecordKind::Segment)
        .collect();
    assert!(segs.len() >= 2, "{} segments", segs.len());
    let last = segs.len() - 1;
    for (i, m) in segs.into_iter().enumerate() {
        let media = m.media.as_ref().expect("media");
        assert_eq!(media.codec, name);
        assert_eq!(media.encoding, "passthrough");
        // A stop closes the open segment cleanly: the pipeline's EOS reached
        // the muxer through the frame source.
        assert!(!media.truncated, "segment {i} closed cleanly");
        let p = probe(&home.decrypt(&dir.join(&media.file)));
        assert_eq!(p.codec, if name == "h264" { "h264" } else { "hevc" });
        assert_eq!((p.width, p.height), (320, 240));
        // The segment open when the agent stopped may be arbitrarily short;
        // every other one is cut at its 2 s target (1 s GOP).
        if i < last {
            assert!(p.frames >= 25, "segment {i}: {} frames", p.frames);
        }
        // The container's frames agree with the manifest's duration.
        let secs = m.duration_ms as f64 / 1000.0;
        let framed = p.frames as f64 / 25.0;
        assert!(
            (framed - secs).abs() < 0.5,
            "segment {i}: {framed} s of frames vs {secs} s in the manifest"
        );
    }
}

#[test]
fn rtsp_h264_is_recorded_without_reencoding() {
    passthrough(Codec::H264, "h264", "tcp");
}

#[test]
fn rtsp_over_udp_is_recorded_without_reencoding() {
    passthrough(Codec::H264, "h264", "udp");
}

#[test]
fn rtsp_h265_is_recorded_without_reencoding() {
    passthrough(Codec::H265, "h265", "tcp");
}

#[test]
fn a_lost_camera_leaves_a_gap_and_never_stops_the_others() {
    let server = RtspServer::start(Codec::H264, 320, 240, 25);
    let port = server.port();
    let home = Home::new();
    let cams = rtsp_camera("cam-flaky", &server.url()) + &test_camera("cam-steady", "cctv", "");
    let config = home.config(2, &cams);
    let agent = sargs::agent::Agent::start(&config).expect("agent starts");
    let flaky = home.camera_dir("cam-flaky");
    assert!(
        wait_until(Duration::from_secs(20), || segments(&flaky).len() >= 2),
        "the RTSP camera records"
    );
    server.stop();
    // The outage has to last longer than the 2 s the gap's duration is
    // checked against: a clock to let pass while the camera is away.
    std::thread::sleep(Duration::from_millis(2500));
    let server = RtspServer::start_on(port, Codec::H264, 320, 240, 25);
    let key = home.device_key();
    let recovered = wait_until(Duration::from_secs(40), || {
        sargs_core::seal::verify::verify_camera(&flaky, &key)
            .map(|r| {
                let gap = r.manifests.iter().position(|m| m.record == RecordKind::Gap);
                gap.is_some_and(|g| r.manifests.len() > g + 1)
            })
            .unwrap_or(false)
    });
    // The steady camera, meanwhile, records straight through: 4 records
    // sealed, and the stop seals the one open then.
    let steady_dir = home.camera_dir("cam-steady");
    let straight = wait_until(RECORDING, || record_count(&steady_dir) >= 4);
    agent.stop().expect("clean stop");
    server.stop();
    assert!(recovered, "recording resumed after the camera came back");
    assert!(straight, "the steady camera sealed 4 records");

    let ms = manifests(&flaky, &key);
    let gaps: Vec<_> = ms.iter().filter(|m| m.record == RecordKind::Gap).collect();
    assert_eq!(gaps.len(), 1, "one outage, one gap record");
    let reason = &gaps[0].gap.as_ref().expect("gap").reason;
    assert!(reason.starts_with("camera down"), "{reason}");
    assert!(
        gaps[0].duration_ms >= 2000,
        "gap lasts the outage: {} ms",
        gaps[0].duration_ms
    );

    // The steady camera recorded straight through: no gap, no truncation.
    let steady = manifests(&steady_dir, &key);
    assert!(steady.len() >= 5, "{} records", steady.len());
    assert!(
        steady
            .iter()
            .all(|m| m.record == RecordKind::Segment
                && !m.media.as_ref().is_some_and(|x| x.truncated))
    );
}

#[test]
fn rtsp_credentials_from_the_url_authenticate_and_are_never_logged() {
    const PASSWORD: &str = "s3cret-p@ss";
    const WRONG: &str = "wr0ng-guess";
    let server = RtspServer::start_with(Codec::H264, 320, 240, 25, Some(("viewer", PASSWORD)));
    let with = |password: &str| {
        let encoded = password.replace('@', "%40");
        server
            .url()
            .replacen("rtsp://", &format!("rtsp://viewer:{encoded}@"), 1)
    };
    let home = Home::new();
    let cams = rtsp_camera("cam-auth", &with(PASSWORD)) + &rtsp_camera("cam-denied", &with(WRONG));
    home.config(2, &cams);
    let mut agent = spawn_agent(&home);
    let dir = home.camera_dir("cam-auth");
    let log_path = home.path().with_extension("log");
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let recorded = wait_until(Duration::from_secs(30), || {
        dir.exists() && segments(&dir).len() >= 2
    });
    let denied = wait_until(Duration::from_secs(10), || {
        log()
            .lines()
            .any(|l| l.contains("camera down") && l.contains("cam-denied"))
    });
    // SAFETY: sending SIGTERM to our own child.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    let status = agent.wait().expect("agent exits");
    server.stop();
    let log = log();
    assert!(
        recorded,
        "the camera with the right password records:\n{log}"
    );
    assert!(
        denied,
        "the camera with a wrong one is reported down:\n{log}"
    );
    assert!(status.success(), "clean exit: {status:?}");
    assert!(log.contains("401"), "the refusal is explained:\n{log}");
    for secret in [PASSWORD, WRONG, "s3cret-p%40ss"] {
        assert!(!log.contains(secret), "{secret:?} in the log:\n{log}");
    }
    assert!(
        log.contains("rtsp://***@127.0.0.1"),
        "the source is shown redacted:\n{log}"
    );
    let ms = manifests(&dir, &home.device_key());
    assert!(ms.iter().any(|m| m.record == RecordKind::Segment));
}

#[test]
fn a_camera_that_changes_its_picture_size_continues_in_a_new_segment() {
    let server = RtspServer::start(Codec::H264, 320, 240, 25);
    let home = Home::new();
    // Segments longer than the test: only the size change cuts one.
    let config = home.config(60, &rtsp_camera("cam-resize", &server.url()));
    let agent = sargs::agent::Agent::start(&config).expect("agent starts");
    let dir = home.camera_dir("cam-resize");
    // Video of the first size on disk (past the first 64 KiB age chunk).
    let first = wait_until(RECORDING, || open_bytes(&dir) > 70_000);
    server.set_size(160, 120);
    let resumed = wait_until(Duration::from_secs(20), || {
        first && !segments(&dir).is_empty()
    });
    // …and video of the new size in the segment that follows.
    let second = wait_until(RECORDING, || resumed && open_bytes(&dir) > 70_000);
    agent.stop().expect("clean stop");
    server.stop();
    assert!(first, "the camera recorded at its first size");
    assert!(resumed, "the segment before the change was sealed");
    assert!(second, "the camera recorded at its new size");

    let ms = manifests(&dir, &home.device_key());
    let segs: Vec<_> = ms
        .iter()
        .filter(|m| m.record == RecordKind::Segment)
        .collect();
    assert_eq!(segs.len(), 2, "one segment before the change, one after");
    let mut sizes = Vec::new();
    for m in segs {
        let media = m.media.as_ref().expect("media");
        assert!(!media.truncated, "{} closed cleanly", media.file);
        let p = probe(&home.decrypt(&dir.join(&media.file)));
        assert_eq!(p.codec, "h264");
        let stated = (media.width.map(u64::from), media.height.map(u64::from));
        assert_eq!(stated, (Some(p.width), Some(p.height)), "{}", media.file);
        let secs = m.duration_ms as f64 / 1000.0;
        let framed = p.frames as f64 / 25.0;
        assert!(
            (framed - secs).abs() < 0.5,
            "{}: {framed} s of frames vs {secs} s in the manifest",
            media.file
        );
        sizes.push((p.width, p.height));
    }
    assert_eq!(sizes, [(320, 240), (160, 120)]);
}
