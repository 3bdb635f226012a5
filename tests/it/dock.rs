//! Body-camera dock ingest: a simulated camera (a FUSE mount of a real
//! directory, see `tests/support/camfs.rs`) or a plain directory holding
//! real recordings made by GStreamer here, ingested by the agent's dock mode
//! or `sargs ingest`; sealed files decrypted with the `age` crate and
//! compared with the originals byte for byte; every removal from the camera
//! checked, at the instant it happens, to come after the seal is durable.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use sargs_core::seal::manifest::Manifest;
use serde_json::Value;

use crate::harness::*;
use crate::support::camfs::Camera;
use crate::support::mosquitto::{Broker, Watcher};

pub const SERIAL: &str = "BC-0042";
pub const CAMERA: &str = "bodycam-42";
pub const OFFICER: &str = "LV-POL-0315";
pub const T: Duration = Duration::from_secs(60);

/// `[dock]` watching `<home>/dock`, with one body camera; `extra` goes into `[dock]`.
pub fn dock_tables(extra: &str) -> String {
    format!(
        "[dock]\npaths = [\"dock\"]\npurpose = \"public-order-threats\"\nscan_interval_s = 1\n{extra}\n\n[[dock.camera]]\nserial = \"{SERIAL}\"\nid = \"{CAMERA}\"\nofficer = \"{OFFICER}\"\n\n"
    )
}

/// Runs a GStreamer pipeline that ends in `filesink location=…` to its end.
fn run_pipeline(desc: &str) {
    gst::init().expect("GStreamer");
    let p = gst::parse::launch(desc).expect("pipeline");
    p.set_state(gst::State::Playing).expect("playing");
    let bus = p.bus().expect("bus");
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(60),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("the pipeline ends");
    let _ = p.set_state(gst::State::Null);
    assert!(
        matches!(msg.view(), gst::MessageView::Eos(_)),
        "{desc}: {msg:?}"
    );
}

/// A real H.264 MP4 of `frames` frames at 25 fps.
pub fn h264_mp4(path: &Path, frames: u32) {
    std::fs::create_dir_all(path.parent().expect("dir")).expect("dir");
    run_pipeline(&format!(
        "videotestsrc num-buffers={frames} pattern=ball ! video/x-raw,format=I420,width=320,height=240,framerate=25/1 \
         ! x264enc key-int-max=25 ! h264parse ! mp4mux ! filesink location={}",
        path.display()
    ));
}

/// A real Motion-JPEG QuickTime file of `frames` 640×480 noise frames (~300 KB each).
pub fn mjpeg_mov(path: &Path, frames: u32) {
    std::fs::create_dir_all(path.parent().expect("dir")).expect("dir");
    run_pipeline(&format!(
        "videotestsrc num-buffers={frames} pattern=snow ! video/x-raw,width=640,height=480,framerate=25/1 \
         ! jpegenc quality=95 ! qtmux ! filesink location={}",
        path.display()
    ));
}

/// SHA-256 (hex) of each recording under `storage`, by path relative to it.
pub fn originals(storage: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![storage.to_owned()];
    while let Some(d) = stack.pop() {
        // Polled while the agent frees the camera: a file (or folder) listed
        // and gone before it is read is gone, not an error.
        let entries = match std::fs::read_dir(&d) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("{}: {e}", d.display()),
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if !p.ends_with("CLOCK.TXT") {
                let bytes = match std::fs::read(&p) {
                    Ok(b) => b,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => panic!("{}: {e}", p.display()),
                };
                let rel = p
                    .strip_prefix(storage)
                    .expect("rel")
                    .to_string_lossy()
                    .into_owned();
                out.insert(rel, sargs_core::seal::manifest::sha256_hex(&bytes));
            }
        }
    }
    out
}

/// The ingested records of the body camera, verified.
pub fn ingested(home: &Home) -> Vec<Manifest> {
    manifests(&home.camera_dir(CAMERA), &home.device_key())
        .into_iter()
        .filter(|m| m.dock.is_some())
        .collect()
}

/// Every original in `expected` is sealed exactly once, decrypts (age
/// crate) to its exact bytes, and nothing else is in the chain; no
/// unfinished ingest is left.
pub fn assert_sealed_once(home: &Home, expected: &BTreeMap<String, String>) -> Vec<Manifest> {
    let records = ingested(home);
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for m in &records {
        let d = m.dock.as_ref().expect("dock");
        *seen.entry(d.original_sha256.clone()).or_default() += 1;
        let media = m.media.as_ref().expect("media");
        let plain = home.decrypt(&home.camera_dir(CAMERA).join(&media.file));
        assert_eq!(plain.len() as u64, d.original_bytes, "{}", d.original_name);
        assert_eq!(
            sargs_core::seal::manifest::sha256_hex(&plain),
            d.original_sha256,
            "{}: the sealed bytes are the original's",
            d.original_name
        );
    }
    let want: BTreeMap<String, u32> = expected.values().map(|h| (h.clone(), 1)).collect();
    assert_eq!(
        seen, want,
        "each original sealed exactly once, nothing else"
    );
    let leftovers: Vec<_> = std::fs::read_dir(home.camera_dir(CAMERA))
        .expect("chain")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".ingest") || n.ends_with(".partial") || n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "unfinished files: {leftovers:?}");
    records
}

/// `sargs verify` passes on the home's data directory; returns its output.
pub fn assert_verified(home: &Home) -> String {
    let cfg = home.config_path().display().to_string();
    let (ok, out, err) = sargs(&["verify", "--config", &cfg]);
    assert!(ok, "sargs verify: {out}{err}");
    out
}

/// Recordings still on the camera's storage.
pub fn on_camera(storage: &Path) -> BTreeMap<String, String> {
    originals(storage)
}

/// Checks, at the instant the gateway removes `rel` from the camera, that
/// its sealed copy, manifest and index row are durable and the copy's hash
/// matches: the chain verifies (media hashes included), a record names the
/// original, and the index knows it.
fn durable_before_removal(data: &Path, rel: &Path) -> Result<(), String> {
    let key = sargs_core::seal::sign::DeviceKey::load(&data.join("device/signing.pk8"))
        .map_err(|e| e.to_string())?
        .public_key();
    let chain = data.join("cameras").join(CAMERA);
    let r = sargs_core::seal::verify::verify_camera(&chain, &key).map_err(|e| e.to_string())?;
    if !r.ok() {
        return Err(format!("chain does not verify: {:?}", r.problems));
    }
    let name = rel.to_string_lossy();
    let m = r
        .manifests
        .iter()
        .find(|m| m.dock.as_ref().is_some_and(|d| d.original_name == name))
        .ok_or_else(|| format!("{name} is removed but no record names it"))?;
    let sha = sargs_core::seal::manifest::unhex32(&m.dock.as_ref().expect("dock").original_sha256)
        .ok_or("bad hash")?;
    let index = sargs_core::retention::index::Index::open_read_only(&data.join("index.sqlite"))
        .map_err(|e| e.to_string())?;
    match index.original_by_hash(CAMERA, &sha) {
        Ok(Some(seq)) if seq == m.sequence => Ok(()),
        other => Err(format!(
            "{name}: index says {other:?}, chain {}",
            m.sequence
        )),
    }
}

/// A simulated camera for `home`, docked at `<home>/dock/<SERIAL>`.
pub fn camera(home: &Home) -> Camera {
    Camera::new(
        &home.path().join("camera-storage"),
        &home.path().join("dock").join(SERIAL),
    )
}

#[test]
fn a_docked_camera_is_sealed_byte_for_byte_and_freed_only_once_durable() {
    let home = Home::new();
    let broker = Broker::start(home.path(), None);
    let key = hq_keygen(home.path());
    let tables = format!(
        "[hq]\nbroker = \"{}\"\ncommand_keys = [\"{key}\"]\n\n{}",
        broker.url(),
        dock_tables("")
    );
    let config = home.config_with(60, "min_free_mb = 1", &tables);
    let mut hq = Watcher::connect(
        broker.port,
        "hq-dock",
        None,
        &["sargs/agents/test-gw/events"],
    );
    let mut cam = camera(&home);
    h264_mp4(&cam.storage.join("DCIM/100MEDIA/VID00001.MP4"), 75);
    mjpeg_mov(&cam.storage.join("DCIM/100MEDIA/VID00002.MOV"), 20);
    h264_mp4(&cam.storage.join("DCIM/101MEDIA/VID00003.MP4"), 50);
    let expected = originals(&cam.storage);
    // The camera's clock runs 90 s ahead of the gateway's.
    let written = chrono::Utc::now();
    let camera_time = written + chrono::Duration::seconds(90);
    std::fs::write(cam.storage.join("CLOCK.TXT"), camera_time.to_rfc3339()).expect("clock");

    let data = home.path().join("data");
    let removals: Arc<Mutex<Vec<Result<String, String>>>> = Arc::default();
    let log = removals.clone();
    cam.on_unlink(move |rel| {
        let r = durable_before_removal(&data, rel).map(|()| rel.display().to_string());
        log.lock().expect("log").push(r);
        true
    });
    cam.dock();
    let agent = sargs::agent::Agent::start(&config).expect("agent starts");
    let freed = wait_until(T, || on_camera(&cam.storage).is_empty());
    let finished = hq.wait("/events", T, |v| v["event"] == "dock.finished");
    // The gateway reads the clock file somewhere in between: the offset it
    // finds is 90 s less the time that passed until then.
    let read_within = (chrono::Utc::now() - written).num_milliseconds();
    agent.stop().expect("clean stop");
    assert!(
        freed,
        "every recording left the camera: {:?}",
        on_camera(&cam.storage)
    );

    // Removed only once durable, each of them.
    let removals = removals.lock().expect("log").clone();
    assert_eq!(removals.len(), expected.len(), "{removals:?}");
    for r in &removals {
        assert!(r.is_ok(), "removed before it was durable: {r:?}");
    }
    assert!(
        cam.storage.join("CLOCK.TXT").exists(),
        "the clock file is not a recording"
    );

    // Sealed byte for byte, with what the container and the dock say.
    let records = assert_sealed_once(&home, &expected);
    let schema: Value =
        serde_json::from_str(include_str!("../../docs/manifest.schema.json")).expect("schema");
    let validator = jsonschema::validator_for(&schema).expect("schema");
    for m in &records {
        let d = m.dock.as_ref().expect("dock");
        let media = m.media.as_ref().expect("media");
        let errors: Vec<String> = validator
            .iter_errors(&serde_json::to_value(m).expect("json"))
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", d.original_name);
        assert_eq!(
            (m.camera_kind.as_str(), m.camera_id.as_str()),
            ("body", CAMERA)
        );
        assert_eq!(
            (d.camera_serial.as_str(), d.officer_id.as_str()),
            (SERIAL, OFFICER)
        );
        assert_eq!(expected.get(&d.original_name), Some(&d.original_sha256));
        assert_eq!(media.encoding, "original");
        assert!(
            d.parses_as_video,
            "{}: {:?}",
            d.original_name, d.probe_error
        );
        let offset = d
            .camera_clock_offset_ms
            .expect("the camera states its clock");
        assert!(
            (90_000 - read_within - 1_000..=91_000).contains(&offset),
            "offset {offset} ms, read within {read_within} ms"
        );
        // The start comes from the container, corrected by the camera's offset.
        let recorded = d.recorded_start.expect("the container states its start");
        assert_eq!(d.start_source, "container-corrected");
        assert_eq!(m.start, recorded - chrono::Duration::milliseconds(offset));
        let frames = if d.original_name.ends_with("MOV") {
            20
        } else if d.original_name.contains("VID00001") {
            75
        } else {
            50
        };
        assert_eq!(
            d.recorded_duration_ms,
            Some(frames * 40),
            "{}",
            d.original_name
        );
        assert_eq!(m.duration_ms, frames * 40);
        if d.original_name.ends_with("MOV") {
            assert_eq!(
                (media.container.as_str(), media.codec.as_str()),
                ("video/quicktime", "mjpeg")
            );
        } else {
            assert_eq!(
                (media.container.as_str(), media.codec.as_str()),
                ("video/mp4", "h264")
            );
            assert_eq!((media.width, media.height), (Some(320), Some(240)));
            let plain = home.decrypt(&home.camera_dir(CAMERA).join(&media.file));
            assert_eq!(probe(&plain).frames, frames, "{}", d.original_name);
        }
        // Police class by default: kept three months from the recording.
        assert_eq!(m.retention.class, "municipal-police");
        let days = (m.retention.delete_after - m.start).num_days();
        assert!((89..=92).contains(&days), "{days} days");
    }
    let out = assert_verified(&home);
    assert!(out.contains("3 ingested from the dock"), "{out}");

    // HQ heard of it over MQTT: start, each file, the end.
    let finished = finished.expect("dock.finished reached HQ");
    assert_eq!(finished["camera"], CAMERA);
    assert_eq!(finished["sealed"], 3);
    assert_eq!(finished["complete"], true);
    assert!(
        finished["rate_bytes_s"].as_u64().is_some_and(|r| r > 0),
        "{finished}"
    );
    let started = hq
        .wait("/events", T, |v| v["event"] == "dock.started")
        .expect("dock.started");
    assert_eq!(
        (started["files_total"].as_u64(), started["officer"].as_str()),
        (Some(3), Some(OFFICER))
    );
    let files: Vec<Value> = hq
        .seen
        .iter()
        .filter_map(|(_, p, _)| serde_json::from_slice::<Value>(p).ok())
        .filter(|v| v["event"] == "dock.file")
        .collect();
    assert_eq!(files.len(), 3, "{files:?}");
    let last = files
        .iter()
        .map(|v| v["files_done"].as_u64())
        .max()
        .flatten();
    assert_eq!(last, Some(3));
    assert!(files
        .iter()
        .all(|v| v["outcome"] == "sealed" && v["removed_from_camera"] == true));
}

#[test]
fn files_that_do_not_parse_as_video_are_sealed_and_flagged_and_nothing_is_sealed_twice() {
    let home = Home::new();
    home.config_with(60, "min_free_mb = 1", &dock_tables(""));
    let dock = home.path().join("dock").join(SERIAL);
    h264_mp4(&dock.join("VID0001.MP4"), 25);
    // A recording whose header is destroyed, and bytes that never were video.
    let mut broken = std::fs::read(dock.join("VID0001.MP4")).expect("read");
    broken[..64].fill(0x5a);
    std::fs::write(dock.join("VID0002.MP4"), &broken).expect("write");
    let noise: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(dock.join("VID0003.MP4"), &noise).expect("write");
    let expected = originals(&dock);
    let kept = home.path().join("kept");
    std::fs::create_dir_all(&kept).expect("dir");
    for name in expected.keys() {
        std::fs::copy(dock.join(name), kept.join(name)).expect("copy");
    }
    let cfg = home.config_path().display().to_string();
    let from = dock.display().to_string();
    let ingest = |extra: &[&str]| {
        let args = [
            &[
                "ingest", "--config", &cfg, "--from", &from, "--camera", CAMERA,
            ][..],
            extra,
        ]
        .concat();
        sargs(&args)
    };
    let (ok, out, err) = ingest(&[]);
    assert!(ok, "sargs ingest: {out}{err}");
    assert!(
        out.contains("3 sealed, 0 already sealed, 0 of 3 left"),
        "{out}"
    );
    assert!(
        err.contains("does not parse as video"),
        "the log says so: {err}"
    );
    assert!(on_camera(&dock).is_empty(), "the camera is freed");
    let records = assert_sealed_once(&home, &expected);
    for m in &records {
        let d = m.dock.as_ref().expect("dock");
        let media = m.media.as_ref().expect("media");
        if d.original_name == "VID0001.MP4" {
            assert!(d.parses_as_video);
            continue;
        }
        assert!(!d.parses_as_video, "{} is flagged", d.original_name);
        assert!(d.probe_error.as_deref().is_some_and(|e| !e.is_empty()));
        assert_eq!(media.container, "application/octet-stream");
        assert_eq!(d.start_source, "ingest", "no container time to go by");
        assert_eq!(d.recorded_start, None);
    }

    // Docked again with the same files (one under a new name): recognised,
    // not sealed again; with --keep they stay on the camera.
    for (name, to) in [
        ("VID0001.MP4", "VID0001.MP4"),
        ("VID0002.MP4", "RENAMED.MP4"),
    ] {
        std::fs::copy(kept.join(name), dock.join(to)).expect("copy back");
    }
    let (ok, out, err) = ingest(&["--keep"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("0 sealed, 2 already sealed"), "{out}");
    assert_eq!(on_camera(&dock).len(), 2, "--keep leaves them");
    let (ok, out, err) = ingest(&[]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("0 sealed, 2 already sealed"), "{out}");
    assert!(on_camera(&dock).is_empty());
    assert_sealed_once(&home, &expected);
    assert_verified(&home);
}

/// Waits until no unfinished ingest is left in the chain (the interrupted
/// copy was dropped).
pub fn no_unfinished_ingest(home: &Home) -> bool {
    wait_until(T, || {
        std::fs::read_dir(home.camera_dir(CAMERA))
            .map(|rd| {
                !rd.flatten()
                    .any(|e| e.file_name().to_string_lossy().ends_with(".ingest"))
            })
            .unwrap_or(true)
    })
}
