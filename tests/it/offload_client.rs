//! The agent's S3 client against a real Garage: a gateway's key confined to
//! its own bucket; an object above the part size goes in parts; and a
//! multipart upload cut short (the agent stopped under its bandwidth cap,
//! the same as a link that drops) resumes from the parts the store
//! acknowledged, not from the first byte; a part that does not match what
//! was sent, or an upload the store cannot go on with, is sent again or
//! started anew; the object always reads back whole. Real Garage.

use std::path::Path;
use std::time::Duration;

use sargs_core::seal::manifest;
use tokio_util::sync::CancellationToken;

use crate::harness::*;
use crate::offload::{client, Reader, BUCKET};
use crate::support::garage::{Garage, Key};

const PART: u64 = 5 << 20;

/// The parts a progress file records (0 if there is none).
fn recorded(progress: &Path) -> usize {
    std::fs::read(progress)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["etags"].as_array().map(Vec::len))
        .unwrap_or(0)
}

/// Starts uploading `file` as `object` in parts of 5 MiB at 4 MiB/s (a
/// part every 1.25 s: time enough for the stop to land between two parts on
/// a loaded machine) and stops the upload once `parts` parts are recorded
/// in `progress`.
fn cut_short(g: &Garage, key: &Key, object: &str, file: &Path, progress: &Path, parts: usize) {
    let mut settings = g.settings(key, BUCKET, 5);
    settings.max_bytes_s = Some(4 << 20);
    let stop = CancellationToken::new();
    let store = sargs::offload::s3::Store::new(&settings)
        .expect("client")
        .stop_on(stop.clone());
    let watched = progress.to_owned();
    let stopper = std::thread::spawn(move || {
        let seen = wait_until(Duration::from_secs(60), || recorded(&watched) >= parts);
        stop.cancel();
        seen
    });
    let err = store
        .put_file(object, file, Some(progress))
        .expect_err("the upload was stopped");
    assert!(
        stopper.join().expect("stopper"),
        "{parts} part(s) recorded before the stop: {err}"
    );
    assert_eq!(
        store.get_sha256(object).expect("GET"),
        None,
        "no object from a cut upload"
    );
}

fn progress_json(progress: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(progress).expect("progress")).expect("progress JSON")
}

#[test]
fn a_cut_multipart_upload_resumes_from_the_parts_the_store_has() {
    let g = Garage::start();
    let key = g.bucket_with_key(BUCKET);
    let dir = tempfile::tempdir_in(test_root()).expect("dir");
    // Four parts of 5 MiB and a short fifth.
    let bytes: Vec<u8> = (0..(20 << 20) + 4321u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    let len = bytes.len() as u64;
    let whole = Some((manifest::sha256(&bytes), len));
    let record = |n: u32| {
        let name = format!("{n:010}.mp4.age");
        let file = dir.path().join(&name);
        std::fs::write(&file, &bytes).expect("file");
        let progress = dir.path().join(format!("offload/cam/{name}.upload"));
        (format!("gw/cam/{name}"), file, progress)
    };
    let store = client(&g, &key, BUCKET, 5);

    // 1. Cut after two parts; a new client (as after a restart) sends the rest.
    let (object, file, progress) = record(1);
    cut_short(&g, &key, &object, &file, &progress, 2);
    let done = recorded(&progress) as u64;
    assert!((2..5).contains(&done), "{done} parts recorded");
    let sent = store
        .put_file(&object, &file, Some(&progress))
        .expect("resumed");
    assert_eq!(
        sent,
        len - done * PART,
        "only the parts the store lacked were sent"
    );
    assert!(!progress.exists(), "the progress file goes with the upload");
    assert_eq!(store.get_sha256(&object).expect("GET"), whole);

    // 2. A recorded part whose ETag the store does not list is sent again,
    // and every part after it.
    let (object, file, progress) = record(2);
    cut_short(&g, &key, &object, &file, &progress, 2);
    let mut p = progress_json(&progress);
    p["etags"][1] = "\"0123456789abcdef0123456789abcdef\"".into();
    std::fs::write(&progress, p.to_string()).expect("tamper");
    let sent = store
        .put_file(&object, &file, Some(&progress))
        .expect("resumed");
    assert_eq!(sent, len - PART, "part 1 counted; part 2 on sent again");
    assert_eq!(store.get_sha256(&object).expect("GET"), whole);

    // 3. Another part size: the old upload is aborted and a new one sends
    // everything.
    let (object, file, progress) = record(3);
    cut_short(&g, &key, &object, &file, &progress, 1);
    let old = progress_json(&progress);
    let upload_id = old["upload_id"].as_str().expect("upload id");
    let reader = Reader::new(&g, &key);
    assert!(
        reader.upload_exists(&object, upload_id),
        "the cut upload is in the store"
    );
    let six = client(&g, &key, BUCKET, 6);
    let sent = six
        .put_file(&object, &file, Some(&progress))
        .expect("a new upload");
    assert_eq!(sent, len);
    assert_eq!(six.get_sha256(&object).expect("GET"), whole);
    assert!(
        !reader.upload_exists(&object, upload_id),
        "the upload that could not go on was aborted"
    );
    assert!(!progress.exists());
}

/// An upload under way whose record was deleted before it finished (its
/// local media is gone) is aborted when the uploader starts: its parts do
/// not stay in the store unseen.
#[test]
fn an_upload_whose_record_is_gone_is_aborted_at_start() {
    let (g, key, home, table) = crate::offload::site();
    let data = home.path().join("data");
    let file = home.path().join("gone.mp4.age");
    std::fs::write(&file, vec![7u8; (11 << 20) as usize]).expect("file");
    let object = "test-gw/cam-o/0000000009.mp4.age";
    let progress = data.join("offload/cam-o/0000000009.mp4.age.upload");
    cut_short(&g, &key, object, &file, &progress, 1);
    let upload_id = progress_json(&progress)["upload_id"]
        .as_str()
        .expect("upload id")
        .to_owned();
    let reader = Reader::new(&g, &key);
    assert!(reader.upload_exists(object, &upload_id));
    let config = home.config(2, &(crate::offload::offloading_camera("cam-o") + &table));
    let agent = sargs::agent::Agent::start(&config).expect("agent");
    let gone = wait_until(RECORDING, || !progress.exists());
    agent.stop().expect("clean stop");
    assert!(gone, "the orphan's progress file was removed");
    assert!(
        !reader.upload_exists(object, &upload_id),
        "the orphan upload was aborted"
    );
}

/// Garage confines a key by bucket, not by prefix: each gateway gets a
/// bucket of its own and a key that may read and write that bucket only, so
/// gateway A's key can neither write nor read gateway B's objects.
#[test]
fn one_gateways_key_cannot_touch_another_gateways_bucket() {
    let g = Garage::start();
    let key_a = g.bucket_with_key("evidence-gw-a");
    let key_b = g.bucket_with_key("evidence-gw-b");
    let dir = tempfile::tempdir_in(test_root()).expect("dir");
    let file = dir.path().join("0000000001.mp4.age");
    std::fs::write(&file, b"age-encryption.org/v1\nsealed").expect("file");
    let b = client(&g, &key_b, "evidence-gw-b", 8);
    b.put_file("gw-b/cam/0000000001.mp4.age", &file, None)
        .expect("B writes its own bucket");
    let a_on_b = client(&g, &key_a, "evidence-gw-b", 8);
    std::fs::write(&file, b"age-encryption.org/v1\nforged").expect("file");
    let err = a_on_b
        .put_file("gw-b/cam/0000000001.mp4.age", &file, None)
        .expect_err("A may not write B's bucket");
    assert!(err.to_string().contains("HTTP 403"), "{err}");
    let err = a_on_b
        .get_sha256("gw-b/cam/0000000001.mp4.age")
        .expect_err("A may not read B's bucket");
    assert!(err.to_string().contains("HTTP 403"), "{err}");
    let (sha, len) = b
        .get_sha256("gw-b/cam/0000000001.mp4.age")
        .expect("B reads")
        .expect("the object");
    assert_eq!(
        (sha, len),
        (
            manifest::sha256(b"age-encryption.org/v1\nsealed"),
            b"age-encryption.org/v1\nsealed".len() as u64
        ),
        "B's object is unchanged"
    );
}

/// An object above the part size goes as a multipart upload and reads back
/// byte for byte.
#[test]
fn a_large_object_goes_in_parts_and_reads_back_whole() {
    let g = Garage::start();
    let key = g.bucket_with_key(BUCKET);
    let dir = tempfile::tempdir_in(test_root()).expect("dir");
    let file = dir.path().join("big.mp4.age");
    // 12 MiB and a bit: three parts of 5 MiB, the last one short.
    let bytes: Vec<u8> = (0..(12 << 20) + 12345u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&file, &bytes).expect("file");
    let store = client(&g, &key, BUCKET, 5);
    store
        .put_file("gw/cam/0000000001.mp4.age", &file, None)
        .expect("upload");
    assert_eq!(
        store
            .get_sha256("gw/cam/0000000001.mp4.age")
            .expect("GET")
            .expect("the object"),
        (manifest::sha256(&bytes), bytes.len() as u64)
    );
    let reader = Reader::new(&g, &key);
    assert_eq!(reader.get("gw/cam/0000000001.mp4.age"), bytes);
    let etag = reader.etag("gw/cam/0000000001.mp4.age");
    assert!(etag.ends_with("-3"), "three parts went: ETag {etag}");
}
