//! Verifying a camera's chain without any decryption key.
//!
//! For each record in sequence order: the envelope's signature is checked
//! against the device key; the sequence is contiguous; `prev_manifest_sha256`
//! matches the previous payload; time does not run backwards and any hole
//! longer than the contiguity tolerance is covered by a gap record; for a
//! segment, the media file exists and its size and SHA-256 match the manifest
//! — or it was deleted and a valid deletion receipt names it.
//!
//! Records ingested from a docked body camera (`dock` present) follow one
//! another in ingest order, not on the time line (`docs/format.md`, "Body
//! cameras"): they are not held to the contiguity rule and need no gap
//! records; instead each must state a sane interval (`end` = `start` +
//! `duration_ms`, not before `start`) and no original (by SHA-256) may be
//! sealed twice in the chain. Time checks of recorded segments resume after
//! them.
//! One flipped byte anywhere — media, manifest or signature — is reported.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use super::manifest::{self, Manifest, RecordKind, GENESIS};
use super::sign::Envelope;
use crate::store::camera::{hash_file, CONTIGUITY_TOLERANCE_MS};

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
    /// Problems, each naming the file and what is wrong. Empty means verified.
    pub problems: Vec<String>,
    /// Manifests in order, for callers that inspect them further.
    pub manifests: Vec<Manifest>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Verifies every record in `dir` against the device public key `key`.
/// Partial files (a segment being written) are ignored.
pub fn verify_camera(dir: &Path, key: &[u8; 32]) -> std::io::Result<Report> {
    verify_camera_with(dir, key, &HashSet::new())
}

/// [`verify_camera`], accepting a missing media file for the segment ids in
/// `deleted` (those with a verified deletion receipt).
pub fn verify_camera_with(
    dir: &Path,
    key: &[u8; 32],
    deleted: &HashSet<String>,
) -> std::io::Result<Report> {
    let mut manifests: BTreeMap<u64, PathBuf> = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(seq) = name
            .strip_suffix(".json")
            .and_then(|s| s.parse::<u64>().ok())
        {
            manifests.insert(seq, entry.path());
        }
    }
    let mut report = Report::default();
    let mut prev_hash = GENESIS.to_owned();
    let mut prev_end: Option<chrono::DateTime<chrono::Utc>> = None;
    let mut expected_seq = 1;
    let mut originals: std::collections::HashMap<String, u64> = Default::default();
    for (seq, path) in manifests {
        report.records += 1;
        let shown = path.display().to_string();
        let mut problem = |p: String| report.problems.push(format!("{shown}: {p}"));
        if seq != expected_seq {
            problem(format!(
                "sequence {seq} where {expected_seq} was expected (a record is missing)"
            ));
        }
        expected_seq = seq + 1;
        let bytes = std::fs::read(&path)?;
        let env = match Envelope::open(&bytes, Some(key)) {
            Ok(env) => env,
            Err(e) => {
                problem(e.to_string());
                prev_hash = String::new();
                continue;
            }
        };
        let m: Manifest = match serde_json::from_str(&env.payload) {
            Ok(m) => m,
            Err(e) => {
                problem(format!("payload: {e}"));
                continue;
            }
        };
        if m.sequence != seq {
            problem(format!(
                "file name says {seq}, manifest says {}",
                m.sequence
            ));
        }
        if m.prev_manifest_sha256 != prev_hash {
            problem("chain broken: prev_manifest_sha256 does not match the previous record".into());
        }
        if let Some(dock) = &m.dock {
            report.ingested += 1;
            if m.end < m.start || (m.end - m.start).num_milliseconds() != m.duration_ms as i64 {
                problem("ingested recording: end is not start + duration_ms".into());
            }
            if let Some(first) = originals.insert(dock.original_sha256.clone(), m.sequence) {
                problem(format!(
                    "original {} ({}) was already sealed as record {first}",
                    dock.original_name, dock.original_sha256
                ));
            }
        } else if let Some(prev_end) = prev_end {
            let hole = (m.start - prev_end).num_milliseconds();
            if hole < -CONTIGUITY_TOLERANCE_MS {
                problem(format!(
                    "starts {} ms before the previous record ends",
                    -hole
                ));
            } else if hole > CONTIGUITY_TOLERANCE_MS && m.record == RecordKind::Segment {
                problem(format!(
                    "{} ms after the previous record with no gap record",
                    hole
                ));
            }
        }
        match m.record {
            RecordKind::Gap => report.gaps += 1,
            RecordKind::Segment => {
                report.segments += 1;
                match &m.media {
                    None => problem("segment record without media".into()),
                    Some(media) => {
                        if media.truncated {
                            report.truncated += 1;
                        }
                        let file = dir.join(&media.file);
                        match std::fs::metadata(&file) {
                            Err(e)
                                if e.kind() == std::io::ErrorKind::NotFound
                                    && deleted.contains(&m.segment_id) =>
                            {
                                report.deleted += 1;
                            }
                            Err(e) => problem(format!("{}: {e}", media.file)),
                            Ok(meta) if meta.len() != media.ciphertext_bytes => problem(format!(
                                "{}: {} bytes, manifest says {}",
                                media.file,
                                meta.len(),
                                media.ciphertext_bytes
                            )),
                            Ok(_) => match hash_file(&file) {
                                Ok(h) if manifest::hex(&h) == media.ciphertext_sha256 => {}
                                Ok(_) => problem(format!(
                                    "{}: SHA-256 does not match the manifest (altered)",
                                    media.file
                                )),
                                Err(e) => problem(e.to_string()),
                            },
                        }
                    }
                }
            }
        }
        prev_hash = manifest::sha256_hex(env.payload.as_bytes());
        // An ingest says nothing about the live time line around it.
        prev_end = if m.dock.is_some() { None } else { Some(m.end) };
        report.manifests.push(m);
    }
    Ok(report)
}
