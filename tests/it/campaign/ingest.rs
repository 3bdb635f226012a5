//! Scenario "dock": the agent killed while it takes a docked body camera's
//! recordings off it (the FUSE camera of `tests/support/camfs.rs`, real
//! recordings made by GStreamer), restarted on the same data directory.
//!
//! Each point puts new recordings on the docked camera (a ~15 MB
//! Motion-JPEG file and a small H.264 one, moved in whole) and kills at an
//! instant uniform over the time the agent takes to ingest such a batch
//! here (measured first). Besides the checks of every point: every
//! original ever put on the camera is still on it or sealed, and at the
//! end each is sealed exactly once and the camera is empty.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use super::checks::*;
use super::{sleep_until, Campaign};
use crate::dock::{camera, dock_tables, h264_mp4, mjpeg_mov, on_camera, CAMERA};
use crate::harness::*;

const LIVE: &str = "cam-live";
const PER_HOME: usize = 8;

/// SHA-256 of each original sealed into the body camera's chain, with how
/// many records seal it.
fn sealed(data: &Path) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (_, p) in records_after(&data.join("cameras").join(CAMERA), 0) {
        if let Some(d) = read_manifest(&p).and_then(|m| m.dock) {
            *out.entry(d.original_sha256).or_default() += 1;
        }
    }
    out
}

/// Makes two new recordings (distinct for each `n`) beside the camera's
/// storage and moves them onto it whole; returns their hashes.
fn refill(home: &Home, storage: &Path, n: u32) -> BTreeSet<String> {
    let staging = home.path().join("staging");
    std::fs::create_dir_all(&staging).expect("staging");
    std::fs::create_dir_all(storage.join("DCIM")).expect("DCIM");
    let big = format!("VID{:04}.MOV", 2 * n);
    let small = format!("VID{:04}.MP4", 2 * n + 1);
    mjpeg_mov(&staging.join(&big), 50 + n % 30);
    h264_mp4(&staging.join(&small), 25 + n);
    let mut hashes = BTreeSet::new();
    for name in [big, small] {
        let bytes = std::fs::read(staging.join(&name)).expect("recording");
        hashes.insert(sargs_core::seal::manifest::sha256_hex(&bytes));
        std::fs::rename(staging.join(&name), storage.join("DCIM").join(&name)).expect("move in");
    }
    hashes
}

/// Originals neither on the camera nor sealed.
fn lost(data: &Path, storage: &Path, expected: &BTreeSet<String>) -> Vec<String> {
    let on: BTreeSet<String> = on_camera(storage).into_values().collect();
    let sealed = sealed(data);
    expected
        .iter()
        .filter(|h| !on.contains(*h) && !sealed.contains_key(*h))
        .map(|h| format!("original {h} is neither on the camera nor sealed"))
        .collect()
}

#[test]
fn kill_9_during_dock_ingest() {
    let mut camp = Campaign::new("dock");
    let mut cuts = Cuts::default();
    let mut window: Option<Duration> = None;
    let mut n = 0;
    while camp.more() {
        let home = Home::new();
        home.config_with(
            2,
            "min_free_mb = 1",
            &(dock_tables("") + &test_camera(LIVE, "cctv", "")),
        );
        let mut cam = camera(&home);
        cam.dock();
        let (mut agent, data, mut since) = match start_recording(&home, &[LIVE]) {
            Ok(started) => started,
            Err(e) => {
                camp.fail(e);
                break;
            }
        };
        let mut expected = BTreeSet::new();
        let what = "from the recordings appearing on the camera";
        let (w, _) = camp.window(&mut window, what, || {
            n += 1;
            expected.extend(refill(&home, &cam.storage, n));
            let t = Instant::now();
            assert!(
                wait_until(RECORDING, || on_camera(&cam.storage).is_empty()),
                "the first batch is ingested:\n{}",
                log_tail(&home)
            );
            t.elapsed()
        });
        for _ in 0..PER_HOME {
            if !camp.more() {
                break;
            }
            n += 1;
            expected.extend(refill(&home, &cam.storage, n));
            let anchor = Instant::now();
            let instant = camp.rng.within(w);
            let label = camp.label(instant, "new recordings appeared on the camera");
            sleep_until(anchor, instant);
            kill_9(&mut agent);
            let mut problems = after_kill(&home, since, &[], &mut cuts);
            problems.extend(lost(&data, &cam.storage, &expected));
            since = SystemTime::now() - Duration::from_secs(1);
            let (again, recovered) = restart(&home, &[LIVE]);
            agent = again;
            let at = instant.as_secs_f64() / w.as_secs_f64();
            camp.point(&label, at, merge(problems, recovered));
        }
        // The restarted agent takes what is left; each original once.
        if !wait_until(RECORDING, || on_camera(&cam.storage).is_empty()) {
            camp.fail(format!(
                "left on the camera after the restarts: {:?}\n{}",
                on_camera(&cam.storage).keys().collect::<Vec<_>>(),
                log_tail(&home)
            ));
        }
        let sealed = sealed(&data);
        for (h, k) in &sealed {
            if *k != 1 {
                camp.fail(format!("original {h} sealed {k} times"));
            }
        }
        let got: BTreeSet<String> = sealed.into_keys().collect();
        if got != expected {
            camp.fail(format!(
                "sealed originals differ from those put on the camera: missing {:?}, extra {:?}",
                expected.difference(&got).collect::<Vec<_>>(),
                got.difference(&expected).collect::<Vec<_>>()
            ));
        }
        for p in stop_and_verify(agent, &home) {
            camp.fail(p);
        }
        cam.undock();
    }
    camp.note(cuts.note());
    camp.finish();
}
