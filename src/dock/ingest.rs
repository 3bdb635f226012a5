//! One dock session: every recording on one docked camera, in path order,
//! each taken off in the order of [`super`]'s invariant — sealed, fsynced,
//! read back, committed, indexed, and only then removed from the camera.
//!
//! A file either ends as a record of the camera's chain (sealed now, or
//! recognised as sealed before by its SHA-256) or stays on the camera as it
//! was. A failure that concerns one file (it changed while read) skips that
//! file; one that concerns the dock or the store (camera pulled out, disk
//! full, an I/O error) ends the session — the next dock continues.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::copy::{self, CopyError};
use super::direct::DirectWriter;
use super::probe::{self, Probe};
use super::scan::Candidate;
use crate::config::{BodyCamera, DockSettings};
use crate::events::{DockEvent, FileDone, Finished};
use crate::events::{Event, EventSink};
use crate::retention::Retention;
use crate::store::{CameraLog, IngestInfo};
use sargs_core::seal::age::CHUNK_SIZE;
use sargs_core::seal::manifest::{self, Dock};

/// A recording whose recorded interval ends later than this after the
/// ingest started is not believed to be on the camera's clock.
const FUTURE_TOLERANCE_MS: i64 = 2_000;

/// Hears a session's progress (the `sargs ingest` progress bar; the agent
/// uses [`Quiet`] and the events).
pub trait Watch: Sync {
    fn started(&self, _files: u64, _bytes: u64) {}
    fn advanced(&self, _bytes: u64) {}
    fn file(&self, _done: &FileDone) {}
}

/// A [`Watch`] that ignores everything.
pub struct Quiet;
impl Watch for Quiet {}

/// What a session needs besides the camera's chain.
pub struct Session<'a> {
    pub agent_id: &'a str,
    pub body: &'a BodyCamera,
    pub settings: &'a DockSettings,
    pub retention: &'a Retention,
    pub events: &'a dyn EventSink,
    pub watch: &'a dyn Watch,
    pub cancel: &'a CancellationToken,
    /// The data directory, and the free space its file system must keep.
    pub data_dir: &'a Path,
    pub min_free_bytes: u64,
}

/// How one file ended.
enum Outcome {
    Done(Box<FileDone>),
    /// This file stays on the camera; go on with the next.
    Skip(String),
    /// The session cannot go on (camera gone, store unusable, stopped).
    Stop(String),
}

/// Counters of a session in progress.
struct Tally {
    started: Instant,
    started_at: DateTime<Utc>,
    files_total: u64,
    bytes_total: u64,
    files_done: u64,
    bytes_done: u64,
    sealed: u64,
    already: u64,
}

impl Tally {
    fn new(files_total: u64, bytes_total: u64) -> Tally {
        Tally {
            started: Instant::now(),
            started_at: crate::clock::now(),
            files_total,
            bytes_total,
            files_done: 0,
            bytes_done: 0,
            sealed: 0,
            already: 0,
        }
    }

    fn rate(&self) -> u64 {
        let s = self.started.elapsed().as_secs_f64();
        if s > 0.0 {
            (self.bytes_done as f64 / s) as u64
        } else {
            0
        }
    }
}

impl Session<'_> {
    fn camera(&self) -> &str {
        &self.body.camera.id
    }

    fn emit(&self, e: DockEvent) {
        self.events.emit(Event::Dock(Box::new(e)));
    }

    /// Ingests `files` of the camera docked at `dir`; `offset_ms` is its
    /// clock offset if it states one. Emits `dock.started`, one event per
    /// file and `dock.finished`, and returns the latter.
    pub fn run(
        &self,
        log: &mut CameraLog,
        dir: &Path,
        files: &[Candidate],
        offset_ms: Option<i64>,
    ) -> Finished {
        let mut t = Tally::new(files.len() as u64, files.iter().map(|c| c.len).sum());
        let serial = self.body.serial.clone();
        tracing::info!(camera = %self.camera(), %serial, dir = %dir.display(), files = t.files_total,
            bytes = t.bytes_total, camera_clock_offset_ms = ?offset_ms, "dock: ingest starting");
        self.emit(DockEvent::Started {
            camera: self.camera().to_owned(),
            serial: serial.clone(),
            officer: self.body.officer.clone(),
            files_total: t.files_total,
            bytes_total: t.bytes_total,
            camera_clock_offset_ms: offset_ms,
        });
        self.watch.started(t.files_total, t.bytes_total);
        let mut reason = None;
        for c in files {
            let outcome = self.one(log, dir, c, offset_ms, &mut t);
            match outcome {
                Outcome::Done(done) => {
                    tracing::info!(camera = %self.camera(), file = %done.original_name,
                        outcome = done.outcome, segment = %done.segment_id,
                        removed = done.removed_from_camera, files_done = done.files_done,
                        files_total = done.files_total, rate_mib_s = done.rate_bytes_s >> 20,
                        "dock: file done");
                    self.watch.file(&done);
                    self.emit(DockEvent::File(done));
                }
                Outcome::Skip(why) | Outcome::Stop(why) if self.cancel.is_cancelled() => {
                    tracing::info!(camera = %self.camera(), file = %c.name, %why, "dock: stopped");
                    reason = Some("stopped before the dock was done".to_owned());
                    break;
                }
                Outcome::Skip(why) => {
                    tracing::warn!(camera = %self.camera(), file = %c.name, %why,
                        "dock: file left on the camera for the next dock");
                    self.file_failed(c, &why);
                    reason.get_or_insert(why);
                }
                Outcome::Stop(why) => {
                    tracing::error!(camera = %self.camera(), file = %c.name, %why,
                        "dock: ingest interrupted; the camera keeps what is not sealed");
                    self.file_failed(c, &why);
                    reason = Some(why);
                    break;
                }
            }
        }
        self.finish(&t, reason)
    }

    /// `dock.finished` for a camera whose storage cannot even be listed.
    pub fn unreadable(&self, why: String) -> Finished {
        tracing::error!(camera = %self.camera(), %why, "dock: ingest impossible");
        let t = Tally::new(0, 0);
        self.finish(&t, Some(why))
    }

    fn finish(&self, t: &Tally, reason: Option<String>) -> Finished {
        let left = t.files_total - t.sealed - t.already;
        let finished = Finished {
            camera: self.camera().to_owned(),
            serial: self.body.serial.clone(),
            sealed: t.sealed,
            already_sealed: t.already,
            failed: left,
            files_total: t.files_total,
            bytes: t.bytes_done,
            seconds: t.started.elapsed().as_secs_f64(),
            rate_bytes_s: t.rate(),
            complete: left == 0 && reason.is_none(),
            reason,
            started_at: t.started_at,
        };
        tracing::info!(camera = %self.camera(), sealed = finished.sealed,
            already_sealed = finished.already_sealed, left, complete = finished.complete,
            seconds = finished.seconds, rate_mib_s = finished.rate_bytes_s >> 20,
            reason = ?finished.reason, "dock: ingest finished");
        self.emit(DockEvent::Finished(Box::new(finished.clone())));
        finished
    }

    fn file_failed(&self, c: &Candidate, why: &str) {
        self.emit(DockEvent::FileFailed {
            camera: self.camera().to_owned(),
            serial: self.body.serial.clone(),
            original_name: c.name.clone(),
            reason: why.to_owned(),
        });
    }

    /// A failure reading the camera: the whole dock is gone if its directory is.
    fn source_failure(&self, dir: &Path, why: String) -> Outcome {
        if dir.is_dir() {
            Outcome::Skip(why)
        } else {
            Outcome::Stop(format!(
                "the docked camera is gone ({}): {why}",
                dir.display()
            ))
        }
    }

    fn one(
        &self,
        log: &mut CameraLog,
        dir: &Path,
        c: &Candidate,
        offset_ms: Option<i64>,
        t: &mut Tally,
    ) -> Outcome {
        let camera = self.camera();
        let file = match File::open(&c.path) {
            Ok(f) => f,
            Err(e) => return self.source_failure(dir, format!("{}: {e}", c.path.display())),
        };
        let opened = match file.metadata() {
            Ok(m) => Identity::of(&m),
            Err(e) => return self.source_failure(dir, format!("{}: {e}", c.path.display())),
        };
        // Sealed before (a crash or pull-out after the commit, or originals
        // kept by config)? Same name and size is the cheap hint; the hash decides.
        let named = match self
            .retention
            .sealed_originals_named(camera, &c.name, opened.len)
        {
            Ok(n) => n,
            Err(e) => return Outcome::Stop(format!("index: {e}")),
        };
        if !named.is_empty() {
            match copy::hash_original(&c.path, self.cancel) {
                Ok(h) => {
                    if let Some((seq, _)) = named.iter().find(|(_, s)| *s == h.original_sha256) {
                        self.watch.advanced(h.bytes);
                        return self.done(t, c, &opened, *seq, "already-sealed", h, true);
                    }
                }
                Err(CopyError::Cancelled) => return Outcome::Stop("stopped".into()),
                Err(e) => return self.source_failure(dir, e.to_string()),
            }
        }
        if let Err(why) = self.room_for(opened.len) {
            return Outcome::Stop(why);
        }
        let (seg, writer) = match log.begin_ingest(DirectWriter::new) {
            Ok(s) => s,
            Err(e) => return Outcome::Stop(format!("store: {e}")),
        };
        let abandon = |log: &mut CameraLog, seg, outcome: Outcome| {
            if let Err(e) = log.abandon_ingest(seg) {
                tracing::error!(camera = %camera, error = %e,
                    "could not remove an abandoned ingest; it is removed at the next start");
            }
            outcome
        };
        let progress = |n: u64| self.watch.advanced(n);
        let sealed = seg.path().to_owned();
        let copy = copy::seal_from(&file, opened.len, writer, &sealed, self.cancel, &progress);
        let (copied, summary) = match copy {
            Ok(c) => c,
            Err(e) => {
                let outcome = match e {
                    CopyError::Source(why) => self.source_failure(dir, why),
                    CopyError::Store(why) => Outcome::Stop(why),
                    CopyError::Cancelled => Outcome::Stop("stopped".into()),
                };
                return abandon(log, seg, outcome);
            }
        };
        if file.metadata().map(|m| Identity::of(&m)).ok() != Some(opened) {
            let why = format!("{} changed while it was read", c.name);
            return abandon(log, seg, Outcome::Skip(why));
        }
        // The same bytes under another name: sealed before, not twice.
        match self
            .retention
            .sealed_original(camera, &copied.original_sha256)
        {
            Ok(Some(seq)) => {
                let done = self.done(t, c, &opened, seq, "already-sealed", copied, true);
                return abandon(log, seg, done);
            }
            Ok(None) => {}
            Err(e) => return abandon(log, seg, Outcome::Stop(format!("index: {e}"))),
        }
        let probe = probe::probe(&c.path);
        if probe.error.is_some() && !opened.same_as(&c.path) {
            // A parser that failed because the camera went away proves nothing.
            let why = format!("{} vanished while it was probed", c.name);
            return abandon(log, seg, self.source_failure(dir, why));
        }
        let info = self.info(c, &opened, &copied, &probe, offset_ms);
        let video = info.dock.parses_as_video;
        // From here the record may be durable: never abandon, recovery decides.
        let (m, payload) = match log.commit_ingest(seg.sequence(), info, &summary) {
            Ok(r) => r,
            Err(e) => return Outcome::Stop(format!("store: {e}")),
        };
        if let Err(e) = self.retention.index_now(&m, &payload) {
            return Outcome::Stop(format!("index: {e}"));
        }
        if !video {
            tracing::warn!(camera = %camera, file = %c.name, segment = %m.segment_id,
                reason = probe.error.as_deref().unwrap_or_default(),
                "dock: the file does not parse as video; sealed as evidence and flagged");
            self.emit(DockEvent::NotVideo {
                camera: camera.to_owned(),
                serial: self.body.serial.clone(),
                segment_id: m.segment_id.clone(),
                original_name: c.name.clone(),
                reason: probe.error.clone().unwrap_or_default(),
            });
        }
        self.done(t, c, &opened, m.sequence, "sealed", copied, video)
    }

    /// Counts a file done and frees it on the camera (unless kept by config).
    #[allow(clippy::too_many_arguments)]
    fn done(
        &self,
        t: &mut Tally,
        c: &Candidate,
        opened: &Identity,
        seq: u64,
        outcome: &'static str,
        copied: copy::Copied,
        video: bool,
    ) -> Outcome {
        if outcome == "sealed" {
            t.sealed += 1;
        } else {
            t.already += 1;
        }
        t.files_done += 1;
        t.bytes_done += copied.bytes;
        let removed = !self.settings.keep_originals && self.remove_original(c, opened);
        Outcome::Done(Box::new(FileDone {
            camera: self.camera().to_owned(),
            serial: self.body.serial.clone(),
            outcome,
            segment_id: format!("{}/{}/{seq}", self.agent_id, self.camera()),
            original_name: c.name.clone(),
            original_bytes: copied.bytes,
            original_sha256: manifest::hex(&copied.original_sha256),
            parses_as_video: video,
            removed_from_camera: removed,
            files_done: t.files_done,
            files_total: t.files_total,
            bytes_done: t.bytes_done,
            bytes_total: t.bytes_total,
            rate_bytes_s: t.rate(),
        }))
    }

    /// Removes the original once its seal is durable — only if it is still
    /// the very file that was sealed.
    fn remove_original(&self, c: &Candidate, opened: &Identity) -> bool {
        if !opened.same_as(&c.path) {
            tracing::warn!(camera = %self.camera(), file = %c.name,
                "the camera's file changed after it was sealed; left on the camera");
            return false;
        }
        if let Err(e) = std::fs::remove_file(&c.path) {
            tracing::warn!(camera = %self.camera(), file = %c.name, error = %e,
                "could not remove the sealed file from the camera");
            return false;
        }
        // The camera's own file system; a failure here only means the file
        // may reappear, to be recognised as sealed at the next dock.
        if let Some(parent) = c.path.parent() {
            if let Err(e) = sargs_core::fsutil::sync_dir(parent) {
                tracing::debug!(camera = %self.camera(), error = %e, "fsync of the camera's directory");
            }
        }
        true
    }

    /// Whether the data directory has room for a sealed copy of `len` bytes
    /// above its free-space floor.
    fn room_for(&self, len: u64) -> Result<(), String> {
        let sealed = len + (len / CHUNK_SIZE as u64 + 1) * 16 + (64 << 10);
        let free = sargs_core::fsutil::free_bytes(self.data_dir)
            .map_err(|e| format!("free space of {}: {e}", self.data_dir.display()))?;
        if free < sealed.saturating_add(self.min_free_bytes) {
            return Err(format!(
                "not enough free space on {}: {} MiB free, {} MiB needed for the next file plus the {} MiB floor",
                self.data_dir.display(),
                free >> 20,
                sealed.div_ceil(1 << 20),
                self.min_free_bytes >> 20
            ));
        }
        Ok(())
    }

    fn info(
        &self,
        c: &Candidate,
        opened: &Identity,
        copied: &copy::Copied,
        probe: &Probe,
        offset_ms: Option<i64>,
    ) -> IngestInfo {
        let ingested_at = crate::clock::now();
        let (start, source) = start_of(probe, offset_ms, ingested_at, &self.body.camera.class.keep);
        let duration = chrono::Duration::milliseconds(probe.duration_ms.unwrap_or(0) as i64);
        IngestInfo {
            start,
            end: start + duration,
            container: probe.container.clone(),
            codec: probe.codec.clone(),
            width: probe.width,
            height: probe.height,
            dock: Dock {
                camera_serial: self.body.serial.clone(),
                officer_id: self.body.officer.clone(),
                original_name: c.name.clone(),
                original_bytes: copied.bytes,
                original_sha256: manifest::hex(&copied.original_sha256),
                original_modified: opened.modified.map(DateTime::<Utc>::from),
                recorded_start: probe.start,
                recorded_duration_ms: probe.duration_ms,
                start_source: source.into(),
                camera_clock_offset_ms: offset_ms,
                ingested_at,
                gateway: super::hostname(),
                parses_as_video: probe.error.is_none(),
                probe_error: probe.error.clone(),
            },
        }
    }
}

/// The record's start (see `docs/format.md`, "Body cameras"): the
/// container's start corrected by the camera's clock offset, if that puts
/// the recording before the ingest and not already past its retention
/// deadline; otherwise the ingest time minus the duration (`ingest`).
pub fn start_of(
    probe: &Probe,
    offset_ms: Option<i64>,
    ingested_at: DateTime<Utc>,
    keep: &sargs_core::policy::Period,
) -> (DateTime<Utc>, &'static str) {
    let duration = chrono::Duration::milliseconds(probe.duration_ms.unwrap_or(0) as i64);
    let fallback = (ingested_at - duration, "ingest");
    let Some(recorded) = probe.start else {
        return fallback;
    };
    let (start, source) = match offset_ms {
        Some(ms) => (
            recorded - chrono::Duration::milliseconds(ms),
            "container-corrected",
        ),
        None => (recorded, "container"),
    };
    let ends_before_ingest =
        (start + duration - ingested_at).num_milliseconds() <= FUTURE_TOLERANCE_MS;
    let still_kept = keep.add_to(start).is_some_and(|d| d > ingested_at);
    if ends_before_ingest && still_kept {
        (start, source)
    } else {
        fallback
    }
}

/// What identifies the file that was opened: it is removed only if the
/// path still names it, unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    len: u64,
    modified: Option<SystemTime>,
}

impl Identity {
    fn of(m: &std::fs::Metadata) -> Identity {
        Identity {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            modified: m.modified().ok(),
        }
    }

    fn same_as(&self, path: &PathBuf) -> bool {
        std::fs::metadata(path).is_ok_and(|m| Identity::of(&m) == *self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sargs_core::policy::{Period, PeriodUnit};

    fn probe(start: Option<DateTime<Utc>>, ms: u64) -> Probe {
        Probe {
            container: "video/mp4".into(),
            codec: "h264".into(),
            width: None,
            height: None,
            duration_ms: Some(ms),
            start,
            error: None,
        }
    }

    #[test]
    fn a_recording_starts_when_its_container_says_unless_the_camera_clock_cannot_be_right() {
        let keep = Period::new(3, PeriodUnit::Months).expect("period");
        let now = Utc::now();
        let h = |n: i64| chrono::Duration::hours(n);
        let at = now - h(5);
        assert_eq!(
            start_of(&probe(Some(at), 60_000), None, now, &keep),
            (at, "container")
        );
        // Camera 90 s ahead: its times are moved back by the offset.
        let ahead = at + chrono::Duration::seconds(90);
        assert_eq!(
            start_of(&probe(Some(ahead), 60_000), Some(90_000), now, &keep),
            (at, "container-corrected")
        );
        let fallback = (now - chrono::Duration::seconds(60), "ingest");
        // No container time; a recording that would end after the ingest;
        // one a reset clock dates before its deadline (2000-01-01).
        assert_eq!(start_of(&probe(None, 60_000), None, now, &keep), fallback);
        assert_eq!(
            start_of(&probe(Some(now + h(1)), 60_000), None, now, &keep),
            fallback
        );
        let reset = DateTime::from_timestamp(946_684_800, 0).expect("2000");
        assert_eq!(
            start_of(&probe(Some(reset), 60_000), None, now, &keep),
            fallback
        );
    }
}
