//! `sargsctl export` against real recordings: restricted segments are refused
//! with the restriction's id until it is lifted, deleted and tampered
//! segments are refused with their reasons, everything exported is exactly
//! what the `age` crate decrypts and plays as video, the export record's
//! signature and hashes verify, the data directory is never changed, and bad
//! input writes nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use chrono::Utc;
use sargs_core::seal::manifest::{sha256_hex, Manifest, RecordKind};
use sargs_core::seal::sign::Envelope;
use sargs_hq::export::{ExportRecord, RefusalReason};

use crate::commands::COMMON;
use crate::harness::*;

/// HQ's side of a test home: keys, and a config that trusts HQ's commands.
pub struct Hq {
    pub home: Home,
    pub command_key: String,
}

impl Hq {
    pub fn new() -> Hq {
        let home = Home::new();
        let command_key = hq_keygen(home.path());
        let cams = format!(
            "[retention]\ntrust_unsynchronised_clock = true\nfree_space_floor_mb = 1\n\n[hq]\ncommand_keys = [\"{command_key}\"]\n\n{}",
            test_camera("cam-1", "cctv", "")
        );
        home.config_with(2, "min_free_mb = 1", &cams);
        Hq { home, command_key }
    }

    pub fn dir(&self) -> &Path {
        self.home.path()
    }

    pub fn device_key(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.home.device_key())
    }

    /// Writes a signed command with `sargsctl VERB ARGS` and applies it with
    /// `sargs apply`; returns the response.
    pub fn apply(&self, name: &str, verb: &[&str]) -> serde_json::Value {
        let file = format!("{name}.json");
        let args = [verb, &COMMON, &["--id", name, "--out", &file]].concat();
        let (ok, _, err) = sargsctl_in(&args, self.dir());
        assert!(ok, "sargsctl {verb:?}: {err}");
        let cfg = self.home.config_path();
        let (ok, out, err) = sargs_in(
            &["apply", "--config", cfg.to_str().expect("utf8"), &file],
            self.dir(),
        );
        assert!(ok, "apply {name}: {out} {err}");
        serde_json::from_str(&out).expect("response JSON")
    }

    /// `sargsctl export data …` with `scope` and `extra`, in the home.
    pub fn export(&self, scope: &[&str], out: &str, extra: &[&str]) -> (bool, String, String) {
        self.export_from("data", scope, out, extra)
    }

    /// `sargsctl export DATA …`: an option in `extra` replaces the default
    /// one of the same name.
    pub fn export_from(
        &self,
        data: &str,
        scope: &[&str],
        out: &str,
        extra: &[&str],
    ) -> (bool, String, String) {
        let key = self.device_key();
        let mut options = vec![
            ("-i", "hq-identity.txt"),
            ("--device-key", &key),
            ("--case", "KP 11-2026/88"),
            ("--recipient", "State Police, Jēkabpils"),
            ("--issuer", "HQ duty officer"),
            ("--key", "hq/signing.pk8"),
            ("--out", out),
        ];
        let mut flags = Vec::new();
        let mut rest = extra.iter();
        while let Some(a) = rest.next() {
            match options.iter_mut().find(|(k, _)| k == a) {
                Some(o) => o.1 = rest.next().expect("a value"),
                None => flags.push(*a),
            }
        }
        let mut args = vec!["export", data];
        for (k, v) in options {
            args.extend([k, v]);
        }
        args.extend(scope);
        args.extend(flags);
        sargsctl_in(&args, self.dir())
    }

    /// The camera's records, verified.
    pub fn records(&self) -> Vec<Manifest> {
        manifests(&self.home.camera_dir("cam-1"), &self.home.device_key())
    }

    /// Opens `out/export.json` with HQ's command key.
    pub fn load(&self, out: &str) -> ExportRecord {
        let hq_key = decode(&self.command_key);
        let bytes = std::fs::read(self.dir().join(out).join("export.json")).expect("export.json");
        let env =
            Envelope::open(&bytes, Some(&hq_key)).expect("export.json verifies with HQ's key");
        serde_json::from_str(&env.payload).expect("export record")
    }

    /// Opens `out/export.json` with HQ's command key and checks every file
    /// it names against the source store: returns the record.
    pub fn check_export(&self, out: &str) -> ExportRecord {
        let record = self.load(out);
        let out = self.dir().join(out);
        assert_eq!(record.case, "KP 11-2026/88");
        assert_eq!(record.recipient, "State Police, Jēkabpils");
        assert_eq!(record.issuer, "HQ duty officer");
        assert_eq!(record.agent_id, "test-gw");
        assert_eq!(record.device_key, self.device_key());
        let cam = self.home.camera_dir("cam-1");
        let device = self.home.device_key();
        for s in &record.sources {
            let src_manifest = std::fs::read(cam.join(format!("{:010}.json", s.sequence)))
                .expect("source manifest");
            let copy = std::fs::read(out.join(&s.manifest)).expect("manifest copy");
            assert_eq!(
                copy, src_manifest,
                "{}: manifest copied byte for byte",
                s.segment_id
            );
            let env =
                Envelope::open(&copy, Some(&device)).expect("copy verifies with the device key");
            assert_eq!(sha256_hex(env.payload.as_bytes()), s.manifest_sha256);
            let m: Manifest = serde_json::from_str(&env.payload).expect("manifest");
            let media = m.media.as_ref().expect("segment media");
            assert_eq!(s.ciphertext_sha256, media.ciphertext_sha256);
            assert_eq!(s.ciphertext_bytes, media.ciphertext_bytes);
            assert_eq!((s.start, s.end), (m.start, m.end));
            assert_eq!(s.purpose, m.purpose);
            assert_eq!(s.notice, m.notice);
            assert_eq!(s.class, "cctv");
            assert_eq!(s.truncated, media.truncated);
            let plain = std::fs::read(out.join(&s.file)).expect("exported media");
            let sealed = cam.join(&media.file);
            let decrypted = if s.truncated {
                self.home.salvage(&sealed).0
            } else {
                self.home.decrypt(&sealed)
            };
            assert_eq!(
                plain, decrypted,
                "{}: the exported bytes are the age crate's decryption",
                s.segment_id
            );
            assert_eq!(sha256_hex(&plain), s.sha256);
            assert_eq!(plain.len() as u64, s.bytes);
            if !s.truncated {
                let p = probe(&plain);
                assert_eq!(p.codec, "h264");
                assert!(p.frames > 0, "{}: plays as video", s.segment_id);
            }
        }
        for g in &record.gaps {
            let copy = std::fs::read(out.join(&g.manifest)).expect("gap manifest copy");
            let env = Envelope::open(&copy, Some(&device)).expect("gap record verifies");
            assert_eq!(sha256_hex(env.payload.as_bytes()), g.manifest_sha256);
            assert!(!g.reason.is_empty());
        }
        for r in &record.refused {
            let plain = out.join(format!("cameras/{}/{:010}.mp4", r.camera, r.sequence));
            assert!(
                !plain.exists(),
                "{}: refused, yet {} exists",
                r.segment_id,
                plain.display()
            );
        }
        record
    }
}

fn decode(b64: &str) -> [u8; 32] {
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("base64")
        .try_into()
        .expect("32 bytes")
}

/// Every file under `dir` with its size, SHA-256 and modification time.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u64, String, std::time::SystemTime)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read dir") {
            let p = e.expect("entry").path();
            let meta = std::fs::symlink_metadata(&p).expect("metadata");
            if meta.is_dir() {
                todo.push(p);
            } else {
                let bytes = std::fs::read(&p).expect("read");
                let mtime = meta.modified().expect("mtime");
                out.insert(p, (meta.len(), sha256_hex(&bytes), mtime));
            }
        }
    }
    out
}

pub fn wide_range() -> [String; 4] {
    let now = Utc::now();
    [
        "--from".into(),
        (now - chrono::Duration::hours(1)).to_rfc3339(),
        "--to".into(),
        (now + chrono::Duration::hours(1)).to_rfc3339(),
    ]
}

pub fn segment_ids(records: &[Manifest]) -> Vec<String> {
    records
        .iter()
        .filter(|m| m.record == RecordKind::Segment)
        .map(|m| m.segment_id.clone())
        .collect()
}

#[test]
fn a_restricted_segment_is_refused_for_export_until_lifted() {
    let hq = Hq::new();
    let config = sargs::config::Config::load(&hq.home.config_path()).expect("config");
    let cam = hq.home.camera_dir("cam-1");
    record_sealed(&config, &["cam-1"], 1);
    // The pause between the runs has to outlast the 2 s contiguity tolerance
    // to be a gap record: a clock to let pass.
    std::thread::sleep(Duration::from_secs(3));
    // The second run commits the gap record as it opens its first segment,
    // which the stop seals.
    let before = record_count(&cam);
    record_until(&config, RECORDING, "the second run's first record", || {
        record_count(&cam) > before
    });
    let records = hq.records();
    let segments = segment_ids(&records);
    assert!(segments.len() >= 3, "{segments:?}");
    let gaps: Vec<&Manifest> = records
        .iter()
        .filter(|m| m.record == RecordKind::Gap)
        .collect();
    assert!(!gaps.is_empty(), "the pause is a gap record");
    let restricted = segments[1].clone();
    let resp = hq.apply(
        "c-restrict",
        &[
            "restrict",
            "--restriction",
            "X-1",
            "--reason",
            "accuracy contested",
            "--segments",
            &restricted,
        ],
    );
    assert_eq!(resp["status"], "applied", "{resp}");

    let data = hq.dir().join("data");
    let before = snapshot(&data);
    let range = wide_range();
    let scope = [
        &["--cameras", "cam-1"][..],
        &range.each_ref().map(String::as_str),
    ]
    .concat();
    let (ok, out, err) = hq.export(&scope, "export-1", &[]);
    assert!(!ok, "a refusal fails the command: {out}");
    assert!(err.contains("1 record(s) in scope refused"), "{err}");
    assert!(
        out.contains(&format!("refused  {restricted}  restricted")),
        "{out}"
    );
    let record = hq.check_export("export-1");
    assert_eq!(record.refused.len(), 1, "{:#?}", record.refused);
    let r = &record.refused[0];
    assert_eq!(r.segment_id, restricted);
    assert_eq!(r.reason, RefusalReason::Restricted);
    assert_eq!(r.restriction.as_deref(), Some("X-1"));
    let exported: Vec<&str> = record
        .sources
        .iter()
        .map(|s| s.segment_id.as_str())
        .collect();
    let expected: Vec<&str> = segments
        .iter()
        .filter(|s| **s != restricted)
        .map(String::as_str)
        .collect();
    assert_eq!(exported, expected);
    let gap_ids: Vec<&str> = record.gaps.iter().map(|g| g.segment_id.as_str()).collect();
    assert_eq!(
        gap_ids,
        gaps.iter()
            .map(|g| g.segment_id.as_str())
            .collect::<Vec<_>>()
    );
    assert!(!record.restrictions_as_of.live);
    let last = record
        .restrictions_as_of
        .last_command
        .as_ref()
        .expect("last command");
    assert_eq!(
        (last.id.as_str(), last.kind.as_str()),
        ("c-restrict", "restrict")
    );
    assert_eq!(snapshot(&data), before, "the data directory is not changed");

    let resp = hq.apply("c-lift", &["restrict", "--lift", "X-1"]);
    assert_eq!(resp["status"], "applied", "{resp}");
    let before = snapshot(&data);
    let (ok, out, err) = hq.export(&scope, "export-2", &["--json"]);
    assert!(ok, "{out} {err}");
    let printed: ExportRecord = serde_json::from_str(&out).expect("--json prints the record");
    let record = hq.check_export("export-2");
    assert_eq!(printed, record);
    assert!(record.refused.is_empty(), "{:#?}", record.refused);
    let exported: Vec<&str> = record
        .sources
        .iter()
        .map(|s| s.segment_id.as_str())
        .collect();
    assert_eq!(
        exported,
        segments.iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert_eq!(
        record.restrictions_as_of.last_command.expect("last").kind,
        "unrestrict"
    );
    assert_eq!(snapshot(&data), before, "the data directory is not changed");
}

#[test]
fn deleted_and_tampered_segments_are_refused_with_their_reasons() {
    let hq = Hq::new();
    let config = sargs::config::Config::load(&hq.home.config_path()).expect("config");
    record_sealed(&config, &["cam-1"], 3);
    let records = hq.records();
    let segments = segment_ids(&records);
    assert!(segments.len() >= 3, "{segments:?}");
    let resp = hq.apply("c-erase", &["erase", "--segments", &segments[0]]);
    assert_eq!(resp["status"], "applied", "{resp}");
    assert_eq!(
        resp["result"]["deleted"][0]["segment_id"],
        segments[0].as_str(),
        "{resp}"
    );
    // One flipped byte in the middle of the second sealed segment.
    let m = records
        .iter()
        .find(|m| m.segment_id == segments[1])
        .expect("manifest");
    let sealed = hq
        .home
        .camera_dir("cam-1")
        .join(&m.media.as_ref().expect("media").file);
    let mut bytes = std::fs::read(&sealed).expect("sealed");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&sealed, bytes).expect("tamper");

    // A segment cut short by a crash: the start of a sealed file left as
    // `.partial`, which the next start commits as a truncated segment.
    let cam = hq.home.camera_dir("cam-1");
    let head: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cam.join("HEAD")).expect("HEAD")).expect("HEAD");
    let next = head["sequence"].as_u64().expect("sequence") + 1;
    let whole = records
        .iter()
        .filter(|m| !segments[..2].contains(&m.segment_id))
        .filter_map(|m| m.media.as_ref())
        .filter_map(|media| std::fs::read(cam.join(&media.file)).ok())
        .max_by_key(Vec::len)
        .expect("a sealed segment");
    assert!(whole.len() > 70_000, "a segment longer than one age chunk");
    std::fs::write(
        cam.join(format!("{next:010}.mp4.age.partial")),
        &whole[..70_000],
    )
    .expect("partial");
    // The next start commits it (renamed from `.partial`) before its own
    // first segment opens.
    let committed = cam.join(format!("{next:010}.mp4.age"));
    record_until(
        &config,
        RECORDING,
        "the partial committed as truncated, then a segment opened",
        || committed.exists() && open_bytes(&cam) > 0,
    );
    let truncated = format!("test-gw/cam-1/{next}");

    let ids = [&segments[..3], std::slice::from_ref(&truncated)]
        .concat()
        .join(",");
    let (ok, out, err) = hq.export(&["--segments", &ids], "export", &[]);
    assert!(!ok, "{out}");
    assert!(err.contains("2 record(s) in scope refused"), "{err}");
    let record = hq.check_export("export");
    assert_eq!(record.sources.len(), 2);
    assert_eq!(record.sources[0].segment_id, segments[2]);
    let cut = &record.sources[1];
    assert_eq!(
        (cut.segment_id.as_str(), cut.truncated),
        (truncated.as_str(), true)
    );
    let (salvaged, complete) = hq.home.salvage(&cam.join(format!("{next:010}.mp4.age")));
    assert!(!complete && !salvaged.is_empty());
    let plain = std::fs::read(hq.dir().join("export").join(&cut.file)).expect("exported");
    assert_eq!(
        plain, salvaged,
        "every whole chunk of the cut-short segment"
    );
    assert_eq!(
        (sha256_hex(&plain), plain.len() as u64),
        (cut.sha256.clone(), cut.bytes)
    );
    let deleted = record
        .refused
        .iter()
        .find(|r| r.segment_id == segments[0])
        .expect("listed");
    assert_eq!(deleted.reason, RefusalReason::Deleted, "{deleted:?}");
    let receipt = deleted.receipt.as_ref().expect("its receipt");
    assert_eq!(receipt.reason, "erasure");
    assert_eq!(receipt.command_id.as_deref(), Some("c-erase"));
    let copy = std::fs::read(hq.dir().join("export").join(&receipt.file)).expect("receipt copy");
    let env = Envelope::open(&copy, Some(&hq.home.device_key())).expect("receipt verifies");
    let r: sargs_core::retention::receipt::Receipt =
        serde_json::from_str(&env.payload).expect("receipt");
    assert_eq!(r.segment_id, segments[0]);
    assert_eq!(Some(r.manifest_sha256), deleted.manifest_sha256);
    let altered = record
        .refused
        .iter()
        .find(|r| r.segment_id == segments[1])
        .expect("listed");
    assert_eq!(altered.reason, RefusalReason::Altered, "{altered:?}");
    assert!(
        altered.detail.contains("SHA-256") && altered.detail.contains("altered"),
        "{}",
        altered.detail
    );
    assert!(
        out.contains(&format!("refused  {}  altered", segments[1])),
        "{out}"
    );
    assert!(
        out.contains(&format!("refused  {}  deleted", segments[0])),
        "{out}"
    );
}

#[test]
fn a_record_that_does_not_verify_is_refused_where_the_chain_places_it() {
    let hq = Hq::new();
    old_segments(&hq.home, "cam-1", 5, 1);
    let cfg = hq.home.config_path();
    let (ok, _, err) = sargs_in(
        &["reindex", "--config", cfg.to_str().expect("utf8")],
        hq.dir(),
    );
    assert!(ok, "reindex: {err}");
    let records = hq.records();
    let (m2, m4) = (&records[1], &records[3]);
    // Record 3's payload edited: its signature no longer verifies, so its
    // own times cannot be trusted.
    let path = hq.home.camera_dir("cam-1").join("0000000003.json");
    let text = std::fs::read_to_string(&path).expect("manifest");
    std::fs::write(&path, text.replacen("stationary", "stationarY", 1)).expect("edit");
    let t = |d: chrono::DateTime<Utc>| d.to_rfc3339();
    let s = chrono::Duration::seconds;

    // A range within record 3's minute: its neighbours place it there.
    let (from, to) = (t(m2.end + s(10)), t(m2.end + s(20)));
    let scope = ["--cameras", "cam-1", "--from", &from, "--to", &to];
    let (ok, out, err) = hq.export(&scope, "inside", &[]);
    assert!(
        !ok && err.contains("1 record(s) in scope refused"),
        "{out} {err}"
    );
    let record = hq.load("inside");
    assert!(record.sources.is_empty());
    assert_eq!(record.refused.len(), 1, "{:#?}", record.refused);
    assert_eq!(record.refused[0].segment_id, "test-gw/cam-1/3");
    assert_eq!(record.refused[0].reason, RefusalReason::Unverified);
    assert!(
        record.refused[0].detail.contains("signature"),
        "{}",
        record.refused[0].detail
    );

    // Across records 2 to 4: 2 is exported; 4 verifies, but its link to 3 cannot.
    let (from, to) = (t(m2.start + s(10)), t(m4.start + s(10)));
    let scope = ["--cameras", "cam-1", "--from", &from, "--to", &to];
    let (ok, out, err) = hq.export(&scope, "across", &[]);
    assert!(
        !ok && err.contains("2 record(s) in scope refused"),
        "{out} {err}"
    );
    let record = hq.load("across");
    let sources: Vec<&str> = record
        .sources
        .iter()
        .map(|s| s.segment_id.as_str())
        .collect();
    assert_eq!(sources, ["test-gw/cam-1/2"]);
    let refused: Vec<(&str, RefusalReason)> = record
        .refused
        .iter()
        .map(|r| (r.segment_id.as_str(), r.reason))
        .collect();
    assert_eq!(
        refused,
        [
            ("test-gw/cam-1/3", RefusalReason::Unverified),
            ("test-gw/cam-1/4", RefusalReason::Unverified)
        ]
    );
    assert!(
        record.refused[1].detail.contains("chain broken"),
        "{}",
        record.refused[1].detail
    );
}
