//! Events: what HQ should hear about the agent — its store, retention,
//! cameras and dock — and where they go. The bottom of the agent's rooms:
//! every part that reports imports this module, and it imports none of them.
//!
//! An event names records by identifiers, times and hashes only, never image
//! content. The engine hands the events of one operation (a sweep, a deletion
//! batch, a command) over together, so a durable sink (the HQ link's outbox)
//! makes them durable in one write.
//!
//! An event about a record of the agent's proof — a segment or gap record of
//! a camera's chain, a deletion receipt — carries that record's signed
//! envelope exactly as its file holds it ([`Signed`]): the envelope is made
//! once, where the file is written (or read back from that file), and never
//! signed again, so HQ verifies what it is told against the device key and
//! its summary fields against the signed payload.

mod dock;

use chrono::{DateTime, Utc};

pub use dock::{DockEvent, FileDone, Finished};
use sargs_core::retention::receipt::Receipt;
use sargs_core::seal::manifest::{self, ClockFault, Manifest, RecordKind};
use sargs_core::seal::sign::Envelope;

/// Something HQ should hear about (the MQTT link forwards these; without it
/// they are logged).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A segment record is committed to its chain (sealed, signed, durable).
    SegmentSealed(Box<Signed<Sealed>>),
    /// A gap record is committed to its chain.
    GapRecorded(Box<Signed<GapRecord>>),
    /// A deletion receipt is durable (its media is removed after it).
    SegmentDeleted(Box<Signed<Receipt>>),
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
    /// The retention sweep failed (the index or the data directory could
    /// not be read or written): deletions wait. Reported once per cause.
    SweepFailed {
        reason: String,
    },
    /// The sweep succeeds again after [`Event::SweepFailed`].
    SweepResumed,
    /// A write or fsync of the data directory has not returned within the
    /// bound (`crate::diskwatch`): the disk stalls.
    DiskStalled {
        op: &'static str,
        file: String,
        camera: Option<String>,
        for_s: u64,
    },
    /// That operation returned, after `after_s`.
    DiskResumed {
        op: &'static str,
        file: String,
        camera: Option<String>,
        after_s: u64,
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
    /// A record is in the evidence store, read back and verified, and the
    /// index says so (`crate::offload`).
    SegmentOffloaded(Box<Offloaded>),
    /// Offloading failed: the store, or one record (at most one event of
    /// each kind every [`crate::offload::FAILED_EVENT_EVERY`]).
    OffloadFailed(Box<OffloadFailed>),
}

/// What HQ hears of a failed offload: where, which object, why, and how
/// long until the next attempt.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct OffloadFailed {
    /// `store` (it is down, refuses or errs: every record waits) or
    /// `record` (this record waits alone; others go on).
    pub kind: &'static str,
    /// The store: endpoint and bucket.
    pub store: String,
    /// The object the attempt was about.
    pub key: String,
    /// For a `record` failure, the record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segment_id: Option<String>,
    pub error: String,
    /// Failed attempts of this kind since the last success (or the start).
    pub failures: u64,
    /// Failures of this kind since the previous event that had none of
    /// their own.
    pub unreported: u64,
    /// Seconds until the next attempt (the back-off).
    pub retry_in_s: u64,
}

/// What HQ hears of an offloaded record: where its objects are and the
/// digests they were verified against.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Offloaded {
    pub segment_id: String,
    pub camera_id: String,
    pub sequence: u64,
    /// The store: endpoint and bucket.
    pub store: String,
    pub manifest_key: String,
    /// SHA-256 of the manifest object (the manifest file's bytes).
    pub manifest_object_sha256: String,
    /// The media object; `None` for a gap record or media already deleted.
    pub media_key: Option<String>,
    /// The ciphertext SHA-256 the manifest signs, which the object matched.
    pub ciphertext_sha256: Option<String>,
    pub bytes: u64,
}

/// What an event states of a signed record, with the record's envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct Signed<T> {
    /// The fields HQ reads at a glance (all of them in the signed payload).
    pub fields: T,
    /// The record's signed envelope, as its file holds it.
    pub envelope: Envelope,
    /// Published again by a `resend` (not news: not logged again).
    pub resent: bool,
}

impl<T> std::ops::Deref for Signed<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.fields
    }
}

impl Event {
    /// The event of a record committed to a camera's chain, from its manifest
    /// and the envelope whose payload it was read from (or signed into):
    /// `SegmentSealed` for a segment (docked recordings included),
    /// `GapRecorded` for a gap.
    pub fn committed(m: &Manifest, envelope: &Envelope) -> Option<Event> {
        let payload = envelope.payload.as_str();
        match m.record {
            RecordKind::Segment => Sealed::of(m, payload).map(|fields| {
                Event::SegmentSealed(Box::new(Signed {
                    fields,
                    envelope: envelope.clone(),
                    resent: false,
                }))
            }),
            RecordKind::Gap => GapRecord::of(m, payload).map(|fields| {
                Event::GapRecorded(Box::new(Signed {
                    fields,
                    envelope: envelope.clone(),
                    resent: false,
                }))
            }),
        }
    }

    /// The event of a durable deletion receipt and its envelope.
    pub fn deleted(receipt: Receipt, envelope: Envelope) -> Event {
        Event::SegmentDeleted(Box::new(Signed {
            fields: receipt,
            envelope,
            resent: false,
        }))
    }

    /// This event, marked as published again by a `resend`.
    pub fn resent(mut self) -> Event {
        match &mut self {
            Event::SegmentSealed(s) => s.resent = true,
            Event::GapRecorded(g) => g.resent = true,
            Event::SegmentDeleted(r) => r.resent = true,
            _ => {}
        }
        self
    }
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
    /// The manifest's `clock_fault`, when the agent cannot vouch for the
    /// record's times (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clock_fault: Option<ClockFault>,
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
            clock_fault: m.clock_fault,
        })
    }
}

/// What HQ hears of a gap record: the stretch of time and why nothing was
/// recorded.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GapRecord {
    pub segment_id: String,
    pub camera_id: String,
    pub sequence: u64,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub reason: String,
    pub class: String,
    pub delete_after: DateTime<Utc>,
    /// Of the manifest payload, as in the chain.
    pub manifest_sha256: String,
    /// As for [`Sealed`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clock_fault: Option<ClockFault>,
}

impl GapRecord {
    /// The event of a gap record (`None` for a segment record).
    pub fn of(m: &Manifest, payload: &str) -> Option<GapRecord> {
        let gap = m.gap.as_ref().filter(|_| m.record == RecordKind::Gap)?;
        Some(GapRecord {
            segment_id: m.segment_id.clone(),
            camera_id: m.camera_id.clone(),
            sequence: m.sequence,
            start: m.start,
            end: m.end,
            reason: gap.reason.clone(),
            class: m.retention.class.clone(),
            delete_after: m.retention.delete_after,
            manifest_sha256: manifest::sha256_hex(payload.as_bytes()),
            clock_fault: m.clock_fault,
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
    /// Hands over an event about the disk itself, without touching the
    /// disk or waiting on it (`crate::diskwatch`): a durable sink sends it
    /// from memory. The default, for sinks that never write, is `emit`.
    fn emit_unblocked(&self, event: Event) {
        self.emit(event);
    }
}

/// The default sink: a log line per event.
pub struct LogEvents;

impl EventSink for LogEvents {
    fn emit(&self, event: Event) {
        match event {
            // The store logs each committed record itself.
            Event::SegmentSealed(_) | Event::GapRecorded(_) => {}
            // A resend logs what it queued itself.
            Event::SegmentDeleted(r) if r.resent => {}
            Event::SegmentDeleted(r) => tracing::info!(segment = %r.segment_id,
                reason = r.reason.as_str(), receipt = r.sequence, "segment deleted"),
            Event::DiskPressure { .. }
            | Event::ClockProblem { .. }
            | Event::SweepFailed { .. }
            | Event::DiskStalled { .. }
            | Event::HoldCapWarning { .. } => {
                tracing::warn!(?event, "retention")
            }
            // The dock logs its own progress as it goes.
            Event::Dock(_) => {}
            Event::SegmentOffloaded(o) => tracing::info!(segment = %o.segment_id,
                store = %o.store, key = %o.manifest_key, "offloaded and verified"),
            Event::OffloadFailed(f) => tracing::warn!(kind = f.kind, store = %f.store,
                key = %f.key, error = %f.error, failures = f.failures,
                retry_in_s = f.retry_in_s, "offload.failed"),
            other => tracing::info!(event = ?other, "retention"),
        }
    }
}
