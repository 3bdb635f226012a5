//! Events: what HQ should hear about the agent — its store, retention,
//! cameras and dock — and where they go. The bottom of the agent's rooms:
//! every part that reports imports this module, and it imports none of them.
//!
//! An event names records by identifiers, times and hashes only, never image
//! content. The engine hands the events of one operation (a sweep, a deletion
//! batch, a command) over together, so a durable sink (the HQ link's outbox)
//! makes them durable in one write.

mod dock;

use chrono::{DateTime, Utc};

pub use dock::{DockEvent, FileDone, Finished};
use sargs_core::retention::receipt::Receipt;
use sargs_core::seal::manifest::{self, Manifest};

/// Something HQ should hear about (the MQTT link forwards these; without it
/// they are logged).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A segment record is committed to its chain (sealed, signed, durable).
    SegmentSealed(Box<Sealed>),
    SegmentDeleted(Box<Receipt>),
    HoldApplied {
        hold: String,
        command: String,
    },
    HoldReleased {
        hold: String,
        command: String,
    },
    HoldCapWarning {
        hold: String,
        cap_at: DateTime<Utc>,
        segments: u64,
    },
    DiskPressure {
        free_bytes: u64,
        floor_bytes: u64,
        message: String,
    },
    ClockProblem {
        message: String,
    },
    ClockTrusted,
    CommandRejected {
        id: String,
        code: String,
        reason: String,
    },
    /// A camera's video stopped (the reason from the pipeline or watchdog).
    CameraDown {
        camera: String,
        reason: String,
    },
    /// Video flows (again).
    CameraUp {
        camera: String,
    },
    /// Recording stopped for a reason other than the camera (disk floor).
    RecordingStopped {
        camera: String,
        reason: String,
    },
    /// A docked body camera's ingest: started, a file done, a file that is
    /// not video, finished, or a camera the config does not know.
    Dock(Box<DockEvent>),
}

/// What HQ hears of a sealed segment: identifiers, times and hashes only.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Sealed {
    pub segment_id: String,
    pub camera_id: String,
    pub sequence: u64,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub class: String,
    pub delete_after: DateTime<Utc>,
    /// Of the manifest payload, as in the chain.
    pub manifest_sha256: String,
    pub ciphertext_sha256: String,
    pub ciphertext_bytes: u64,
    pub truncated: bool,
}

impl Sealed {
    /// The event of a segment record (`None` for a gap record).
    pub fn of(m: &Manifest, payload: &str) -> Option<Sealed> {
        let media = m.media.as_ref()?;
        Some(Sealed {
            segment_id: m.segment_id.clone(),
            camera_id: m.camera_id.clone(),
            sequence: m.sequence,
            start: m.start,
            end: m.end,
            class: m.retention.class.clone(),
            delete_after: m.retention.delete_after,
            manifest_sha256: manifest::sha256_hex(payload.as_bytes()),
            ciphertext_sha256: media.ciphertext_sha256.clone(),
            ciphertext_bytes: media.ciphertext_bytes,
            truncated: media.truncated,
        })
    }
}

/// Where events go.
pub trait EventSink: Send + Sync {
    fn emit(&self, event: Event);
    /// Hands over events that belong together (a sweep's, a deletion
    /// batch's): a durable sink makes them durable in one write.
    fn emit_all(&self, events: Vec<Event>) {
        for e in events {
            self.emit(e);
        }
    }
}

/// The default sink: a log line per event.
pub struct LogEvents;

impl EventSink for LogEvents {
    fn emit(&self, event: Event) {
        match event {
            // The store logs each sealed record itself.
            Event::SegmentSealed(_) => {}
            Event::SegmentDeleted(r) => tracing::info!(segment = %r.segment_id,
                reason = r.reason.as_str(), receipt = r.sequence, "segment deleted"),
            Event::DiskPressure { .. }
            | Event::ClockProblem { .. }
            | Event::HoldCapWarning { .. } => {
                tracing::warn!(?event, "retention")
            }
            // The dock logs its own progress as it goes.
            Event::Dock(_) => {}
            other => tracing::info!(event = ?other, "retention"),
        }
    }
}
