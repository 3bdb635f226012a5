//! Verifying a camera's chain without any decryption key.
//!
//! For each record in sequence order: the envelope's signature is checked
//! against the device key; the sequence is contiguous; `prev_manifest_sha256`
//! matches the previous payload; time does not run backwards and any hole
//! longer than the contiguity tolerance is covered by a gap record; for a
//! segment, the media file exists and its size and SHA-256 match the manifest
//! — or it was deleted and a valid deletion receipt names it. Only a file
//! beside the manifest is ever opened: a media name that is a path (`../x`,
//! `/dev/zero`), even in a validly signed manifest, is a problem reported,
//! not a file read.
//!
//! Records ingested from a docked body camera (`dock` present) follow one
//! another in ingest order, not on the time line (`docs/format.md`, "Body
//! cameras"): they are not held to the contiguity rule and need no gap
//! records; instead each must state a sane interval (`end` = `start` +
//! `duration_ms`, not before `start`) and no original (by SHA-256) may be
//! sealed twice in the chain. Time checks of recorded segments resume after
//! them.
//! One flipped byte anywhere — media, manifest or signature — is reported.
//!
//! Besides the overall [`Report`], each record gets a [`Verdict`], so a caller
//! that acts on single records (an export) can tell which ones verified.
//!
//! The store may be changing while it is read (the agent records and
//! deletes beside `sargs verify`). A media file found missing is judged
//! against [`Deletions`] asked *after* the file was looked for; since a
//! receipt is durable before its media goes, a reader that looks the
//! receipts up again on a miss (`retention::receipt::LiveDeletions`) never
//! calls a deletion that happened during the read a missing file.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use super::manifest::{self, Manifest, RecordKind, GENESIS};
use super::sign::Envelope;
use crate::layout::{sha256_file, CONTIGUITY_TOLERANCE_MS};

/// What a verification found.
#[derive(Debug, Default)]
pub struct Report {
    pub records: u64,
    pub segments: u64,
    pub gaps: u64,
    pub truncated: u64,
    /// Segments ingested from a docked body camera.
    pub ingested: u64,
    /// Segments whose media was deleted with a receipt.
    pub deleted: u64,
    /// In a partial copy ([`verify_camera_partial`]): the records not in
    /// it, as ranges of sequence numbers.
    pub absent: Vec<(u64, u64)>,
    /// Problems, each naming the file and what is wrong. Empty means verified.
    pub problems: Vec<String>,
    /// Manifests in order, for callers that inspect them further.
    pub manifests: Vec<Manifest>,
    /// One per record file, in sequence order.
    pub verdicts: Vec<Verdict>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// How much of each segment's media to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaCheck {
    /// Existence, size and SHA-256.
    Hash,
    /// Existence and size only: for a caller that hashes the bytes itself as
    /// it reads them (so the bytes it uses are the bytes it checked).
    Size,
}

/// What verification found about one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub sequence: u64,
    /// Position of its manifest in [`Report::manifests`], when it parsed.
    pub manifest: Option<usize>,
    /// SHA-256 of the record's payload (its link in the chain), when the
    /// envelope verified.
    pub manifest_sha256: Option<String>,
    /// Problems with the record itself or its place in the chain: signature,
    /// numbering, link, time. Empty means the record verified in its chain.
    pub chain: Vec<String>,
    /// For a segment record: the state of its media.
    pub media: Option<MediaState>,
}

/// The state of a segment's sealed media file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaState {
    /// Present, with the size (and, with [`MediaCheck::Hash`], the SHA-256)
    /// the manifest states.
    Present,
    /// Absent, and a valid deletion receipt names the segment.
    Deleted,
    /// Absent without a receipt.
    Missing,
    /// Present but not what the manifest states (the reason says how).
    Altered(String),
    /// Could not be read.
    Unreadable(String),
}

impl Verdict {
    /// Every problem of this record, chain and media.
    pub fn problems(&self) -> impl Iterator<Item = String> + '_ {
        let media = match &self.media {
            Some(MediaState::Missing) => {
                Some("media file missing, and no deletion receipt names it".into())
            }
            Some(MediaState::Altered(why) | MediaState::Unreadable(why)) => Some(why.clone()),
            _ => None,
        };
        self.chain.iter().cloned().chain(media)
    }
}

/// The segments a verifier may find without their media: those a valid
/// deletion receipt names.
pub trait Deletions {
    /// Whether a valid receipt names `segment_id` (asked after its media
    /// was found missing).
    fn names(&self, segment_id: &str) -> bool;
}

impl Deletions for HashSet<String> {
    fn names(&self, segment_id: &str) -> bool {
        self.contains(segment_id)
    }
}

/// Verifies every record in `dir` against the device public key `key`.
/// Partial files (a segment being written) are ignored.
pub fn verify_camera(dir: &Path, key: &[u8; 32]) -> std::io::Result<Report> {
    verify_camera_with(dir, key, &HashSet::<String>::new())
}

/// [`verify_camera`], accepting a missing media file for the segment ids in
/// `deleted` (those with a verified deletion receipt).
pub fn verify_camera_with(
    dir: &Path,
    key: &[u8; 32],
    deleted: &dyn Deletions,
) -> std::io::Result<Report> {
    verify_camera_checked(dir, key, deleted, MediaCheck::Hash)
}

/// [`verify_camera_with`], reading as much of the media as `media` says.
pub fn verify_camera_checked(
    dir: &Path,
    key: &[u8; 32],
    deleted: &dyn Deletions,
    media: MediaCheck,
) -> std::io::Result<Report> {
    verify(dir, key, deleted, media, false)
}

/// Verifies a partial copy of a camera's chain (the records an evidence
/// store holds of it, `sargsctl fetch`): every record present is checked as
/// in [`verify_camera`], and each link and time step between two records
/// that follow one another; a record missing between them is listed in
/// [`Report::absent`], not reported as a problem, and the record after it
/// is not held to a link it cannot show. Whether a missing record was
/// deleted or never offloaded is the gateway's to say, not the copy's.
pub fn verify_camera_partial(
    dir: &Path,
    key: &[u8; 32],
    deleted: &dyn Deletions,
) -> std::io::Result<Report> {
    verify(dir, key, deleted, MediaCheck::Hash, true)
}

fn verify(
    dir: &Path,
    key: &[u8; 32],
    deleted: &dyn Deletions,
    media: MediaCheck,
    partial: bool,
) -> std::io::Result<Report> {
    let mut files: BTreeMap<u64, PathBuf> = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(seq) = name
            .strip_suffix(".json")
            .and_then(|s| s.parse::<u64>().ok())
        {
            files.insert(seq, entry.path());
        }
    }
    let mut report = Report::default();
    let mut chain = Chain {
        prev_hash: GENESIS.to_owned(),
        prev_end: None,
        expected_seq: 1,
        originals: Default::default(),
        after_hole: false,
    };
    for (seq, path) in files {
        report.records += 1;
        if partial && seq > chain.expected_seq {
            // Not in this copy: nothing links across the hole.
            report.absent.push((chain.expected_seq, seq - 1));
            chain.expected_seq = seq;
            chain.after_hole = true;
            chain.prev_end = None;
        }
        let bytes = std::fs::read(&path)?;
        let (mut verdict, m) = chain.check(dir, seq, &bytes, key, deleted, media);
        let shown = path.display();
        report
            .problems
            .extend(verdict.problems().map(|p| format!("{shown}: {p}")));
        if let Some(m) = m {
            match m.record {
                RecordKind::Gap => report.gaps += 1,
                RecordKind::Segment => {
                    report.segments += 1;
                    if m.dock.is_some() {
                        report.ingested += 1;
                    }
                    if m.media.as_ref().is_some_and(|md| md.truncated) {
                        report.truncated += 1;
                    }
                    if verdict.media == Some(MediaState::Deleted) {
                        report.deleted += 1;
                    }
                }
            }
            verdict.manifest = Some(report.manifests.len());
            report.manifests.push(m);
        }
        report.verdicts.push(verdict);
    }
    Ok(report)
}

/// The verifier's position in a chain.
struct Chain {
    prev_hash: String,
    prev_end: Option<chrono::DateTime<chrono::Utc>>,
    expected_seq: u64,
    /// Originals sealed so far (docked recordings): SHA-256 → sequence.
    originals: std::collections::HashMap<String, u64>,
    /// The next record follows a hole of a partial copy: its link is not
    /// checked (its predecessor is not here).
    after_hole: bool,
}

impl Chain {
    /// Checks record `seq` (envelope `bytes`) and advances the chain.
    fn check(
        &mut self,
        dir: &Path,
        seq: u64,
        bytes: &[u8],
        key: &[u8; 32],
        deleted: &dyn Deletions,
        media_check: MediaCheck,
    ) -> (Verdict, Option<Manifest>) {
        let after_hole = std::mem::take(&mut self.after_hole);
        let mut v = Verdict {
            sequence: seq,
            manifest: None,
            manifest_sha256: None,
            chain: Vec::new(),
            media: None,
        };
        if seq != self.expected_seq {
            v.chain.push(format!(
                "sequence {seq} where {} was expected (a record is missing)",
                self.expected_seq
            ));
        }
        self.expected_seq = seq + 1;
        let env = match Envelope::open(bytes, Some(key)) {
            Ok(env) => env,
            Err(e) => {
                v.chain.push(e.to_string());
                self.prev_hash = String::new();
                return (v, None);
            }
        };
        let m: Manifest = match serde_json::from_str(&env.payload) {
            Ok(m) => m,
            Err(e) => {
                v.chain.push(format!("payload: {e}"));
                self.prev_hash = String::new();
                return (v, None);
            }
        };
        if m.sequence != seq {
            v.chain.push(format!(
                "file name says {seq}, manifest says {}",
                m.sequence
            ));
        }
        if !after_hole && m.prev_manifest_sha256 != self.prev_hash {
            v.chain.push(
                "chain broken: prev_manifest_sha256 does not match the previous record".into(),
            );
        }
        if let Some(dock) = &m.dock {
            if m.end < m.start || (m.end - m.start).num_milliseconds() != m.duration_ms as i64 {
                v.chain
                    .push("ingested recording: end is not start + duration_ms".into());
            }
            if let Some(first) = self
                .originals
                .insert(dock.original_sha256.clone(), m.sequence)
            {
                v.chain.push(format!(
                    "original {} ({}) was already sealed as record {first}",
                    dock.original_name, dock.original_sha256
                ));
            }
        } else if let (Some(prev_end), None) = (self.prev_end, m.clock_fault) {
            let hole = (m.start - prev_end).num_milliseconds();
            if hole < -CONTIGUITY_TOLERANCE_MS {
                v.chain.push(format!(
                    "starts {} ms before the previous record ends",
                    -hole
                ));
            } else if hole > CONTIGUITY_TOLERANCE_MS && m.record == RecordKind::Segment {
                v.chain.push(format!(
                    "{hole} ms after the previous record with no gap record"
                ));
            }
        }
        if m.record == RecordKind::Segment {
            match &m.media {
                None => v.chain.push("segment record without media".into()),
                Some(media) => {
                    v.media = Some(media_state(dir, &m.segment_id, media, deleted, media_check))
                }
            }
        }
        let sha = manifest::sha256_hex(env.payload.as_bytes());
        v.manifest_sha256 = Some(sha.clone());
        self.prev_hash = sha;
        // An ingest says nothing about the live time line around it.
        self.prev_end = if m.dock.is_some() { None } else { Some(m.end) };
        (v, Some(m))
    }
}

fn media_state(
    dir: &Path,
    segment_id: &str,
    media: &manifest::Media,
    deleted: &dyn Deletions,
    check: MediaCheck,
) -> MediaState {
    // The manifest names a file beside it: a name that is a path (`../x`,
    // `/dev/zero`), even in a validly signed manifest, is never opened.
    if !is_plain_file_name(&media.file) {
        return MediaState::Unreadable(format!(
            "{:?}: not a file name beside the manifest (not opened)",
            media.file
        ));
    }
    let file = dir.join(&media.file);
    match std::fs::metadata(&file) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => gone(segment_id, deleted),
        Err(e) => MediaState::Unreadable(format!("{}: {e}", media.file)),
        Ok(meta) if meta.len() != media.ciphertext_bytes => MediaState::Altered(format!(
            "{}: {} bytes, manifest says {}",
            media.file,
            meta.len(),
            media.ciphertext_bytes
        )),
        Ok(_) if check == MediaCheck::Size => MediaState::Present,
        Ok(_) => match sha256_file(&file) {
            Ok(h) if manifest::hex(&h) == media.ciphertext_sha256 => MediaState::Present,
            Ok(_) => MediaState::Altered(format!(
                "{}: SHA-256 does not match the manifest (altered)",
                media.file
            )),
            // Deleted between the look and the read.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => gone(segment_id, deleted),
            Err(e) => MediaState::Unreadable(format!("{}: {e}", media.file)),
        },
    }
}

/// A media file that is not there: deleted if a receipt names it.
fn gone(segment_id: &str, deleted: &dyn Deletions) -> MediaState {
    if deleted.names(segment_id) {
        MediaState::Deleted
    } else {
        MediaState::Missing
    }
}

/// True if `name` is one file name (not empty, `.`, `..`, and without a
/// `/` or NUL), so that joined to a directory it names an entry of it.
fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn media(file: &str) -> manifest::Media {
        serde_json::from_value(serde_json::json!({
            "file": file, "container": "video/mp4", "codec": "h264",
            "width": null, "height": null, "encoding": "encoded",
            "masks": { "rects": [], "version": "sha256:00" },
            "ciphertext_sha256": manifest::hex(&[0u8; 32]), "ciphertext_bytes": 0,
            "recipients": [], "truncated": false,
        }))
        .expect("media")
    }

    /// A gap record of `start..end` chained after `prev`, signed with `key`,
    /// written as record `seq` in `dir`; returns its payload's SHA-256.
    fn gap(
        dir: &Path,
        key: &super::super::sign::DeviceKey,
        seq: u64,
        (start, end): (i64, i64),
        fault: Option<manifest::ClockFault>,
        prev: &str,
    ) -> String {
        let t = |s: i64| chrono::DateTime::from_timestamp(s, 0).expect("instant");
        let m = Manifest {
            v: 1,
            record: RecordKind::Gap,
            segment_id: format!("gw/cam/{seq}"),
            agent_id: "gw".into(),
            camera_id: "cam".into(),
            camera_kind: "stationary".into(),
            sequence: seq,
            start: t(start),
            end: t(end),
            duration_ms: ((end - start) * 1000).max(0) as u64,
            clock: crate::clock::SyncState::Synchronised,
            clock_fault: fault,
            purpose: serde_json::json!({}),
            notice: serde_json::json!({}),
            policy: manifest::PolicyRef {
                id: "p".into(),
                reference: "r".into(),
            },
            retention: manifest::Retention {
                class: "cctv".into(),
                keep: "30 days".into(),
                delete_after: t(end),
            },
            media: None,
            gap: Some(manifest::Gap {
                reason: "test".into(),
            }),
            dock: None,
            prev_manifest_sha256: prev.into(),
            agent_version: "0".into(),
            sealed_at: t(end),
        };
        let payload = m.to_payload();
        let path = dir.join(format!("{seq:010}.json"));
        std::fs::write(path, key.sign(&payload).to_bytes()).expect("record");
        manifest::sha256_hex(payload.as_bytes())
    }

    #[test]
    fn time_may_run_back_only_at_a_record_flagged_with_a_clock_fault() {
        let key = super::super::sign::DeviceKey::generate().expect("key");
        let now = 1_796_000_000;
        let ten_years = 10 * 365 * 86_400;
        for fault in [None, Some(manifest::ClockFault::Stepped)] {
            let root = tempfile::tempdir().expect("tempdir");
            let dir = root.path();
            let h1 = gap(dir, &key, 1, (now, now + 60), None, GENESIS);
            // The clock stepped ten years back: the next record starts
            // before the first one ends.
            let back = (now + 60 - ten_years, now + 120 - ten_years);
            let h2 = gap(dir, &key, 2, back, fault, &h1);
            gap(dir, &key, 3, (back.1, back.1 + 60), None, &h2);
            let r = verify_camera(dir, &key.public_key()).expect("readable");
            match fault {
                None => assert!(
                    r.problems.len() == 1
                        && r.problems[0].contains("before the previous record ends"),
                    "{:?}",
                    r.problems
                ),
                Some(_) => assert!(r.ok(), "{:?}", r.problems),
            }
        }
    }

    /// A store's copy without records 3 and 4: the rest verifies and the
    /// hole is listed; a full verification calls it a missing record; a
    /// broken link between two records present is still found.
    #[test]
    fn a_partial_copy_verifies_what_it_holds_and_lists_what_it_lacks() {
        let key = super::super::sign::DeviceKey::generate().expect("key");
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path();
        let t = 1_796_000_000;
        let mut prev = GENESIS.to_owned();
        for seq in 1..=6u64 {
            let start = t + 60 * seq as i64;
            prev = gap(dir, &key, seq, (start, start + 60), None, &prev);
        }
        for seq in [3, 4] {
            std::fs::remove_file(dir.join(format!("{seq:010}.json"))).expect("rm");
        }
        let none = HashSet::<String>::new();
        let r = verify_camera_partial(dir, &key.public_key(), &none).expect("readable");
        assert!(r.ok(), "{:?}", r.problems);
        assert_eq!((r.records, r.absent.clone()), (4, vec![(3, 4)]));
        let full = verify_camera(dir, &key.public_key()).expect("readable");
        assert!(
            full.problems
                .iter()
                .any(|p| p.contains("a record is missing")),
            "{:?}",
            full.problems
        );
        // Record 6 re-signed naming another predecessor: broken, hole or not.
        gap(dir, &key, 6, (t + 360, t + 420), None, GENESIS);
        let r = verify_camera_partial(dir, &key.public_key(), &none).expect("readable");
        assert!(
            r.problems.iter().any(|p| p.contains("chain broken")),
            "{:?}",
            r.problems
        );
    }

    #[test]
    fn a_media_name_that_is_a_path_is_never_opened() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("cam");
        std::fs::create_dir(&dir).expect("camera dir");
        // Outside the camera's directory, 0 bytes as the manifests say.
        let outside = root.path().join("outside");
        std::fs::write(&outside, b"").expect("outside");
        let none = HashSet::new();
        let absolute = outside.to_str().expect("utf8");
        for name in [
            "../outside",
            absolute,
            "",
            ".",
            "..",
            "sub/seg.age",
            "seg\0.age",
        ] {
            match media_state(&dir, "s", &media(name), &none, MediaCheck::Size) {
                MediaState::Unreadable(why) => {
                    assert!(why.contains("not a file name"), "{name:?}: {why}")
                }
                other => panic!("{name:?}: {other:?}"),
            }
        }
        assert_eq!(
            media_state(&dir, "s", &media("seg.age"), &none, MediaCheck::Size),
            MediaState::Missing
        );
        std::fs::write(dir.join("seg.age"), b"").expect("segment");
        assert_eq!(
            media_state(&dir, "s", &media("seg.age"), &none, MediaCheck::Size),
            MediaState::Present
        );
    }
}
