//! The other sources: a looped video file, and an RTSP camera transcoded so
//! that privacy masks can be applied.

use gstreamer as gst;
use gstreamer::prelude::*;

use sargs_core::seal::manifest::RecordKind;

use crate::harness::*;
use crate::support::rtsp::{Codec, RtspServer};

/// Writes a 2 s H.264 MP4 clip (40 frames at 20 fps) with this process's own
/// GStreamer, as `gst-launch-1.0` would (the suite may run for another
/// architecture under an emulator, where the host's tools are not ours).
fn make_clip(path: &std::path::Path) {
    gst::init().expect("GStreamer");
    let pipeline = gst::parse::launch(&format!(
        "videotestsrc num-buffers=40 pattern=ball \
         ! video/x-raw,format=I420,width=320,height=240,framerate=20/1 \
         ! x264enc key-int-max=20 ! h264parse ! mp4mux ! filesink location=\"{}\"",
        path.display()
    ))
    .expect("clip pipeline");
    pipeline.set_state(gst::State::Playing).expect("playing");
    let bus = pipeline.bus().expect("bus");
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(60),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("the clip is written within 60 s");
    pipeline.set_state(gst::State::Null).expect("stopped");
    if let gst::MessageView::Error(e) = msg.view() {
        panic!("making the clip: {}", e.error());
    }
}

#[test]
fn a_video_file_is_looped_into_segments() {
    let home = Home::new();
    let clip = home.path().join("clip.mp4");
    make_clip(&clip);
    let cam = format!(
        "[[camera]]\nid = \"cam-file\"\nkind = \"stationary\"\npurpose = \"property-protection\"\nclass = \"cctv\"\n[camera.source]\ntype = \"file\"\npath = \"{}\"\nwidth = 320\nheight = 240\nfps = 20\nbitrate_kbps = 300\n",
        clip.display()
    );
    let config = home.config(2, &cam);
    let dir = home.camera_dir("cam-file");
    // Well past the clip's 2 s: three segments sealed (the one open at the
    // stop is sealed too when it has reached the disk; under an emulator it
    // may not have, so the count does not rely on it).
    let ran = record_until(&config, RECORDING, "3 sealed segments", || {
        sealed_count(&dir) >= 3
    });
    let ms = manifests(&dir, &home.device_key());
    let segs: Vec<_> = ms
        .iter()
        .filter(|m| m.record == RecordKind::Segment)
        .collect();
    // Several times the 2 s clip: it loops, at the clip's own pace (what was
    // recorded spans the time the agent ran, give or take its start and stop).
    let total_ms: u64 = segs.iter().map(|m| m.duration_ms).sum();
    let ran_ms = ran.as_millis() as u64;
    let times: Vec<String> = segs
        .iter()
        .map(|m| {
            format!(
                "{} {} {}",
                m.start.format("%S%.3f"),
                m.end.format("%S%.3f"),
                m.duration_ms
            )
        })
        .collect();
    assert!(
        (ran_ms.saturating_sub(3_000)..=ran_ms + 2_500).contains(&total_ms),
        "{total_ms} ms recorded in {ran_ms} ms (+ stop): {times:#?}"
    );
    assert!(segs.len() >= 3, "{} segments", segs.len());
    let mut frames = 0;
    for m in &segs {
        let media = m.media.as_ref().expect("media");
        assert_eq!(media.encoding, "encoded");
        frames += probe(&home.decrypt(&dir.join(&media.file))).frames;
    }
    assert!(
        frames > 40,
        "more frames ({frames}) than the clip has: it looped"
    );
}

#[test]
fn rtsp_transcode_applies_privacy_masks() {
    let server = RtspServer::start(Codec::H264, 320, 240, 25);
    let home = Home::new();
    let cam = format!(
        "[[camera]]\nid = \"cam-tx\"\nkind = \"stationary\"\npurpose = \"property-protection\"\nclass = \"cctv\"\nmasks = [{{ x = 0, y = 0, width = 160, height = 120 }}]\n[camera.source]\ntype = \"rtsp\"\nurl = \"{}\"\ntransport = \"tcp\"\ntranscode = true\nwidth = 320\nheight = 240\nbitrate_kbps = 400\n",
        server.url()
    );
    let config = home.config(2, &cam);
    record_sealed(&config, &["cam-tx"], 1);
    server.stop();
    let dir = home.camera_dir("cam-tx");
    let ms = manifests(&dir, &home.device_key());
    let m = ms
        .iter()
        .find(|m| m.record == RecordKind::Segment)
        .expect("a segment");
    for s in ms.iter().filter_map(|m| m.media.as_ref()) {
        assert!(!s.truncated, "{} closed cleanly by the stop", s.file);
    }
    let media = m.media.as_ref().expect("media");
    assert_eq!(media.encoding, "transcoded");
    assert_eq!(media.codec, "h264");
    assert_eq!(media.masks.rects.len(), 1);
    assert_top_left_quarter_masked(&first_frame_grey(&home.decrypt(&dir.join(&media.file))));
}

#[test]
fn a_v4l2_camera_without_its_device_is_a_named_gap_and_never_stops_the_others() {
    let home = Home::new();
    let usb = "[[camera]]\nid = \"cam-usb\"\nkind = \"stationary\"\npurpose = \"property-protection\"\nclass = \"cctv\"\n[camera.source]\ntype = \"v4l2\"\ndevice = \"/dev/video-sargs-unplugged\"\nwidth = 640\nheight = 480\nfps = 15\n\n";
    let config = home.config(
        2,
        &(usb.to_owned() + &test_camera("cam-steady", "cctv", "")),
    );
    let agent = sargs::agent::Agent::start(&config).expect("agent starts");
    let steady = home.camera_dir("cam-steady");
    assert!(
        wait_until(std::time::Duration::from_secs(20), || segments(&steady)
            .len()
            >= 3),
        "the other camera records"
    );
    agent.stop().expect("clean stop");
    let key = home.device_key();
    let usb = manifests(&home.camera_dir("cam-usb"), &key);
    assert!(
        !usb.is_empty(),
        "the unplugged camera's time is accounted for"
    );
    assert!(usb.iter().all(|m| m.record == RecordKind::Gap), "{usb:?}");
    let reason = &usb[0].gap.as_ref().expect("gap").reason;
    assert!(
        reason.starts_with("camera down") && reason.contains("/dev/video-sargs-unplugged"),
        "the gap names the device: {reason}"
    );
    assert!(manifests(&steady, &key)
        .iter()
        .all(|m| m.record == RecordKind::Segment));
}
