//! Dock ingest interrupted: the camera pulled out mid-copy (its dock
//! directory vanishing), kill -9 of the agent mid-copy and right at the
//! removal of a sealed file, and a disk that fills up. Each ends with
//! nothing lost (every original sealed, or still on the camera), nothing
//! duplicated, and the next dock finishing the job.

use std::time::Duration;

use std::collections::BTreeMap;

use crate::dock::*;
use crate::faults::SmallDisk;
use crate::harness::*;
use crate::support::camfs::Camera;

/// Three distinct recordings (same content would be recognised as one
/// original, rightly): a small one, a ~20 MB one (read in 1 MiB blocks, so a
/// hold at 8 MiB is mid-copy) and another small one, in path order.
fn three_recordings(storage: &std::path::Path) {
    h264_mp4(&storage.join("DCIM/VID0001.MP4"), 25);
    mjpeg_mov(&storage.join("DCIM/VID0002.MOV"), 60);
    h264_mp4(&storage.join("DCIM/VID0003.MP4"), 30);
    let big = std::fs::metadata(storage.join("DCIM/VID0002.MOV"))
        .expect("big")
        .len();
    assert!(
        big > 12 << 20,
        "the big recording spans the hold: {big} bytes"
    );
}

const MID_COPY: u64 = 8 << 20;

/// A home for a dock-only agent and its camera holding three recordings,
/// with their hashes.
fn docked_three() -> (Home, Camera, BTreeMap<String, String>) {
    let home = Home::new();
    home.config_with(60, "min_free_mb = 1", &dock_tables(""));
    let cam = camera(&home);
    three_recordings(&cam.storage);
    let expected = originals(&cam.storage);
    (home, cam, expected)
}

#[test]
fn a_camera_pulled_out_mid_copy_loses_nothing_and_the_next_dock_continues() {
    let (home, mut cam, expected) = docked_three();
    cam.hold_at(MID_COPY);
    cam.dock();
    let mut agent = spawn_agent(&home);
    assert!(cam.wait_held(T), "the big file is being copied");
    // Pulled out: I/O errors, then the mount and its directory are gone.
    cam.unplug();
    cam.release();
    assert!(
        no_unfinished_ingest(&home),
        "the interrupted copy is dropped"
    );
    cam.undock();
    // What follows checks that nothing more is sealed or removed after the
    // camera left: that takes time passing, not a condition to wait for.
    std::thread::sleep(Duration::from_secs(2));
    let left = on_camera(&cam.storage);
    assert_eq!(
        left.keys().collect::<Vec<_>>(),
        ["DCIM/VID0002.MOV", "DCIM/VID0003.MP4"],
        "the camera keeps what was not sealed"
    );
    let sealed = ingested(&home);
    assert_eq!(sealed.len(), 1, "only the first file was sealed");

    // Docked again: the rest is taken, nothing twice.
    cam.dock();
    let freed = wait_until(T, || on_camera(&cam.storage).is_empty());
    // SAFETY: SIGTERM to our own child.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    assert!(agent.wait().expect("exits").success());
    assert!(
        freed,
        "the next dock continued: {:?}",
        on_camera(&cam.storage)
    );
    assert_sealed_once(&home, &expected);
}

#[test]
fn kill_9_mid_ingest_loses_nothing_and_duplicates_nothing() {
    let (home, mut cam, expected) = docked_three();

    // 1. Killed at the very moment it removes the first sealed file.
    let victim = Arc::new(AtomicI32::new(0));
    let pid = victim.clone();
    cam.on_unlink(move |_| {
        let p = pid.swap(0, Ordering::SeqCst);
        if p > 0 {
            // SAFETY: SIGKILL to the agent this test started.
            unsafe { libc::kill(p, libc::SIGKILL) };
            return false;
        }
        true
    });
    cam.hold_at(MID_COPY);
    cam.dock();
    let mut agent = spawn_agent(&home);
    victim.store(agent.id() as i32, Ordering::SeqCst);
    let status = agent.wait().expect("killed");
    assert!(!status.success(), "killed during the first removal");
    assert_eq!(ingested(&home).len(), 1, "the first file was committed");
    assert_eq!(on_camera(&cam.storage).len(), 3, "nothing left the camera");

    // 2. Restarted: the first file is recognised and only removed; killed
    //    again while the big one is half copied.
    let mut agent = spawn_agent(&home);
    assert!(cam.wait_held(T), "the big file is being copied");
    agent.kill().expect("kill -9");
    // The agent dies once its read on the camera returns.
    cam.release();
    agent.wait().expect("reaped");
    let chain: Vec<String> = std::fs::read_dir(home.camera_dir(CAMERA))
        .expect("chain")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        chain.iter().any(|n| n.ends_with(".mp4.age.ingest")),
        "the copy was cut off: {chain:?}"
    );
    assert_eq!(
        ingested(&home).len(),
        1,
        "still one record, not a second of the same file"
    );
    assert_eq!(
        on_camera(&cam.storage).keys().collect::<Vec<_>>(),
        ["DCIM/VID0002.MOV", "DCIM/VID0003.MP4"]
    );

    // 3. Restarted again: the cut-off copy is dropped, the rest is sealed.
    let mut agent = spawn_agent(&home);
    let freed = wait_until(T, || on_camera(&cam.storage).is_empty());
    // SAFETY: SIGTERM to our own child.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    assert!(agent.wait().expect("exits").success());
    assert!(freed, "{:?}", on_camera(&cam.storage));
    assert_sealed_once(&home, &expected);
    assert_verified(&home);
}

#[test]
fn a_disk_that_fills_up_stops_the_ingest_and_the_next_dock_continues() {
    let home = Home::new();
    let disk = SmallDisk::mount(&home.path().join("data"), "48m");
    home.config_with(60, "min_free_mb = 1", &dock_tables(""));
    let mut cam = camera(&home);
    three_recordings(&cam.storage);
    mjpeg_mov(&cam.storage.join("DCIM/VID0004.MOV"), 61);
    let expected = originals(&cam.storage);
    let cfg = home.config_path().display().to_string();
    let from = cam.mount.display().to_string();
    let ingest = || {
        sargs(&[
            "ingest", "--config", &cfg, "--from", &from, "--camera", CAMERA,
        ])
    };
    cam.dock();

    // Room for the small first file only: the big second one is not started.
    let filler = disk.0.join("filler");
    std::fs::write(&filler, vec![0u8; 30 << 20]).expect("filler");
    let (ok, out, err) = ingest();
    assert!(!ok, "an incomplete ingest fails: {out}");
    assert!(err.contains("not enough free space"), "{err}");
    assert!(
        out.contains("1 sealed, 0 already sealed, 3 of 4 left"),
        "{out}"
    );
    assert_eq!(
        on_camera(&cam.storage).len(),
        3,
        "the rest stays on the camera"
    );

    // The disk fills behind its back while a copy is under way: ENOSPC.
    std::fs::remove_file(&filler).expect("free");
    cam.hold_at(MID_COPY);
    let (c, f) = (cfg.clone(), from.clone());
    let child = std::thread::spawn(move || {
        let (ok, out, err) = sargs(&["ingest", "--config", &c, "--from", &f, "--camera", CAMERA]);
        (ok, out, err)
    });
    assert!(cam.wait_held(T), "the second file is being copied");
    let hog = disk.0.join("hog");
    let _ = std::fs::write(&hog, vec![0u8; 48 << 20]);
    cam.release();
    let (ok, out, err) = child.join().expect("ingest ran");
    assert!(!ok, "{out}");
    assert!(
        err.contains("No space left") || err.contains("not enough free space"),
        "{err}"
    );
    assert_eq!(
        on_camera(&cam.storage).len(),
        3,
        "nothing more left the camera"
    );
    let partials = std::fs::read_dir(home.camera_dir(CAMERA))
        .expect("chain")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".ingest"))
        .count();
    assert_eq!(partials, 0, "the failed copy is removed at once");

    // Space returns: the next dock takes the rest.
    std::fs::remove_file(&hog).expect("free");
    let (ok, out, err) = ingest();
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("3 sealed, 0 already sealed, 0 of 3 left"),
        "{out}"
    );
    assert!(on_camera(&cam.storage).is_empty());
    assert_sealed_once(&home, &expected);
    assert_verified(&home);
    drop(cam);
    drop(disk);
}

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
