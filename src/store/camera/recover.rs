//! Recovery of one camera's chain at start-up: every file beyond `HEAD` is
//! accounted for — a record whose manifest is durable but `HEAD` was not
//! advanced is adopted, a partial media file is committed as a `truncated`
//! segment (every whole age chunk in it is salvageable at HQ), a docked
//! file's unfinished sealed copy is removed (its original is still on the
//! camera), and a crash always leaves a gap record. Nothing a crash
//! interrupted is dropped silently.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use super::{hash_file, CameraLog, Head, MediaFacts, SegmentInfo, StoreError, INGEST_EXT};
use sargs_core::fsutil;
use sargs_core::layout::{MEDIA_EXT, PARTIAL_EXT};
use sargs_core::seal::age::SealSummary;
use sargs_core::seal::manifest::{self, Manifest};
use sargs_core::seal::sign::Envelope;

impl CameraLog {
    pub(super) fn recover(&mut self) -> Result<(), StoreError> {
        let mut later: BTreeMap<u64, Found> = BTreeMap::new();
        let rd = std::fs::read_dir(&self.dir).map_err(StoreError::io(&self.dir))?;
        for entry in rd {
            let entry = entry.map_err(StoreError::io(&self.dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(".tmp") {
                // An unsigned, unfinished manifest or HEAD: not evidence, safe to drop.
                let p = entry.path();
                std::fs::remove_file(&p).map_err(StoreError::io(&p))?;
                continue;
            }
            let Some((seq, ext)) = name.split_once('.') else {
                continue;
            };
            let Ok(seq) = seq.parse::<u64>() else {
                continue;
            };
            if seq <= self.head.sequence {
                continue;
            }
            let slot = later.entry(seq).or_default();
            match ext {
                "json" => slot.json = true,
                MEDIA_EXT => slot.media = true,
                PARTIAL_EXT => slot.partial = true,
                INGEST_EXT => slot.ingest = true,
                _ => {}
            }
        }
        for (seq, found) in later {
            let Found {
                json,
                media,
                partial,
                ingest,
            } = found;
            if json {
                let from = if partial {
                    Some(self.partial_path(seq))
                } else if ingest {
                    Some(self.ingest_path(seq))
                } else {
                    None
                };
                self.adopt(seq, from)?;
            } else if ingest {
                // An interrupted ingest: its original is still on the camera.
                let path = self.ingest_path(seq);
                tracing::info!(camera = %self.camera.id, sequence = seq,
                    "removing an unfinished dock ingest; its original is still on the camera");
                std::fs::remove_file(&path).map_err(StoreError::io(&path))?;
            } else if partial || media {
                let path = if partial {
                    self.partial_path(seq)
                } else {
                    self.media_path(seq)
                };
                self.commit_orphan(&path)?;
            }
        }
        fsutil::sync_dir(&self.dir).map_err(StoreError::io(&self.dir))?;
        self.reserved = self.head.sequence;
        Ok(())
    }

    /// A manifest was durable but HEAD was not updated (crash between steps 2 and 4).
    fn adopt(&mut self, seq: u64, unrenamed: Option<PathBuf>) -> Result<(), StoreError> {
        let path = self.manifest_path(seq);
        let bytes = std::fs::read(&path).map_err(StoreError::io(&path))?;
        let corrupt = |reason: String| StoreError::Corrupt {
            path: path.clone(),
            reason,
        };
        let env = Envelope::open(&bytes, Some(&self.ctx.key.public_key()))
            .map_err(|e| corrupt(e.to_string()))?;
        let m: Manifest = serde_json::from_str(&env.payload).map_err(|e| corrupt(e.to_string()))?;
        if m.sequence != self.head.sequence + 1
            || m.prev_manifest_sha256 != self.head.manifest_sha256
        {
            return Err(corrupt(format!(
                "does not follow head {} in the chain",
                self.head.sequence
            )));
        }
        if let Some(from) = unrenamed {
            let to = self.media_path(seq);
            std::fs::rename(&from, &to).map_err(StoreError::io(&from))?;
        }
        tracing::info!(camera = %self.camera.id, sequence = seq, "recovered a committed record");
        self.set_head(Head {
            sequence: seq,
            manifest_sha256: manifest::sha256_hex(env.payload.as_bytes()),
            end: Some(m.end),
        })
    }

    /// A media file without a manifest: the agent died while writing it.
    /// It is kept byte for byte and committed as a truncated segment.
    fn commit_orphan(&mut self, path: &Path) -> Result<(), StoreError> {
        let meta = std::fs::metadata(path).map_err(StoreError::io(path))?;
        let end: DateTime<Utc> = meta
            .modified()
            .map(DateTime::<Utc>::from)
            .unwrap_or_else(|_| crate::clock::now());
        // The segment began no earlier than the previous record's end.
        let start = self.head.end.unwrap_or(end).min(end);
        let sha = hash_file(path)?;
        let seq = self.head.sequence + 1;
        self.reserved = seq;
        let target = self.partial_path(seq);
        if path != target {
            std::fs::rename(path, &target).map_err(StoreError::io(path))?;
        }
        let info = SegmentInfo {
            start,
            end,
            media: MediaFacts::unknown(),
        };
        let summary = SealSummary {
            plaintext_len: 0,
            ciphertext_len: meta.len(),
            ciphertext_sha256: sha,
            chunks: 0,
        };
        tracing::warn!(camera = %self.camera.id, sequence = seq, bytes = meta.len(),
            "kept a segment interrupted by an unclean stop; committing it as truncated");
        self.commit_media(seq, &info, &summary, true, None)
    }
}

/// Files of one sequence number found beyond `HEAD` at recovery.
#[derive(Default)]
struct Found {
    json: bool,
    media: bool,
    partial: bool,
    ingest: bool,
}
