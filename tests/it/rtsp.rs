//! RTSP cameras: H.264 and H.265 passed through untouched, and a camera that
//! goes away and comes back.

use std::time::Duration;

use sargs::seal::manifest::RecordKind;

use crate::harness::*;
use crate::support::rtsp::{Codec, RtspServer};

fn rtsp_camera(id: &str, url: &str) -> String {
    format!(
        "[[camera]]\nid = \"{id}\"\nkind = \"vehicle\"\npurpose = \"public-order\"\nclass = \"municipal-police\"\n[camera.source]\ntype = \"rtsp\"\nurl = \"{url}\"\ntransport = \"tcp\"\nlatency_ms = 100\n\n"
    )
}

fn passthrough(codec: Codec, name: &str) {
    let server = RtspServer::start(codec, 320, 240, 25);
    let home = Home::new();
    let config = home.config(2, &rtsp_camera("cam-rtsp", &server.url()));
    record_for(&config, 8.0);
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
    passthrough(Codec::H264, "h264");
}

#[test]
fn rtsp_h265_is_recorded_without_reencoding() {
    passthrough(Codec::H265, "h265");
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
    std::thread::sleep(Duration::from_secs(4));
    let server = RtspServer::start_on(port, Codec::H264, 320, 240, 25);
    let key = home.device_key();
    let recovered = wait_until(Duration::from_secs(40), || {
        sargs::seal::verify::verify_camera(&flaky, &key)
            .map(|r| {
                let gap = r.manifests.iter().position(|m| m.record == RecordKind::Gap);
                gap.is_some_and(|g| r.manifests.len() > g + 1)
            })
            .unwrap_or(false)
    });
    agent.stop().expect("clean stop");
    server.stop();
    assert!(recovered, "recording resumed after the camera came back");

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
    let steady = manifests(&home.camera_dir("cam-steady"), &key);
    assert!(steady.len() >= 5, "{} records", steady.len());
    assert!(
        steady
            .iter()
            .all(|m| m.record == RecordKind::Segment
                && !m.media.as_ref().is_some_and(|x| x.truncated))
    );
}
