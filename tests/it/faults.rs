//! Disk faults: a full disk stops a camera with a clear reason, loses nothing
//! that was sealed, and recording resumes by itself when space returns.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sargs_core::seal::manifest::RecordKind;

use crate::harness::*;

/// A small tmpfs, unmounted on drop (the test runs as root, as CI does).
pub(crate) struct SmallDisk(pub PathBuf);

impl SmallDisk {
    pub(crate) fn mount(at: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(at).expect("mount point");
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .expect("mount runs");
        assert!(
            ok.success(),
            "mounting a tmpfs needs root (CI runs as root)"
        );
        SmallDisk(at.to_owned())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn sealed_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Waits until a gap record is followed by a whole segment.
fn resumed_after_gap(dir: &Path, key_path: &Path, limit: Duration) -> bool {
    wait_until(limit, || {
        let Ok(key) = sargs_core::seal::sign::DeviceKey::load(key_path) else {
            return false;
        };
        sargs_core::seal::verify::verify_camera(dir, &key.public_key())
            .map(|r| {
                let gap = r
                    .manifests
                    .iter()
                    .rposition(|m| m.record == RecordKind::Gap);
                gap.is_some_and(|g| {
                    r.manifests[g + 1..]
                        .iter()
                        .any(|m| m.media.as_ref().is_some_and(|x| !x.truncated))
                })
            })
            .unwrap_or(false)
    })
}

fn noisy_camera(id: &str) -> String {
    test_camera(id, "cctv", "")
        .replace("pattern = \"smpte\"", "pattern = \"snow\"")
        .replace("bitrate_kbps = 400", "bitrate_kbps = 2000")
}

#[test]
fn below_the_free_space_floor_segments_close_cleanly_and_recording_resumes() {
    let home = Home::new();
    let disk = SmallDisk::mount(&home.path().join("data"), "8m");
    let filler = disk.0.join("filler");
    std::fs::write(&filler, vec![0u8; 4_000_000]).expect("filler");
    let config = home.config_with(2, "min_free_mb = 3", &noisy_camera("cam-floor"));
    let dir = home.camera_dir("cam-floor");
    let agent = sargs::agent::Agent::start(&config).expect("agent starts");

    // The camera stops at the floor: below it, its open segment is closed
    // (none open), and its bytes stop growing, for a whole second.
    let floor = 3 << 20;
    let mut last = 0;
    let mut since: Option<std::time::Instant> = None;
    let stopped = wait_until(Duration::from_secs(40), || {
        let now = sealed_bytes(&dir);
        let below = sargs_core::fsutil::free_bytes(&disk.0).is_ok_and(|free| free < floor);
        let paused = now > 0 && now == last && below && open_bytes(&dir) == 0;
        last = now;
        since = if paused {
            since.or(Some(std::time::Instant::now()))
        } else {
            None
        };
        since.is_some_and(|t| t.elapsed() >= Duration::from_secs(1))
    });
    assert!(
        stopped,
        "recording paused at the floor: {} bytes sealed",
        sealed_bytes(&dir)
    );
    std::fs::remove_file(&filler).expect("free space");
    let key_path = home.path().join("data/device/signing.pk8");
    let resumed = resumed_after_gap(&dir, &key_path, Duration::from_secs(30));
    agent.stop().expect("clean stop");
    assert!(resumed, "recording resumed after space returned");

    let ms = manifests(&dir, &home.device_key());
    let gap = ms
        .iter()
        .find(|m| m.record == RecordKind::Gap)
        .expect("a gap record");
    let reason = &gap.gap.as_ref().expect("gap").reason;
    assert!(
        reason.contains("disk space low"),
        "the reason names the disk: {reason}"
    );
    // The floor closes segments cleanly: nothing is cut short, everything decrypts.
    for m in ms.iter().filter(|m| m.record == RecordKind::Segment) {
        let media = m.media.as_ref().expect("media");
        assert!(!media.truncated, "record {} closed cleanly", m.sequence);
        assert!(probe(&home.decrypt(&dir.join(&media.file))).frames > 0);
    }
    drop(disk);
}

#[test]
fn a_disk_that_fills_anyway_loses_nothing_and_recording_resumes() {
    let home = Home::new();
    let disk = SmallDisk::mount(&home.path().join("data"), "4m");
    let filler = disk.0.join("filler");
    std::fs::write(&filler, vec![0u8; 2_500_000]).expect("filler");
    // A floor of 1 MiB does not stop this camera before the disk is full
    // (another writer could fill it just as well): writes fail with ENOSPC.
    let config = home.config_with(2, "min_free_mb = 1", &noisy_camera("cam-full"));
    let dir = home.camera_dir("cam-full");
    let agent = sargs::agent::Agent::start(&config).expect("agent starts");
    // Recording: video on disk (more than one 64 KiB age chunk).
    let recording = wait_until(RECORDING, || sealed_bytes(&dir) > 70_000);
    // Fill the rest behind the agent's back.
    let hog = disk.0.join("hog");
    let _ = std::fs::write(&hog, vec![0u8; 4_000_000]);
    // The camera writes several times a second: its writes fail while the
    // disk stays full, which leaves nothing on disk to wait for, so the time
    // has to pass.
    std::thread::sleep(Duration::from_secs(3));
    std::fs::remove_file(&filler).expect("free space");
    let _ = std::fs::remove_file(&hog);
    let key_path = home.path().join("data/device/signing.pk8");
    let resumed = resumed_after_gap(&dir, &key_path, Duration::from_secs(40));
    agent.stop().expect("the agent still stops cleanly");
    assert!(recording, "the camera recorded before the disk filled");
    assert!(resumed, "recording resumed after space returned");

    // The chain verifies; every sealed segment decrypts (a cut one up to its
    // last whole chunk); no partial file is left behind.
    let ms = manifests(&dir, &home.device_key());
    for m in ms.iter().filter(|m| m.record == RecordKind::Segment) {
        let media = m.media.as_ref().expect("media");
        let (_, complete) = home.salvage(&dir.join(&media.file));
        assert!(
            complete || media.truncated,
            "record {} decrypts",
            m.sequence
        );
    }
    let partials = std::fs::read_dir(&dir)
        .expect("dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
        .count();
    assert_eq!(partials, 0, "every interrupted segment was committed");
    drop(disk);
}

/// The index's errors name what the OS said: SQLite calls EIO, ENOSPC and
/// EROFS alike "disk I/O error", and `sweep.failed` carried only that.
#[test]
fn an_index_the_disk_fails_is_reported_with_the_os_error_and_the_file() {
    use crate::support::faultfs::{Disk, Fault};
    let home = Home::new();
    let config = home.config_with(2, "", &test_camera("cam-a", "cctv", ""));
    let disk = Disk::mount(&home.path().join("data.backing"), &home.path().join("data"));
    let key = sargs_core::seal::sign::DeviceKey::generate().expect("key");
    let (retention, _) =
        sargs::wiring::open_retention(&config, std::sync::Arc::new(key)).expect("engine opens");
    let sweep = |mono: u64| {
        retention.sweep(sargs::retention::clockguard::Now {
            wall: sargs::clock::now(),
            mono: Duration::from_secs(mono),
            sync: sargs::clock::SyncState::Synchronised,
        })
    };
    sweep(1).expect("a sweep on a sound disk");
    let index = home.path().join("data").join("index.sqlite");
    for (mono, fault, said) in [
        (
            2,
            Fault::WriteEio {
                pattern: "index.sqlite-wal".into(),
            },
            "Input/output error (os error 5)",
        ),
        (3, Fault::ReadOnly, "Read-only file system (os error 30)"),
    ] {
        disk.inject(fault.clone());
        let e = sweep(mono)
            .expect_err("the index's write fails")
            .to_string();
        disk.clear();
        assert!(
            e.contains(&index.display().to_string()) && e.contains(said),
            "{fault:?}: {e}"
        );
    }
    sweep(4).expect("the disk is sound again");
    drop(retention);
}
