//! One camera's chain on disk: reserving, committing and recovering records.
//!
//! Invariant (see the store's durability order in [`super`]): `HEAD` names the
//! last record whose manifest, media file and directory entries are all
//! durable; records are committed strictly in sequence order, each linked to
//! its predecessor's payload hash; nothing a crash interrupted is dropped —
//! a partial media file becomes a `truncated` segment record, a missing
//! stretch of time becomes a `gap` record.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

mod ingest;
mod recover;

pub use ingest::IngestInfo;

use super::StoreError;
use crate::config::CameraConfig;
use sargs_core::fsutil;
use sargs_core::layout::{CONTIGUITY_TOLERANCE_MS, MEDIA_EXT, PARTIAL_EXT};
use sargs_core::policy::Policy;
use sargs_core::seal::age::{AgeWriter, Check, SealSummary};
use sargs_core::seal::manifest::{
    self, ClockFault, Gap, Manifest, Masks, Media, PolicyRef, RecordKind, Retention, GENESIS,
};
use sargs_core::seal::sign::{DeviceKey, Envelope};
use sargs_core::seal::Recipient;

/// A docked camera's file being sealed: unlike a `.partial` segment it is
/// never committed as truncated after a crash — its original is still on
/// the camera (see [`crate::dock`]), so recovery removes it.
const INGEST_EXT: &str = "mp4.age.ingest";

/// What every camera of an agent seals with.
pub struct SealContext {
    pub agent_id: String,
    pub key: Arc<DeviceKey>,
    pub recipients: Vec<Recipient>,
    pub policy: Arc<Policy>,
    /// Told about every committed record (the retention index), after `HEAD`.
    pub observer: Option<Arc<dyn SealObserver>>,
}

impl SealContext {
    /// The context of `config`'s agent, sealing with `key` and telling `observer`.
    pub fn of(
        config: &crate::config::Config,
        key: Arc<DeviceKey>,
        observer: Option<Arc<dyn SealObserver>>,
    ) -> SealContext {
        SealContext {
            agent_id: config.agent.id.clone(),
            key,
            recipients: config.recipients.clone(),
            policy: config.policy.clone(),
            observer,
        }
    }
}

/// Learns of each record once it is durable. It cannot veto or fail the
/// commit: whatever it misses it must recover from the chains at start.
pub trait SealObserver: Send + Sync {
    /// `envelope` is the record's signed envelope as written to `N.json`;
    /// `manifest` is its payload.
    fn sealed(&self, manifest: &Manifest, envelope: &Envelope);
}

/// The chain head as stored in `HEAD`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Head {
    pub sequence: u64,
    pub manifest_sha256: String,
    pub end: Option<DateTime<Utc>>,
}

impl Head {
    fn genesis() -> Head {
        Head {
            sequence: 0,
            manifest_sha256: GENESIS.to_owned(),
            end: None,
        }
    }
}

/// What a segment's video is, as its manifest states it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaFacts {
    /// `h264`, `h265`, or `unknown`.
    pub codec: String,
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// `passthrough`, `encoded` or `transcoded` (see the manifest's `media`).
    pub encoding: &'static str,
}

impl MediaFacts {
    /// Nothing is known of the video (a segment recovered after a crash).
    pub fn unknown() -> MediaFacts {
        MediaFacts {
            codec: "unknown".into(),
            width: None,
            height: None,
            encoding: "unknown",
        }
    }
}

/// A recorded segment's interval and video, for its manifest.
#[derive(Clone, Debug)]
pub struct SegmentInfo {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub media: MediaFacts,
}

/// A segment being written: its sequence is reserved, its file exists as
/// `N.mp4.age.partial`, and its age header is on disk. Capture writes into
/// it through [`OpenSegment::writer`]; only the store seals it.
pub struct OpenSegment {
    sequence: u64,
    partial: PathBuf,
    writer: Option<AgeWriter<File>>,
    /// When it was opened, on the monotonic clock: a step of the wall clock
    /// after it flags the record (`crate::clock::fault`).
    opened: Instant,
}

impl OpenSegment {
    /// The sequence number reserved for it in its camera's chain.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// The file being written (`N.mp4.age.partial`).
    pub fn path(&self) -> &Path {
        &self.partial
    }

    /// The sealing writer; `BrokenPipe` once the segment is sealed.
    pub fn writer(&mut self) -> std::io::Result<&mut AgeWriter<File>> {
        self.writer.as_mut().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "segment already sealed")
        })
    }
}

/// One camera's chain.
pub struct CameraLog {
    dir: PathBuf,
    camera: CameraConfig,
    ctx: Arc<SealContext>,
    head: Head,
    /// Highest sequence reserved (committed or open).
    reserved: u64,
    /// Why the time after `head.end` may be missing, for the next gap record,
    /// and whether that gap is recorded however short it is (a failure or a
    /// crash always leaves a gap record; a clean pause only beyond the tolerance).
    gap_reason: Option<(String, bool)>,
    /// When this agent took the camera on, and whether it has failed since:
    /// a camera that fails before its first record starts its chain with a
    /// gap from that instant, so its downtime is never silence.
    opened: DateTime<Utc>,
    failed: bool,
    /// When `head` was committed by this process, on the monotonic clock:
    /// a gap record from its end is flagged if the wall clock stepped since.
    head_at: Option<Instant>,
}

impl CameraLog {
    /// Opens (creating if new) the camera's directory and recovers what a crash
    /// left: adopts manifests newer than `HEAD`, completes interrupted renames,
    /// and commits orphaned partial files as truncated segments.
    pub fn open(
        dir: PathBuf,
        camera: CameraConfig,
        ctx: Arc<SealContext>,
        unclean_stop: bool,
    ) -> Result<CameraLog, StoreError> {
        fsutil::create_private_dir(&dir).map_err(StoreError::io(&dir))?;
        let head_path = dir.join("HEAD");
        let head = match std::fs::read(&head_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                path: head_path.clone(),
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Head::genesis(),
            Err(e) => return Err(StoreError::io(&head_path)(e)),
        };
        let mut log = CameraLog {
            dir,
            camera,
            ctx,
            reserved: head.sequence,
            head,
            gap_reason: Some(if unclean_stop {
                (
                    "agent restarted after an unclean stop (crash or power loss)".to_owned(),
                    true,
                )
            } else {
                ("agent was not running".to_owned(), false)
            }),
            opened: crate::clock::now(),
            failed: false,
            head_at: None,
        };
        log.recover()?;
        Ok(log)
    }

    pub fn camera(&self) -> &CameraConfig {
        &self.camera
    }

    /// Records why recording stopped; the next record after a hole is a gap
    /// record with this reason.
    pub fn note_gap_reason(&mut self, reason: impl Into<String>) {
        self.gap_reason = Some((reason.into(), true));
        self.failed = true;
    }

    /// Reserves the next sequence and creates its partial file with the age
    /// header written. If nothing is open and time has passed since the last
    /// record, a gap record is committed first.
    pub fn begin_segment(
        &mut self,
        now: DateTime<Utc>,
        open_count: usize,
    ) -> Result<OpenSegment, StoreError> {
        if open_count == 0 && self.reserved > self.head.sequence {
            // A segment could not be committed (e.g. the disk was full): its
            // bytes become a truncated segment before anything follows it.
            self.recover()?;
        }
        if open_count == 0 {
            self.commit_gap_if_needed(now)?;
        }
        let seq = self.reserved + 1;
        let partial = self.partial_path(seq);
        let writer = self.create_sealed(&partial)?;
        self.reserved = seq;
        Ok(OpenSegment {
            sequence: seq,
            partial,
            writer: Some(writer),
            opened: Instant::now(),
        })
    }

    /// Creates `path` (`O_EXCL`, 0600) with the age header written. If the
    /// header cannot be written the file is removed: no video, nothing to keep.
    pub(super) fn create_sealed(&self, path: &Path) -> Result<AgeWriter<File>, StoreError> {
        self.create_sealed_with(path, Check::Sha256, |file| file)
    }

    /// As [`create_sealed`](Self::create_sealed), computing `check` over the
    /// written bytes, which go to `wrap` of the file.
    pub(super) fn create_sealed_with<W: std::io::Write>(
        &self,
        path: &Path,
        check: Check,
        wrap: impl FnOnce(File) -> W,
    ) -> Result<AgeWriter<W>, StoreError> {
        let file = fsutil::create_new(path, 0o600).map_err(StoreError::io(path))?;
        AgeWriter::with_check(wrap(file), &self.ctx.recipients, check).map_err(|e| {
            let _ = std::fs::remove_file(path);
            StoreError::Io {
                path: path.to_owned(),
                source: std::io::Error::other(e.to_string()),
            }
        })
    }

    /// The error for committing `got` when it does not follow the head.
    pub(super) fn out_of_order(&self, got: u64) -> StoreError {
        StoreError::OutOfOrder {
            camera: self.camera.id.clone(),
            got,
            head: self.head.sequence,
        }
    }

    /// Commits a gap record from the head's end to `until`, if the hole is longer
    /// than the tolerance (or was caused by a failure). A chain whose camera
    /// failed before its first record starts with a gap from the instant the
    /// agent took the camera on.
    pub fn commit_gap_if_needed(&mut self, until: DateTime<Utc>) -> Result<(), StoreError> {
        let from = match self.head.end {
            Some(end) => end,
            None if self.failed => self.opened,
            // A new chain with nothing to explain yet: it starts at its first record.
            None => return Ok(()),
        };
        let hole = (until - from).num_milliseconds();
        let forced = self.gap_reason.as_ref().is_some_and(|(_, f)| *f);
        if hole <= 0 || (hole <= CONTIGUITY_TOLERANCE_MS && !forced) {
            self.gap_reason = None;
            return Ok(());
        }
        let reason = self
            .gap_reason
            .take()
            .map(|(r, _)| r)
            .unwrap_or_else(|| "no data from the source".to_owned());
        let seq = self.head.sequence + 1;
        if self.reserved >= seq {
            return Err(self.out_of_order(seq));
        }
        let mut m = self.manifest_base(seq, RecordKind::Gap, from, until);
        m.clock_fault = self.timeline_fault(from, self.head_at);
        m.gap = Some(Gap {
            reason: reason.clone(),
        });
        self.write_manifest(&m)?;
        self.reserved = seq;
        tracing::info!(camera = %self.camera.id, sequence = seq, %from, %until, %reason, "gap recorded");
        Ok(())
    }

    /// Seals and commits an open segment. With `truncated`, the media was cut
    /// short (source lost); the age stream is still finished so that any age
    /// tool decrypts it.
    pub fn commit_segment(
        &mut self,
        seg: &mut OpenSegment,
        info: &SegmentInfo,
        truncated: bool,
    ) -> Result<(), StoreError> {
        // Final chunk, fsyncs, manifest, rename and head: one operation of
        // the disk watch (a stall is reported naming this camera and file).
        let _op = crate::diskwatch::begin("seal", &seg.partial, Some(&self.camera.id));
        let writer = seg.writer.take().ok_or_else(|| StoreError::Corrupt {
            path: seg.partial.clone(),
            reason: "segment writer already taken".into(),
        })?;
        let (file, summary) = writer.finish().map_err(|e| StoreError::Io {
            path: seg.partial.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        file.sync_all().map_err(StoreError::io(&seg.partial))?;
        drop(file);
        self.commit_media(seg.sequence, info, &summary, truncated, Some(seg.opened))
    }

    fn commit_media(
        &mut self,
        seq: u64,
        info: &SegmentInfo,
        summary: &SealSummary,
        truncated: bool,
        opened: Option<Instant>,
    ) -> Result<(), StoreError> {
        if seq != self.head.sequence + 1 {
            return Err(self.out_of_order(seq));
        }
        let end = info.end.max(info.start);
        let mut m = self.manifest_base(seq, RecordKind::Segment, info.start, end);
        m.clock_fault = self.timeline_fault(info.start, opened);
        m.media = Some(Media {
            codec: info.media.codec.clone(),
            width: info.media.width,
            height: info.media.height,
            encoding: info.media.encoding.into(),
            truncated,
            ..self.sealed_media(seq, summary)
        });
        self.commit_record(&self.partial_path(seq), &m)?;
        tracing::info!(camera = %self.camera.id, sequence = seq, start = %info.start, end = %end,
            bytes = summary.ciphertext_len, truncated, "segment sealed");
        Ok(())
    }

    /// The media of record `seq` sealed as `summary` says, in the defaults
    /// of a recorded segment (fragmented MP4, the camera's masks).
    fn sealed_media(&self, seq: u64, summary: &SealSummary) -> Media {
        Media {
            file: format!("{seq:010}.{MEDIA_EXT}"),
            container: "video/mp4".into(),
            codec: "unknown".into(),
            width: None,
            height: None,
            encoding: "unknown".into(),
            masks: Masks {
                rects: self.camera.masks.clone(),
                version: manifest::masks_version(&self.camera.masks),
            },
            ciphertext_sha256: manifest::hex(&summary.ciphertext_sha256),
            ciphertext_bytes: summary.ciphertext_len,
            recipients: self.ctx.recipients.iter().map(|r| r.to_string()).collect(),
            truncated: false,
        }
    }

    /// Steps 2–4 for a record with media in `from`: the manifest, the
    /// rename to `N.mp4.age`, `HEAD`; then the observer. Returns the payload.
    fn commit_record(&mut self, from: &Path, m: &Manifest) -> Result<String, StoreError> {
        let seq = m.sequence;
        let media = self.media_path(seq);
        let payload = m.to_payload();
        let env = self.ctx.key.sign(&payload);
        let mpath = self.manifest_path(seq);
        fsutil::write_atomic(&mpath, &env.to_bytes(), 0o600).map_err(StoreError::io(&mpath))?;
        std::fs::rename(from, &media).map_err(StoreError::io(from))?;
        fsutil::sync_dir(&self.dir).map_err(StoreError::io(&self.dir))?;
        self.set_head(Head {
            sequence: seq,
            manifest_sha256: manifest::sha256_hex(payload.as_bytes()),
            end: Some(m.end),
        })?;
        if let Some(o) = &self.ctx.observer {
            o.sealed(m, &env);
        }
        Ok(payload)
    }

    fn write_manifest(&mut self, m: &Manifest) -> Result<(), StoreError> {
        let payload = m.to_payload();
        let env = self.ctx.key.sign(&payload);
        let path = self.manifest_path(m.sequence);
        fsutil::write_atomic(&path, &env.to_bytes(), 0o600).map_err(StoreError::io(&path))?;
        self.set_head(Head {
            sequence: m.sequence,
            manifest_sha256: manifest::sha256_hex(payload.as_bytes()),
            end: Some(m.end),
        })?;
        if let Some(o) = &self.ctx.observer {
            o.sealed(m, &env);
        }
        Ok(())
    }

    fn set_head(&mut self, head: Head) -> Result<(), StoreError> {
        let path = self.dir.join("HEAD");
        let bytes = serde_json::to_vec(&head).unwrap_or_else(|_| unreachable!("plain data"));
        fsutil::write_atomic(&path, &bytes, 0o600).map_err(StoreError::io(&path))?;
        self.head = head;
        self.head_at = Some(Instant::now());
        Ok(())
    }

    /// The clock fault of a record of the live time line starting at
    /// `start`, opened at `opened`: what the clock watch says, or
    /// [`ClockFault::Stepped`] when it starts before the previous record
    /// ends (the clock went back, perhaps while the agent was not running).
    fn timeline_fault(&self, start: DateTime<Utc>, opened: Option<Instant>) -> Option<ClockFault> {
        let behind = self
            .head
            .end
            .is_some_and(|end| (end - start).num_milliseconds() > CONTIGUITY_TOLERANCE_MS);
        crate::clock::fault(opened).or(behind.then_some(ClockFault::Stepped))
    }

    fn manifest_base(
        &self,
        seq: u64,
        record: RecordKind,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Manifest {
        let cam = &self.camera;
        let policy = &self.ctx.policy;
        let delete_after = cam.class.keep.add_to(start).unwrap_or(start);
        Manifest {
            v: manifest::MANIFEST_VERSION,
            record,
            segment_id: format!("{}/{}/{seq}", self.ctx.agent_id, cam.id),
            agent_id: self.ctx.agent_id.clone(),
            camera_id: cam.id.clone(),
            camera_kind: cam.kind.as_str().to_owned(),
            sequence: seq,
            start,
            end,
            duration_ms: (end - start).num_milliseconds().max(0) as u64,
            clock: crate::clock::sync_state(),
            clock_fault: None,
            purpose: serde_json::to_value(&cam.purpose).unwrap_or_default(),
            notice: serde_json::to_value(&policy.controller).unwrap_or_default(),
            policy: PolicyRef {
                id: policy.id.clone(),
                reference: policy.reference.clone(),
            },
            retention: Retention {
                class: cam.class.id.clone(),
                keep: cam.class.keep.to_string(),
                delete_after,
            },
            media: None,
            gap: None,
            dock: None,
            prev_manifest_sha256: self.head.manifest_sha256.clone(),
            agent_version: crate::VERSION.to_owned(),
            sealed_at: crate::clock::now(),
        }
    }

    fn manifest_path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:010}.json"))
    }
    fn media_path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:010}.{MEDIA_EXT}"))
    }
    fn partial_path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:010}.{PARTIAL_EXT}"))
    }
    fn ingest_path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:010}.{INGEST_EXT}"))
    }
}

/// SHA-256 of a file's bytes.
pub fn hash_file(path: &Path) -> Result<[u8; 32], StoreError> {
    sargs_core::layout::sha256_file(path).map_err(StoreError::io(path))
}
