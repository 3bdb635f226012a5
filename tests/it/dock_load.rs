//! Recording never starves: a live test camera keeps every frame while four
//! body cameras are ingested at once by the agent's dock mode, and the
//! four are sealed byte for byte (checked with the `age` CLI).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use sargs_core::seal::manifest::RecordKind;

use crate::dock::{h264_mp4, originals, T};
use crate::harness::*;

const CAMERAS: usize = 4;
const FILES: usize = 2;
/// Each recording: a real MP4 grown by a trailing `free` box to this size.
const FILE_MIB: usize = 64;

/// `[dock]` with four body cameras `BC-000i` → `bodycam-i`.
fn four_body_cameras() -> String {
    let mut t = String::from(
        "[dock]\npaths = [\"dock\"]\npurpose = \"public-order-threats\"\nscan_interval_s = 1\n\n",
    );
    for i in 0..CAMERAS {
        t += &format!(
            "[[dock.camera]]\nserial = \"BC-000{i}\"\nid = \"bodycam-{i}\"\nofficer = \"P-000{i}\"\n\n"
        );
    }
    t
}

/// `FILES` distinct recordings of `FILE_MIB` MiB on the camera storage `dir`.
fn recordings(dir: &Path, seed: &[u8], camera: usize) {
    let dcim = dir.join("DCIM");
    std::fs::create_dir_all(&dcim).expect("storage");
    for k in 0..FILES {
        let mut f = std::fs::File::create(dcim.join(format!("VID{k:05}.MP4"))).expect("file");
        f.write_all(seed).expect("write");
        let pad = FILE_MIB * (1 << 20) - seed.len();
        f.write_all(&(pad as u32).to_be_bytes()).expect("box");
        f.write_all(b"free").expect("box");
        let mut body = vec![0u8; pad - 8];
        body[..16].copy_from_slice(&[camera as u8, k as u8, 0x5a, 0xa5].repeat(4));
        f.write_all(&body).expect("write");
    }
}

#[test]
fn live_recording_keeps_every_frame_while_four_docked_cameras_ingest() {
    let home = Home::new();
    let cameras = test_camera("cam-live", "cctv", "") + &four_body_cameras();
    let config = home.config_with(2, "min_free_mb = 1", &cameras);
    let seed_path = home.path().join("seed.mp4");
    h264_mp4(&seed_path, 50);
    let seed = std::fs::read(&seed_path).expect("seed");
    let mut expected: Vec<BTreeMap<String, String>> = Vec::new();
    let storages: Vec<_> = (0..CAMERAS)
        .map(|i| home.path().join("dock").join(format!("BC-000{i}")))
        .collect();
    for (i, dir) in storages.iter().enumerate() {
        recordings(dir, &seed, i);
        expected.push(originals(dir));
    }

    let live = home.camera_dir("cam-live");
    let agent = sargs::agent::Agent::start(&config).expect("agent starts");
    let left = |d: &Path| std::fs::read_dir(d.join("DCIM")).map_or(0, |e| e.count());
    let freed = wait_until(T * 4, || storages.iter().all(|d| left(d) == 0));
    // Two more segments sealed after the ingests ended.
    let sealed_then = sealed_count(&live);
    let more = wait_until(RECORDING, || sealed_count(&live) >= sealed_then + 2);
    let stopped_at = chrono::Utc::now();
    agent.stop().expect("clean stop");
    assert!(freed, "every docked camera was freed");
    assert!(more, "recording went on after the ingests");

    // The four cameras: each original sealed once, byte for byte.
    let key = home.device_key();
    for (i, want) in expected.iter().enumerate() {
        let dir = home.camera_dir(&format!("bodycam-{i}"));
        let records: Vec<_> = manifests(&dir, &key)
            .into_iter()
            .filter(|m| m.dock.is_some())
            .collect();
        assert_eq!(records.len(), FILES, "bodycam-{i}");
        for m in &records {
            let d = m.dock.as_ref().expect("dock");
            let media = m.media.as_ref().expect("media");
            // The age CLI: the crate, unoptimised in a test build, takes minutes for 512 MiB.
            let out = std::process::Command::new("age")
                .arg("--decrypt")
                .arg("-i")
                .arg(home.path().join("hq-identity.txt"))
                .arg(dir.join(&media.file))
                .output()
                .expect("the age CLI");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(
                Some(&sargs_core::seal::manifest::sha256_hex(&out.stdout)),
                want.get(&format!("DCIM/{}", d.original_name))
                    .or_else(|| want.get(&d.original_name)),
                "bodycam-{i} {}",
                d.original_name
            );
        }
    }

    // The live camera: no gap, and as many frames as the source sent in the
    // time it ran (25 fps from its first segment's start to the stop).
    let ms = manifests(&live, &key);
    let gaps: Vec<_> = ms.iter().filter(|m| m.record == RecordKind::Gap).collect();
    assert!(gaps.is_empty(), "recording was interrupted: {gaps:#?}");
    let segs: Vec<_> = ms.iter().filter(|m| m.media.is_some()).collect();
    let first = segs.first().expect("segments");
    let recorded: u64 = segs
        .iter()
        .map(|m| {
            let media = m.media.as_ref().expect("media");
            probe(&home.decrypt(&live.join(&media.file))).frames
        })
        .sum();
    let sent = (stopped_at - first.start).num_milliseconds() as u64 * 25 / 1000;
    let ratio = recorded as f64 / sent as f64;
    eprintln!("frames recorded / frames sent = {recorded} / {sent} = {ratio:.3}");
    // One second's worth of frames either way: the stop's own latency and
    // the frames in the encoder when it comes.
    assert!(
        recorded.abs_diff(sent) <= 25,
        "frames recorded / frames sent = {recorded} / {sent} = {ratio:.3}"
    );
}
