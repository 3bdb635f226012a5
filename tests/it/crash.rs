//! kill -9 during recording: no plaintext anywhere, nothing lost, the chain
//! continues after restart with the interrupted segment kept as truncated
//! and the outage recorded as a gap.

use std::path::Path;
use std::time::{Duration, SystemTime};

use sargs_core::seal::manifest::RecordKind;

use crate::harness::*;

#[test]
fn kill_9_leaves_no_plaintext_and_the_chain_continues() {
    let started = SystemTime::now() - Duration::from_secs(1);
    let home = Home::new();
    // Noise at a higher bitrate, so a segment spans several age chunks.
    let busy = test_camera("cam-k", "cctv", "")
        .replace("pattern = \"smpte\"", "pattern = \"snow\"")
        .replace("bitrate_kbps = 400", "bitrate_kbps = 2000");
    home.config(2, &(busy + &test_camera("cam-l", "municipal-police", "")));
    let dir = home.camera_dir("cam-k");

    let mut agent = spawn_agent(&home);
    // Wait for at least two sealed segments and an open one with some bytes.
    let ready = wait_until(Duration::from_secs(30), || {
        let sealed = std::fs::read_dir(&dir)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".mp4.age"))
                    .count()
            })
            .unwrap_or(0);
        let partial_bytes = std::fs::read_dir(&dir)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
                    .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
                    .sum::<u64>()
            })
            .unwrap_or(0);
        sealed >= 2 && partial_bytes > 70_000
    });
    assert!(
        ready,
        "agent recorded segments before the kill: {:?}\n{}",
        std::fs::read_dir(&dir).map(|rd| rd.flatten().map(|e| e.file_name()).collect::<Vec<_>>()),
        std::fs::read_to_string(home.path().with_extension("log")).unwrap_or_default()
    );
    agent.kill().expect("kill -9");
    agent.wait().expect("reaped");

    // Every file the agent wrote is sealed or metadata; nothing plaintext anywhere.
    assert_no_plaintext_under(home.path(), started);
    assert_no_plaintext_under(Path::new("/tmp"), started);
    for e in std::fs::read_dir(&dir).expect("dir").flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let bytes = std::fs::read(e.path()).expect("read");
        if name.contains(".mp4.age") {
            assert!(
                bytes.starts_with(b"age-encryption.org/v1\n"),
                "{name} is an age stream"
            );
        } else {
            assert!(
                name.ends_with(".json") || name == "HEAD",
                "unexpected file {name}"
            );
        }
    }
    let partial = std::fs::read_dir(&dir)
        .expect("dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".partial"))
        .expect("the open segment was left partial");
    let partial_bytes = std::fs::read(&partial).expect("read partial");

    // Restart: the store recovers, the chain continues.
    let mut agent = spawn_agent(&home);
    let key = home.device_key();
    let continued = wait_until(Duration::from_secs(30), || {
        sargs_core::seal::verify::verify_camera(&dir, &key)
            .map(|r| {
                r.manifests
                    .iter()
                    .filter(|m| m.record == RecordKind::Gap)
                    .count()
                    == 1
                    && r.manifests
                        .last()
                        .map(|m| {
                            m.record == RecordKind::Segment
                                && m.media.as_ref().is_some_and(|x| !x.truncated)
                        })
                        .unwrap_or(false)
            })
            .unwrap_or(false)
    });
    // SAFETY: sending SIGTERM to our own child.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    let status = agent.wait().expect("agent exits");
    assert!(continued, "recording continued after restart");
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");

    let ms = manifests(&dir, &key);
    let truncated: Vec<_> = ms
        .iter()
        .filter(|m| m.media.as_ref().is_some_and(|x| x.truncated))
        .collect();
    assert_eq!(
        truncated.len(),
        1,
        "the interrupted segment is kept, marked truncated"
    );
    let t = truncated[0];
    let kept = std::fs::read(dir.join(&t.media.as_ref().expect("media").file)).expect("kept file");
    assert_eq!(kept, partial_bytes, "kept byte for byte");
    let gap_pos = ms
        .iter()
        .position(|m| m.record == RecordKind::Gap)
        .expect("a gap record");
    assert!(
        ms[gap_pos]
            .gap
            .as_ref()
            .expect("gap")
            .reason
            .contains("unclean stop"),
        "{:?}",
        ms[gap_pos].gap
    );
    assert_eq!(
        ms[gap_pos - 1].sequence,
        t.sequence,
        "the gap follows the truncated segment"
    );

    // HQ salvages every whole chunk of the truncated segment, and it parses as video.
    let (plain, complete) = home.salvage(&dir.join(&t.media.as_ref().expect("media").file));
    assert!(!complete, "the age stream lacks its final chunk");
    assert!(
        looks_like_media(&plain),
        "the plaintext detector recognises our media"
    );
    assert!(
        plain.len() >= 65536,
        "at least one whole chunk salvaged: {}",
        plain.len()
    );
    let p = probe(&plain);
    assert_eq!(p.codec, "h264");
    assert!(p.frames > 0, "salvaged fragments decode");

    // The other camera's chain is intact too.
    manifests(&home.camera_dir("cam-l"), &key);
}
