//! Recording from encoded sources: segments, sealing, manifests, chain, masks, tags.

use std::process::{Command, Stdio};

use crate::harness::*;

#[test]
fn test_sources_record_into_sealed_verified_segments() {
    let home = Home::new();
    let cams = test_camera(
        "cam-a",
        "cctv",
        "masks = [{ x = 0, y = 0, width = 160, height = 120 }]",
    ) + &test_camera("cam-b", "municipal-police", "");
    let config = home.config(2, &cams);
    record_sealed(&config, &["cam-a", "cam-b"], 2);
    let key = home.device_key();

    for cam in ["cam-a", "cam-b"] {
        let dir = home.camera_dir(cam);
        let ms = manifests(&dir, &key);
        let segs: Vec<_> = ms.iter().filter(|m| m.media.is_some()).collect();
        assert!(segs.len() >= 3, "{cam}: {} segments", segs.len());
        for (i, m) in segs.iter().enumerate() {
            let media = m.media.as_ref().expect("media");
            assert!(!media.truncated, "{cam} segment {i} closed cleanly");
            assert_eq!(media.codec, "h264");
            assert_eq!(media.encoding, "encoded");
            assert_eq!((media.width, media.height), (Some(320), Some(240)));
            let plain = home.decrypt(&dir.join(&media.file));
            let p = probe(&plain);
            assert_eq!(p.codec, "h264");
            assert_eq!((p.width, p.height), (320, 240));
            let secs = m.duration_ms as f64 / 1000.0;
            // Every segment but the last is cut at its target length (at a keyframe).
            if i + 1 < segs.len() {
                assert!((1.5..=3.0).contains(&secs), "{cam} segment {i}: {secs} s");
            }
            // The container's own length agrees with the manifest's.
            let frames = p.frames as f64 / 25.0;
            assert!(
                (frames - secs).abs() < 0.5,
                "{cam} segment {i}: {frames} s of frames vs {secs} s"
            );
            // Purpose and notice are inside the container too.
            let title = p.tags["title"].as_str().unwrap_or_default();
            assert_eq!(title, m.purpose["text"].as_str().expect("purpose text"));
            assert_eq!(p.tags["copyright"].as_str(), m.notice["name"].as_str());
            let comment = p.tags["comment"].as_str().unwrap_or_default();
            assert!(comment.contains(&format!("camera={cam}")), "{comment}");
        }
        // Retention: delete_after = start + the class period.
        let first = segs[0];
        let keep_days = (first.retention.delete_after - first.start).num_days();
        if cam == "cam-a" {
            assert_eq!(first.retention.class, "cctv");
            assert_eq!(keep_days, 30);
        } else {
            assert_eq!(first.retention.class, "municipal-police");
            assert!(
                (89..=92).contains(&keep_days),
                "3 months is {keep_days} days"
            );
        }
        assert_eq!(
            first.notice["registration_no"].as_str(),
            Some("90000024205")
        );
        assert_eq!(first.agent_id, "test-gw");
    }

    // The mask is stated in the manifest and is black in the picture.
    let dir = home.camera_dir("cam-a");
    let m = &manifests(&dir, &key)[0];
    let media = m.media.as_ref().expect("media");
    assert_eq!(media.masks.rects.len(), 1);
    assert!(media.masks.version.starts_with("sha256:"));
    assert_top_left_quarter_masked(&first_frame_grey(&home.decrypt(&dir.join(&media.file))));

    // The unmasked camera shows the bars in the same place.
    let dir_b = home.camera_dir("cam-b");
    let mb = &manifests(&dir_b, &key)[0];
    let grey_b =
        first_frame_grey(&home.decrypt(&dir_b.join(&mb.media.as_ref().expect("media").file)));
    assert!(
        grey_b[60 * 320 + 80] > 100,
        "unmasked camera shows the bars"
    );
}

#[test]
fn the_age_cli_decrypts_a_segment() {
    let home = Home::new();
    let config = home.config(2, &test_camera("cam-cli", "cctv", ""));
    record_sealed(&config, &["cam-cli"], 1);
    let dir = home.camera_dir("cam-cli");
    let seg = segments(&dir).into_iter().next().expect("a segment");
    let out = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(home.path().join("hq-identity.txt"))
        .arg(&seg)
        .stdout(Stdio::piped())
        .output()
        .expect("the age CLI is installed (scripts/install-deps --test)");
    assert!(
        out.status.success(),
        "age -d: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        out.stdout,
        home.decrypt(&seg),
        "CLI and crate agree byte for byte"
    );
    let p = probe(&out.stdout);
    assert_eq!(p.codec, "h264");
    assert!(p.frames >= 25, "{} frames", p.frames);
}

#[test]
fn one_flipped_byte_is_detected() {
    let home = Home::new();
    let config = home.config(2, &test_camera("cam-t", "cctv", ""));
    record_sealed(&config, &["cam-t"], 1);
    let dir = home.camera_dir("cam-t");
    let key = home.device_key();
    assert!(manifests(&dir, &key).len() >= 2);

    let segs = segments(&dir);
    let flip = |path: &std::path::Path, at: usize| {
        let mut bytes = std::fs::read(path).expect("read");
        let i = at.min(bytes.len() - 1);
        bytes[i] ^= 0x01;
        std::fs::write(path, bytes).expect("write");
    };
    // A byte in the middle of a sealed segment.
    let len = std::fs::metadata(&segs[0]).expect("meta").len() as usize;
    flip(&segs[0], len / 2);
    let r = sargs_core::seal::verify::verify_camera(&dir, &key).expect("verify");
    assert_eq!(r.problems.len(), 1, "{:#?}", r.problems);
    assert!(r.problems[0].contains("SHA-256"), "{}", r.problems[0]);
    // age itself refuses the altered chunk.
    let (_, complete) = home.salvage(&segs[0]);
    assert!(!complete, "age detects the flipped byte");
    flip(&segs[0], len / 2);

    // A byte of a manifest's payload: the signature no longer verifies.
    let manifest = dir.join(format!("{:010}.json", 2));
    let text = std::fs::read_to_string(&manifest).expect("read");
    let altered = text.replacen("\\\"duration_ms\\\":", "\\\"duration_ms\\\":1", 1);
    assert_ne!(altered, text);
    std::fs::write(&manifest, altered).expect("write");
    let r = sargs_core::seal::verify::verify_camera(&dir, &key).expect("verify");
    assert!(
        r.problems
            .iter()
            .any(|p| p.contains("signature does not verify")),
        "{:#?}",
        r.problems
    );
}

#[test]
fn manifests_match_the_published_json_schema() {
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../../docs/manifest.schema.json"))
            .expect("the schema is JSON");
    let validator = jsonschema::validator_for(&schema).expect("the schema is valid JSON Schema");
    let home = Home::new();
    let cams = test_camera(
        "cam-s",
        "cctv",
        "masks = [{ x = 0, y = 0, width = 16, height = 16 }]",
    );
    let config = home.config(2, &cams);
    record_sealed(&config, &["cam-s"], 1);
    // A second run after a pause adds a gap record: the pause has to last
    // longer than the 2 s contiguity tolerance, so this is a clock to let pass.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let dir = home.camera_dir("cam-s");
    // The second run commits the gap record as it opens its first segment.
    let before = record_count(&dir);
    record_until(&config, RECORDING, "the second run's first record", || {
        record_count(&dir) > before
    });
    let mut kinds = std::collections::BTreeSet::new();
    for m in manifests(&dir, &home.device_key()) {
        let value = serde_json::to_value(&m).expect("manifest as JSON");
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "record {}: {errors:#?}", m.sequence);
        kinds.insert(format!("{:?}", m.record));
    }
    assert_eq!(kinds.len(), 2, "both record kinds were checked: {kinds:?}");
}
