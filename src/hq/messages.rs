//! Topics and payloads of the HQ link (`docs/design.md`, "MQTT: the HQ
//! link"). Every payload is JSON with a `v` schema version; none carries
//! image content or the names of people filmed — counts and identifiers only.
//!
//! Whatever an event says of a record (`segment.sealed`, `gap.recorded`,
//! `segment.deleted`) it says beside the record's signed envelope
//! (`"envelope"`, the object its file holds), and the status names the
//! device key that signs them, so HQ can verify every report.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::outbox::{Entry, Numbered, Outbox};
use crate::events::{Event, EventSink};

/// The topics of one agent under a prefix.
#[derive(Debug, Clone)]
pub struct Topics {
    pub status: String,
    pub telemetry: String,
    pub events: String,
    pub commands: String,
    pub responses: String,
    pub fleet_commands: String,
}

impl Topics {
    pub fn new(prefix: &str, agent: &str) -> Topics {
        let a = |t: &str| format!("{prefix}/agents/{agent}/{t}");
        Topics {
            status: a("status"),
            telemetry: a("telemetry"),
            events: a("events"),
            commands: a("commands"),
            responses: a("responses"),
            fleet_commands: format!("{prefix}/fleet/commands"),
        }
    }
}

/// The retained status: `online` (birth) or `offline` (Will, clean stop),
/// naming the device key (Base64) that signs the agent's envelopes.
pub fn status(agent: &str, device_key: &str, online: bool, at: DateTime<Utc>) -> String {
    json!({
        "v": 1,
        "agent": agent,
        "state": if online { "online" } else { "offline" },
        "at": at,
        "version": crate::VERSION,
        "device_key": device_key,
    })
    .to_string()
}

/// An event as published on `…/events`.
pub fn event(agent: &str, e: &Event, at: DateTime<Utc>) -> Value {
    let (kind, body) = match e {
        Event::SegmentSealed(s) => (
            "segment.sealed",
            json!({"segment": s.fields, "envelope": s.envelope}),
        ),
        Event::GapRecorded(g) => (
            "gap.recorded",
            json!({"gap": g.fields, "envelope": g.envelope}),
        ),
        Event::SegmentDeleted(r) => (
            "segment.deleted",
            json!({"receipt": r.fields, "envelope": r.envelope}),
        ),
        Event::HoldApplied { hold, command } => {
            ("hold.applied", json!({"hold": hold, "command_id": command}))
        }
        Event::HoldReleased { hold, command } => (
            "hold.released",
            json!({"hold": hold, "command_id": command}),
        ),
        Event::HoldCapWarning {
            hold,
            cap_at,
            segments,
        } => (
            "hold.cap_warning",
            json!({"hold": hold, "cap_at": cap_at, "segments": segments}),
        ),
        Event::DiskPressure {
            free_bytes,
            floor_bytes,
            message,
        } => (
            "disk.pressure",
            json!({"free_bytes": free_bytes, "floor_bytes": floor_bytes, "message": message}),
        ),
        Event::ClockProblem { message } => ("clock.problem", json!({"message": message})),
        Event::ClockTrusted => ("clock.trusted", json!({})),
        Event::SweepFailed { reason } => ("sweep.failed", json!({"reason": reason})),
        Event::SweepResumed => ("sweep.resumed", json!({})),
        Event::DiskStalled {
            op,
            file,
            camera,
            for_s,
        } => (
            "disk.stalled",
            json!({"op": op, "file": file, "camera": camera, "stalled_s": for_s,
                "reason": format!("{op} of {file} has not returned for {for_s} s: the disk stalls")}),
        ),
        Event::DiskResumed {
            op,
            file,
            camera,
            after_s,
        } => (
            "disk.resumed",
            json!({"op": op, "file": file, "camera": camera, "after_s": after_s}),
        ),
        Event::CommandRejected { id, code, reason } => (
            "command.rejected",
            json!({"command_id": id, "code": code, "reason": reason}),
        ),
        Event::CameraDown { camera, reason } => {
            ("camera.down", json!({"camera": camera, "reason": reason}))
        }
        Event::CameraUp { camera } => ("camera.up", json!({"camera": camera})),
        Event::RecordingStopped { camera, reason } => (
            "recording.stopped",
            json!({"camera": camera, "reason": reason}),
        ),
        Event::Dock(d) => (d.kind(), serde_json::to_value(d).unwrap_or_default()),
        Event::SegmentOffloaded(o) => ("segment.offloaded", json!({ "offload": o })),
        Event::OffloadFailed(f) => ("offload.failed", json!({ "offload": f })),
    };
    let mut v = json!({"v": 1, "agent": agent, "event": kind, "at": at});
    if let (Some(obj), Value::Object(b)) = (v.as_object_mut(), body) {
        obj.extend(b);
    }
    v
}

/// `events` as outbox messages on `topic`, stamped now, each naming the
/// record or receipt it reports.
pub fn event_entries(agent: &str, topic: &str, events: &[Event]) -> Vec<Entry> {
    let now = crate::clock::now();
    events
        .iter()
        .map(|e| Entry {
            numbered: numbered(e),
            ..Entry::new(topic, event(agent, e, now).to_string())
        })
        .collect()
}

/// The record or receipt an event reports.
fn numbered(e: &Event) -> Option<Numbered> {
    match e {
        Event::SegmentSealed(s) => Some(Numbered::Record {
            camera: s.camera_id.clone(),
            sequence: s.sequence,
        }),
        Event::GapRecorded(g) => Some(Numbered::Record {
            camera: g.camera_id.clone(),
            sequence: g.sequence,
        }),
        Event::SegmentDeleted(r) => Some(Numbered::Receipt {
            sequence: r.sequence,
        }),
        _ => None,
    }
}

/// Events go to the durable outbox (and the log); a batch the disk refuses
/// is sent from memory (`Outbox::push_batch`), so an alarm about the disk
/// still reaches HQ — a receipt itself is already durable in `receipts/`.
pub struct OutboxEvents {
    pub agent: String,
    pub topic: String,
    pub outbox: Arc<Outbox>,
}

impl EventSink for OutboxEvents {
    fn emit(&self, e: Event) {
        self.emit_all(vec![e]);
    }

    /// Events that belong together (a deletion batch's receipts) are queued
    /// in one durable write.
    fn emit_all(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let batch = event_entries(&self.agent, &self.topic, &events);
        if let Err(err) = self.outbox.push_batch(&batch) {
            tracing::error!(error = %err, events = batch.len(), "outbox: could not queue events");
        }
        crate::events::LogEvents.emit_all(events);
    }

    /// An alarm about the disk itself goes out from memory, ahead of the
    /// queue (`Outbox::push_unblocked`): its file would wait on that disk.
    fn emit_unblocked(&self, e: Event) {
        let batch = event_entries(&self.agent, &self.topic, std::slice::from_ref(&e));
        self.outbox.push_unblocked(batch);
        crate::events::LogEvents.emit(e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offloaded_record_is_reported_with_its_keys_and_digests() {
        let e = Event::SegmentOffloaded(Box::new(crate::events::Offloaded {
            segment_id: "gw/cam-a/7".into(),
            camera_id: "cam-a".into(),
            sequence: 7,
            store: "https://s3.example.lv/evidence".into(),
            manifest_key: "gw/cam-a/0000000007.json".into(),
            manifest_object_sha256: "ab".repeat(32),
            media_key: Some("gw/cam-a/0000000007.mp4.age".into()),
            ciphertext_sha256: Some("cd".repeat(32)),
            bytes: 1234,
        }));
        let v = event("gw", &e, crate::clock::now());
        assert_eq!(v["event"], "segment.offloaded");
        assert_eq!(v["agent"], "gw");
        let o = &v["offload"];
        assert_eq!(o["segment_id"], "gw/cam-a/7");
        assert_eq!(o["store"], "https://s3.example.lv/evidence");
        assert_eq!(o["media_key"], "gw/cam-a/0000000007.mp4.age");
        assert_eq!(o["ciphertext_sha256"], "cd".repeat(32));
        assert_eq!(o["bytes"], 1234);
    }
}
