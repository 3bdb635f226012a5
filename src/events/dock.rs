//! What a dock tells HQ (`…/events`, documented in `docs/hq.md`) and the
//! log, per docked camera: counts, sizes, rates and identifiers only — the
//! officer's identifier, never a name, and nothing of the picture.

use chrono::{DateTime, Utc};
use serde::Serialize;

/// One dock event. Serialised flat into the event payload beside
/// `v`, `agent`, `event` and `at`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum DockEvent {
    /// `dock.started`: a docked camera's files are being taken off it.
    Started {
        camera: String,
        serial: String,
        officer: String,
        files_total: u64,
        bytes_total: u64,
        /// Camera clock minus gateway clock, if the camera states its clock.
        camera_clock_offset_ms: Option<i64>,
    },
    /// `dock.file`: one file done — sealed now, or recognised as sealed before.
    File(Box<FileDone>),
    /// `dock.not_video`: a file that does not parse as video, sealed all the
    /// same as evidence and flagged in its manifest.
    NotVideo {
        camera: String,
        serial: String,
        segment_id: String,
        original_name: String,
        reason: String,
    },
    /// `dock.file_failed`: a file that could not be sealed this time; it is
    /// still on the camera and is tried again at the next dock.
    FileFailed {
        camera: String,
        serial: String,
        original_name: String,
        reason: String,
    },
    /// `dock.finished`: the session ended, completely or not (`reason`).
    Finished(Box<Finished>),
    /// `dock.unknown_camera`: storage in a dock path whose serial is not in
    /// the config; nothing is taken off it.
    UnknownCamera { serial: String, path: String },
}

/// A file of a docked camera that is done.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileDone {
    pub camera: String,
    pub serial: String,
    /// `sealed` (now) or `already-sealed` (recognised by its SHA-256).
    pub outcome: &'static str,
    pub segment_id: String,
    pub original_name: String,
    pub original_bytes: u64,
    pub original_sha256: String,
    pub parses_as_video: bool,
    /// Whether the original was removed from the camera (after its seal was durable).
    pub removed_from_camera: bool,
    pub files_done: u64,
    pub files_total: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
    /// Bytes per second since the session started.
    pub rate_bytes_s: u64,
}

/// The end of a dock session.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finished {
    pub camera: String,
    pub serial: String,
    /// Files sealed in this session.
    pub sealed: u64,
    /// Files recognised as sealed before (not sealed again).
    pub already_sealed: u64,
    /// Files left on the camera for the next dock.
    pub failed: u64,
    pub files_total: u64,
    /// Bytes read off the camera.
    pub bytes: u64,
    pub seconds: f64,
    pub rate_bytes_s: u64,
    /// True when every file is sealed (and removed, unless kept by config).
    pub complete: bool,
    /// Why the session stopped early or left files behind.
    pub reason: Option<String>,
    pub started_at: DateTime<Utc>,
}

impl DockEvent {
    /// The `event` name on the wire.
    pub fn kind(&self) -> &'static str {
        match self {
            DockEvent::Started { .. } => "dock.started",
            DockEvent::File(_) => "dock.file",
            DockEvent::NotVideo { .. } => "dock.not_video",
            DockEvent::FileFailed { .. } => "dock.file_failed",
            DockEvent::Finished(_) => "dock.finished",
            DockEvent::UnknownCamera { .. } => "dock.unknown_camera",
        }
    }
}
