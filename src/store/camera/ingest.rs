//! Dock ingest in a camera's chain: a docked camera's file sealed as the
//! next record, in the store's durability order (the ingest's own invariant
//! is in [`crate::dock`]). Its sealed file is `N.mp4.age.ingest` until the
//! manifest is durable; recovery never commits such a file as truncated — it
//! removes it, because the original is still on the camera.

use std::fs::File;
use std::io::Write;

use chrono::{DateTime, Utc};

use super::{CameraLog, OpenSegment, RecordKind, StoreError};
use sargs_core::fsutil;
use sargs_core::seal::age::{AgeWriter, Check, SealSummary};
use sargs_core::seal::manifest::{Dock, Manifest, Media};

/// Facts about an ingested recording known when it is committed.
#[derive(Debug, Clone)]
pub struct IngestInfo {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// MIME type of the container, `application/octet-stream` when unknown.
    pub container: String,
    pub codec: String,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub dock: Dock,
}

impl CameraLog {
    /// Reserves the next sequence for a docked camera's file and creates its
    /// sealed file `N.mp4.age.ingest`, written through `wrap` of the file
    /// (the dock's `O_DIRECT` writer), with the age header given to it. The
    /// writer computes only a CRC-32 of the ciphertext ([`Check::Crc32`]):
    /// the SHA-256 the manifest signs is taken from the bytes read back from
    /// the disk (`crate::dock::copy`). The segment has no writer of its own:
    /// the caller finishes the one returned. Nothing else may be open:
    /// ingests are committed one at a time, in order.
    pub fn begin_ingest<W: Write>(
        &mut self,
        wrap: impl FnOnce(File) -> W,
    ) -> Result<(OpenSegment, AgeWriter<W>), StoreError> {
        if self.reserved > self.head.sequence {
            self.recover()?;
        }
        let seq = self.head.sequence + 1;
        let path = self.ingest_path(seq);
        let writer = self.create_sealed_with(&path, Check::Crc32, wrap)?;
        self.reserved = seq;
        let seg = OpenSegment {
            sequence: seq,
            partial: path,
            writer: None,
            opened: std::time::Instant::now(),
        };
        Ok((seg, writer))
    }

    /// Drops an ingest that will not be committed (its original stays on
    /// the camera, or is already sealed): the file is removed, the sequence
    /// released.
    pub fn abandon_ingest(&mut self, seg: OpenSegment) -> Result<(), StoreError> {
        drop(seg.writer);
        match std::fs::remove_file(&seg.partial) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(StoreError::io(&seg.partial)(e))
            }
            _ => {}
        }
        fsutil::sync_dir(&self.dir).map_err(StoreError::io(&self.dir))?;
        self.reserved = self.head.sequence;
        Ok(())
    }

    /// Commits an ingested file whose sealed copy is finished, fsynced and
    /// re-read (`summary` describes it): manifest, rename, `HEAD`, in the
    /// store's durability order. Returns the manifest and its signed payload.
    pub fn commit_ingest(
        &mut self,
        seq: u64,
        info: IngestInfo,
        summary: &SealSummary,
    ) -> Result<(Manifest, String), StoreError> {
        if seq != self.head.sequence + 1 || self.reserved != seq {
            return Err(self.out_of_order(seq));
        }
        let end = info.end.max(info.start);
        let mut m = self.manifest_base(seq, RecordKind::Segment, info.start, end);
        // Not on the live time line: only the gateway's clock as it is now
        // (its `start` may be the ingest time) can be faulted.
        m.clock_fault = crate::clock::fault(Some(std::time::Instant::now()));
        m.media = Some(Media {
            container: info.container,
            codec: info.codec,
            width: info.width,
            height: info.height,
            encoding: "original".into(),
            ..self.sealed_media(seq, summary)
        });
        m.dock = Some(info.dock);
        let payload = self.commit_record(&self.ingest_path(seq), &m)?;
        tracing::info!(camera = %self.camera.id, sequence = seq, bytes = summary.ciphertext_len,
            "docked recording sealed");
        Ok((m, payload))
    }
}
