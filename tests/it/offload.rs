//! Offload to a real Garage on 127.0.0.1 (`tests/support/garage.rs`): what
//! a real agent seals reaches the store byte for byte, is verified before the
//! index counts it, opens with the age CLI; a store that is down holds
//! nothing up; kill -9 of an offloading agent loses nothing and stores
//! nothing twice, and what a killed run left in the store is recorded
//! without a second upload.
//! What the store holds is checked with a client of the test's own (rusty-s3
//! and ureq: listing, HEAD, GET); the agent's client (`sargs::offload::s3`)
//! is used here only as a gateway uses it, to write and read back.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use rusty_s3::actions::S3Action;
use sargs_core::retention::index::Index;
use sargs_core::retention::offloads::Offloaded;
use sargs_core::seal::manifest::{self, Manifest};
use sargs_core::seal::sign::Envelope;

use crate::harness::*;
use crate::support::garage::{Garage, Key, REGION};

pub(crate) const BUCKET: &str = "evidence";

/// Writes the gateway's credentials file (0600) and returns the
/// `[offload]` table for `g`.
pub(crate) fn offload_table(home: &Home, g: &Garage, key: &Key) -> String {
    let creds = home.path().join("offload.credentials");
    std::fs::write(
        &creds,
        format!(
            "access_key_id = \"{}\"\nsecret_access_key = \"{}\"\n",
            key.id, key.secret
        ),
    )
    .expect("credentials");
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    format!(
        "[offload]\nendpoint = \"{e}\"\nregion = \"{REGION}\"\nbucket = \"{BUCKET}\"\n\
         credentials_file = \"offload.credentials\"\nallow_endpoints = [\"{e}\"]\n\
         allow_regions = [\"{REGION}\"]\n",
        e = g.endpoint()
    )
}

/// A Garage with the bucket, the gateway's key, and an agent home whose
/// `[offload]` table names them.
pub(crate) fn site() -> (Garage, Key, Home, String) {
    let g = Garage::start();
    let key = g.bucket_with_key(BUCKET);
    let home = Home::new();
    let table = offload_table(&home, &g, &key);
    (g, key, home, table)
}

pub(crate) fn offloading_camera(id: &str) -> String {
    test_camera(id, "cctv", "offload = \"all\"\n")
}

/// The test's own view of the bucket.
pub(crate) struct Reader {
    http: ureq::Agent,
    bucket: rusty_s3::Bucket,
    creds: rusty_s3::Credentials,
}

impl Reader {
    pub(crate) fn new(g: &Garage, key: &Key) -> Reader {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build();
        Reader {
            http: config.into(),
            bucket: rusty_s3::Bucket::new(
                g.endpoint().parse().expect("endpoint"),
                rusty_s3::UrlStyle::Path,
                BUCKET,
                REGION,
            )
            .expect("bucket"),
            creds: rusty_s3::Credentials::new(key.id.clone(), key.secret.clone()),
        }
    }

    /// Every key in the bucket.
    pub(crate) fn list(&self) -> BTreeSet<String> {
        self.list_modified().into_keys().collect()
    }

    /// Every key in the bucket, with when it was last written (as the
    /// store lists it, to the millisecond).
    fn list_modified(&self) -> std::collections::BTreeMap<String, Option<String>> {
        let mut keys = std::collections::BTreeMap::new();
        let mut token: Option<String> = None;
        loop {
            let mut action = self.bucket.list_objects_v2(Some(&self.creds));
            if let Some(t) = &token {
                action.with_continuation_token(t.clone());
            }
            let url = action.sign(Duration::from_secs(600));
            let mut resp = self.http.get(url.as_str()).call().expect("LIST");
            assert_eq!(resp.status().as_u16(), 200, "LIST answered");
            let text = resp.body_mut().read_to_string().expect("LIST body");
            let parsed = rusty_s3::actions::ListObjectsV2::parse_response(&text).expect("LIST XML");
            keys.extend(
                parsed
                    .contents
                    .into_iter()
                    .map(|c| (c.key, c.last_modified)),
            );
            match parsed.next_continuation_token {
                Some(t) => token = Some(t),
                None => return keys,
            }
        }
    }

    /// The object's ETag (a multipart upload's ends in `-<parts>`).
    pub(crate) fn etag(&self, key: &str) -> String {
        let url = self
            .bucket
            .head_object(Some(&self.creds), key)
            .sign(Duration::from_secs(600));
        let resp = self.http.head(url.as_str()).call().expect("HEAD");
        assert_eq!(resp.status().as_u16(), 200, "HEAD {key}");
        resp.headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .expect("ETag")
            .trim_matches('"')
            .to_owned()
    }

    /// Whether the store still knows multipart upload `upload_id` of `key`.
    pub(crate) fn upload_exists(&self, key: &str, upload_id: &str) -> bool {
        let url =
            rusty_s3::actions::ListParts::new(&self.bucket, Some(&self.creds), key, upload_id)
                .sign(Duration::from_secs(600));
        let resp = self.http.get(url.as_str()).call().expect("ListParts");
        match resp.status().as_u16() {
            200 => true,
            404 => false,
            s => panic!("ListParts {key} {upload_id}: HTTP {s}"),
        }
    }

    pub(crate) fn get(&self, key: &str) -> Vec<u8> {
        let url = self
            .bucket
            .get_object(Some(&self.creds), key)
            .sign(Duration::from_secs(600));
        let mut resp = self.http.get(url.as_str()).call().expect("GET");
        assert_eq!(resp.status().as_u16(), 200, "GET {key}");
        resp.body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_vec()
            .expect("GET body")
    }
}

pub(crate) fn index(home: &Home) -> Index {
    Index::open_read_only(&home.path().join("data/index.sqlite")).expect("index")
}

/// Every record the index counts as offloaded: (camera, sequence, where).
pub(crate) fn offloaded(home: &Home) -> Vec<(String, u64, Offloaded)> {
    let idx = index(home);
    let mut st = idx
        .conn()
        .prepare("SELECT c.name, o.seq FROM offloads o JOIN cameras c ON c.id = o.camera")
        .expect("query");
    let ids: Vec<(String, i64)> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("rows")
        .map(|r| r.expect("row"))
        .collect();
    ids.into_iter()
        .map(|(cam, seq)| {
            let o = idx.offloaded(&cam, seq as u64).expect("read").expect("row");
            (cam, seq as u64, o)
        })
        .collect()
}

pub(crate) fn offloaded_count(home: &Home) -> usize {
    let path = home.path().join("data/index.sqlite");
    if !path.exists() {
        return 0;
    }
    Index::open_read_only(&path)
        .and_then(|idx| {
            idx.conn()
                .query_row("SELECT COUNT(*) FROM offloads", [], |r| r.get::<_, i64>(0))
        })
        .map_or(0, |n| n as usize)
}

/// Decrypts `bytes` with the age CLI and HQ's identity, through pipes.
pub(crate) fn age_cli_decrypt(home: &Home, bytes: &[u8]) -> Vec<u8> {
    piped(
        Command::new("age")
            .arg("-d")
            .arg("-i")
            .arg(home.path().join("hq-identity.txt")),
        "the age CLI is installed (scripts/install-deps --test)",
        bytes,
    )
}

/// Checks every record the index counts as offloaded against the store and
/// the data directory, and that the store holds those objects and nothing
/// else; returns how many records were checked.
pub(crate) fn assert_store_matches_index(home: &Home, reader: &Reader, decrypt: bool) -> usize {
    let key = home.device_key();
    let rows = offloaded(home);
    let mut expected = BTreeSet::new();
    for (cam, seq, o) in &rows {
        let dir = home.camera_dir(cam);
        let name = format!("{seq:010}");
        assert_eq!(o.manifest_key, format!("test-gw/{cam}/{name}.json"));
        let local = std::fs::read(dir.join(format!("{name}.json"))).expect("manifest file");
        let object = reader.get(&o.manifest_key);
        assert_eq!(
            object, local,
            "{}: the manifest object is its file",
            o.manifest_key
        );
        assert_eq!(o.manifest_sha256, manifest::sha256(&object));
        expected.insert(o.manifest_key.clone());
        let env = Envelope::open(&object, Some(&key)).expect("signed by the device key");
        let m: Manifest = serde_json::from_str(&env.payload).expect("manifest");
        match (&m.media, &o.media) {
            (Some(media), Some((media_key, sha))) => {
                assert_eq!(media_key, &format!("test-gw/{cam}/{name}.mp4.age"));
                let object = reader.get(media_key);
                assert_eq!(
                    manifest::sha256_hex(&object),
                    media.ciphertext_sha256,
                    "{media_key}: the object has the digest the manifest signs"
                );
                assert_eq!(manifest::hex(sha), media.ciphertext_sha256);
                assert_eq!(object.len() as u64, o.bytes);
                let file = std::fs::read(dir.join(&media.file)).expect("sealed file");
                assert_eq!(object, file, "{media_key}: the object is the sealed file");
                assert!(object.starts_with(b"age-encryption.org/v1\n"));
                assert!(!looks_like_media(&object), "{media_key} is not plaintext");
                if decrypt {
                    let plain = age_cli_decrypt(home, &object);
                    assert!(looks_like_media(&plain), "{media_key} decrypts to media");
                }
                expected.insert(media_key.clone());
            }
            (None, None) => {}
            other => panic!("{cam}/{seq}: media and offload row disagree: {other:?}"),
        }
    }
    let (receipts, problems) = receipts_in_store(home, reader);
    assert_eq!(problems, Vec::<String>::new());
    expected.extend(receipts);
    assert_eq!(
        reader.list(),
        expected,
        "the store holds exactly the objects of the records the index counts, and receipts"
    );
    rows.len()
}

/// The receipt objects in the store (`test-gw/receipts/…`), and what is
/// wrong with them: each must be the agent's receipt file byte for byte,
/// and every receipt up to the index's mark must be there.
pub(crate) fn receipts_in_store(home: &Home, reader: &Reader) -> (BTreeSet<String>, Vec<String>) {
    let dir = home.path().join("data/receipts");
    let mut keys = BTreeSet::new();
    let mut problems = Vec::new();
    for key in reader.list() {
        let Some(name) = key.strip_prefix("test-gw/receipts/") else {
            continue;
        };
        match std::fs::read(dir.join(name)) {
            Ok(file) if reader.get(&key) == file => {}
            Ok(_) => problems.push(format!("object {key} is not the receipt file {name}")),
            Err(e) => problems.push(format!(
                "object {key}: no receipt {name} on the gateway: {e}"
            )),
        }
        keys.insert(key);
    }
    let mark: u64 = index(home)
        .meta("offload_receipts")
        .expect("meta")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    for seq in 1..=mark {
        let key = format!("test-gw/receipts/{seq:010}.json");
        if !keys.contains(&key) {
            problems.push(format!("{key}: counted as in the store, not there"));
        }
    }
    (keys, problems)
}

#[test]
fn sealed_segments_reach_the_store_verified_and_open_with_age() {
    let (g, key, home, table) = site();
    let config = home.config(
        2,
        &(offloading_camera("cam-o") + &test_camera("cam-local", "cctv", "") + &table),
    );
    record_until(&config, RECORDING, "3 records offloaded", || {
        offloaded_count(&home) >= 3
    });
    let reader = Reader::new(&g, &key);
    let checked = assert_store_matches_index(&home, &reader, true);
    assert!(checked >= 3, "{checked} records checked");
    // Only the camera that offloads goes.
    assert!(reader
        .list()
        .iter()
        .all(|k| k.starts_with("test-gw/cam-o/")));
    assert!(sealed_count(&home.camera_dir("cam-local")) >= 1);
}

#[test]
fn a_store_that_is_down_holds_nothing_up_and_the_queue_drains_when_it_is_back() {
    let (mut g, key, home, table) = site();
    g.stop();
    home.config(2, &(offloading_camera("cam-d") + &table));
    let mut agent = spawn_agent(&home);
    let dir = home.camera_dir("cam-d");
    // Recording goes on while the store is down, and the queue keeps it all.
    assert!(
        wait_until(RECORDING, || sealed_count(&dir) >= 3),
        "recording went on with the store down:\n{}",
        agent_log(&home)
    );
    assert_eq!(
        offloaded_count(&home),
        0,
        "nothing counts while the store is down"
    );
    // A sealed segment is indexed a moment after its file is renamed.
    let mut waiting = None;
    let queued = wait_until(RECORDING, || {
        let w = index(&home)
            .offload_waiting(&["cam-d".to_owned()])
            .expect("waiting");
        let all = w.records >= 3 && w.bytes > 0;
        waiting = Some(w);
        all
    });
    assert!(queued, "the queue keeps what was sealed: {waiting:?}");
    // Back: the queue drains, recording still goes on.
    g.restart();
    let before = sealed_count(&dir);
    assert!(
        wait_until(Duration::from_secs(120), || offloaded_count(&home) >= 3
            && sealed_count(&dir) > before),
        "the queue drained after the store came back:\n{}",
        agent_log(&home)
    );
    let log = agent_log(&home);
    assert!(log.contains("the store failed; retrying"), "{log}");
    assert!(!log.contains(&key.secret), "the secret key is never logged");
    stop_cleanly(&mut agent);
    let reader = Reader::new(&g, &key);
    assert!(assert_store_matches_index(&home, &reader, false) >= 3);
}

#[test]
fn kill_9_of_an_offloading_agent_loses_nothing_and_stores_nothing_twice() {
    let (g, key, home, table) = site();
    // Noise at a high bitrate: larger objects, a wider window for the kill
    // to land inside an upload. Where exactly it lands is not controlled;
    // the window between an upload and its index commit is made on purpose
    // in `objects_found_in_the_store_…` below.
    let cam = offloading_camera("cam-k")
        .replace("pattern = \"smpte\"", "pattern = \"snow\"")
        .replace("bitrate_kbps = 400", "bitrate_kbps = 4000");
    home.config(2, &(cam + &table));
    let mut agent = spawn_agent(&home);
    assert!(
        wait_until(RECORDING, || offloaded_count(&home) >= 2),
        "records offloaded before the kill:\n{}",
        agent_log(&home)
    );
    agent.kill().expect("kill -9");
    agent.wait().expect("reaped");
    let head = record_count(&home.camera_dir("cam-k")) as u64;

    // Restart: every record sealed before the kill (and the truncated one
    // and the gap the restart adds) goes, each once.
    let mut agent = spawn_agent(&home);
    let all_done = wait_until(Duration::from_secs(120), || {
        let done: BTreeSet<u64> = offloaded(&home).into_iter().map(|(_, s, _)| s).collect();
        (1..=head + 1).all(|s| done.contains(&s))
    });
    stop_cleanly(&mut agent);
    assert!(
        all_done,
        "every record up to {} offloaded after the restart:\n{}",
        head + 1,
        agent_log(&home)
    );
    let reader = Reader::new(&g, &key);
    let n = assert_store_matches_index(&home, &reader, false);
    assert!(
        n as u64 > head,
        "{n} records offloaded, {head} before the kill"
    );
}

/// What a spawned agent logged so far.
pub(crate) fn agent_log(home: &Home) -> String {
    std::fs::read_to_string(home.path().with_extension("log")).unwrap_or_default()
}

/// Stops a spawned agent with SIGTERM (a clean stop) and waits for it.
pub(crate) fn stop_cleanly(agent: &mut Spawned) {
    // SAFETY: kill(2) with a child's pid has no memory-safety preconditions.
    unsafe {
        libc::kill(agent.id() as i32, libc::SIGTERM);
    }
    let _ = agent.wait();
}

#[test]
fn an_endpoint_off_the_allow_list_and_a_readable_credentials_file_are_refused_at_check() {
    let home = Home::new();
    let creds = home.path().join("offload.credentials");
    std::fs::write(
        &creds,
        "access_key_id = \"GK1\"\nsecret_access_key = \"do-not-print-me\"\n",
    )
    .expect("credentials");
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let table = |endpoint: &str| {
        format!(
            "[offload]\nendpoint = \"{endpoint}\"\nregion = \"garage\"\nbucket = \"evidence\"\n\
             credentials_file = \"offload.credentials\"\n\
             allow_endpoints = [\"http://127.0.0.1:3900\"]\nallow_regions = [\"garage\"]\n"
        )
    };
    let write = |endpoint: &str| {
        let text = std::fs::read_to_string(home.config_path()).unwrap_or_default();
        let cut = text.find("[offload]").unwrap_or(text.len());
        std::fs::write(
            home.config_path(),
            format!("{}{}", &text[..cut], table(endpoint)),
        )
        .expect("config");
    };
    home.config(
        2,
        &(offloading_camera("cam-c") + &table("http://127.0.0.1:3900")),
    );
    let cfg = home.config_path();
    let check = || {
        sargs(&[
            "check-config",
            "--config",
            cfg.to_str().expect("utf-8 path"),
        ])
    };
    let (ok, _, err) = check();
    assert!(ok, "the allowed store passes: {err}");

    write("https://s3.us-east-1.amazonaws.com");
    let (ok, out, err) = check();
    assert!(!ok, "an endpoint off the allow-list is refused");
    let all = format!("{out}{err}");
    assert!(all.contains("offload.endpoint"), "{all}");
    assert!(all.contains("EU/EEA"), "{all}");

    write("http://127.0.0.1:3900");
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let (ok, out, err) = check();
    assert!(!ok, "a credentials file of mode 0644 is refused");
    let all = format!("{out}{err}");
    assert!(all.contains("offload.credentials_file"), "{all}");
    assert!(all.contains("0644"), "{all}");
    assert!(!all.contains("do-not-print-me"), "{all}");
    // `sargs run` refuses it the same way, before anything starts.
    let (ok, _, err) = sargs(&["run", "--config", cfg.to_str().expect("utf-8 path")]);
    assert!(!ok && err.contains("offload.credentials_file"), "{err}");
}

/// The agent's client against `g` with `key`, on `bucket`.
pub(crate) fn client(
    g: &Garage,
    key: &Key,
    bucket: &str,
    part_mb: u64,
) -> sargs::offload::s3::Store {
    sargs::offload::s3::Store::new(&g.settings(key, bucket, part_mb)).expect("client")
}

/// The crash window between an upload and the index commit, made on
/// purpose: objects already in the store with the record's bytes are read
/// back and recorded without a second upload; an object under a record's key
/// with other bytes is never overwritten, and that record is not counted.
#[test]
fn objects_found_in_the_store_are_verified_not_sent_again_and_never_overwritten() {
    let (g, key, home, table) = site();
    // Recorded before offload was switched on for the camera.
    let config = home.config(2, &(test_camera("cam-f", "cctv", "") + &table));
    record_sealed(&config, &["cam-f"], 3);
    let dir = home.camera_dir("cam-f");
    let store = client(&g, &key, BUCKET, 8);
    // Record 1 as a run killed after its upload left it.
    for name in ["0000000001.mp4.age", "0000000001.json"] {
        store
            .put_file(&format!("test-gw/cam-f/{name}"), &dir.join(name), None)
            .expect("upload");
    }
    // Record 2's media key holds other bytes.
    let foreign = home.path().join("foreign.bin");
    std::fs::write(&foreign, b"not the sealed segment").expect("file");
    store
        .put_file("test-gw/cam-f/0000000002.mp4.age", &foreign, None)
        .expect("upload");
    let reader = Reader::new(&g, &key);
    let before = reader.list_modified();
    // The store lists instants to the millisecond: a second upload now
    // would show another one.
    std::thread::sleep(Duration::from_millis(1100));

    let config = home.config(2, &(offloading_camera("cam-f") + &table));
    record_until(&config, RECORDING, "records 1 and 3 offloaded", || {
        let idx = index(&home);
        [1, 3]
            .iter()
            .all(|s| idx.offloaded("cam-f", *s).ok().flatten().is_some())
    });
    let after = reader.list_modified();
    for k in before.keys() {
        assert_eq!(before[k], after[k], "{k} was not written again");
    }
    assert_eq!(
        reader.get("test-gw/cam-f/0000000002.mp4.age"),
        b"not the sealed segment",
        "an object with other bytes is never overwritten"
    );
    assert!(index(&home).offloaded("cam-f", 2).expect("read").is_none());
    // Everything counted is verified; record 2's foreign media object aside,
    // the store holds nothing else.
    let rows = offloaded(&home);
    assert!(rows.iter().any(|(_, s, _)| *s == 1));
    let expected: BTreeSet<String> = rows
        .iter()
        .flat_map(|(_, _, o)| {
            std::iter::once(o.manifest_key.clone()).chain(o.media.iter().map(|(k, _)| k.clone()))
        })
        .chain(std::iter::once(
            "test-gw/cam-f/0000000002.mp4.age".to_owned(),
        ))
        .collect();
    assert_eq!(reader.list(), expected);
}
