//! Periodic telemetry: counts and identifiers only (`docs/design.md`, "MQTT:
//! the HQ link"): CPU, memory, disk, temperature, storage per class against its limit, holds, requests,
//! outbox depth and the highest record and receipt numbers the broker has
//! acknowledged (HQ finds what a broker lost by them), clock state, and the offload queue (records and bytes
//! waiting, last success, failures). Published at QoS 0 and not queued: while HQ is
//! unreachable telemetry is dropped, and the next sample replaces it.
//!
//! Sampling runs on the link's thread, so it touches nothing that can hang:
//! the disk figure is one `statvfs` of the data directory, never a walk over
//! every mount; the store's and the outbox's figures are taken only if
//! their locks are free at that instant (a thread holding one may be
//! waiting on a stalled disk), else the previous sample's are repeated.
//! So a stalled disk never holds the link, and with it the alarm that
//! reports the stall (`crate::diskwatch`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use serde_json::{json, Value};
use sysinfo::{Components, System};

use super::outbox::Outbox;
use crate::clock::Clock;
use crate::events::{Event, EventSink};
use crate::retention::Retention;

/// Each camera's state as its last event said: `up`, `down` or `stopped`
/// (recording stopped at the disk floor), since when. Learnt from the events
/// the cameras emit ([`Tracking`]), so the cameras know nothing of telemetry.
#[derive(Default)]
pub struct CameraStates(Mutex<BTreeMap<String, (&'static str, DateTime<Utc>)>>);

impl CameraStates {
    fn note(&self, e: &Event, at: DateTime<Utc>) {
        let (camera, state) = match e {
            Event::CameraUp { camera } => (camera, "up"),
            Event::CameraDown { camera, .. } => (camera, "down"),
            Event::RecordingStopped { camera, .. } => (camera, "stopped"),
            _ => return,
        };
        let mut m = crate::sync::lock(&self.0);
        if m.get(camera).map(|(s, _)| *s) != Some(state) {
            m.insert(camera.clone(), (state, at));
        }
    }

    fn get(&self, camera: &str) -> Option<(&'static str, DateTime<Utc>)> {
        let m = crate::sync::lock(&self.0);
        m.get(camera).copied()
    }
}

/// An event sink that notes camera states on the way to `inner`.
pub struct Tracking {
    pub states: Arc<CameraStates>,
    pub inner: Arc<dyn EventSink>,
}

impl EventSink for Tracking {
    fn emit(&self, e: Event) {
        self.states.note(&e, crate::clock::now());
        self.inner.emit(e);
    }

    fn emit_all(&self, events: Vec<Event>) {
        let now = crate::clock::now();
        for e in &events {
            self.states.note(e, now);
        }
        self.inner.emit_all(events);
    }
}

/// Samples the machine and the store.
pub struct Telemetry {
    agent: String,
    data_dir: PathBuf,
    retention: Arc<Retention>,
    outbox: Arc<Outbox>,
    cameras: Vec<(String, bool)>,
    states: Arc<CameraStates>,
    clock: Clock,
    sys: Option<System>,
    offload: Option<Arc<crate::offload::Stats>>,
    /// The last `storage` and `outbox` figures, repeated while busy.
    last_storage: Value,
    last_outbox: Value,
}

impl Telemetry {
    pub fn new(
        agent: String,
        data_dir: PathBuf,
        retention: Arc<Retention>,
        outbox: Arc<Outbox>,
        cameras: Vec<(String, bool)>,
        states: Arc<CameraStates>,
        clock: Clock,
    ) -> Telemetry {
        Telemetry {
            agent,
            data_dir,
            retention,
            outbox,
            cameras,
            states,
            clock,
            sys: System::new().ok(),
            offload: None,
            last_storage: Value::Null,
            last_outbox: Value::Null,
        }
    }

    /// Telemetry also shows the uploader's queue and progress.
    pub fn with_offload(mut self, stats: Option<Arc<crate::offload::Stats>>) -> Telemetry {
        self.offload = stats;
        self
    }

    pub fn sample(&mut self) -> Value {
        let now = self.clock.wall();
        let (cpu, mem_used, mem_total) = match self.sys.as_mut() {
            Some(s) => {
                s.refresh_cpu_usage();
                s.refresh_memory();
                (
                    Some(s.global_cpu_usage()),
                    s.used_memory(),
                    s.total_memory(),
                )
            }
            None => (None, 0, 0),
        };
        // The data directory's file system only: listing every mount would
        // stat each of them, and one hung NFS or FUSE mount anywhere would
        // then block this thread, and with it the whole link.
        let disk = sargs_core::fsutil::space(&self.data_dir)
            .ok()
            .map(|s| json!({"total_bytes": s.total, "free_bytes": s.available}));
        let temperature = Components::new_with_refreshed_list().ok().and_then(|c| {
            c.iter()
                .filter_map(|c| c.temperature())
                .fold(None, |m: Option<f32>, t| Some(m.map_or(t, |m| m.max(t))))
        });
        if let Some(status) = self.retention.try_status(now) {
            self.last_storage = status
                .ok()
                .and_then(|s| serde_json::to_value(s).ok())
                .unwrap_or(Value::Null);
        }
        if let Some((depth, dropped, acknowledged)) = self.outbox.try_counts() {
            self.last_outbox =
                json!({"depth": depth, "dropped": dropped, "acknowledged": acknowledged});
        }
        let mut sample = json!({
            "v": 1,
            "agent": self.agent,
            "at": now,
            "cpu_percent": cpu,
            "memory": {"used_bytes": mem_used, "total_bytes": mem_total},
            "disk": disk,
            "temperature_c": temperature,
            "storage": self.last_storage,
            "cameras": self.cameras.iter().map(|(id, on)| self.camera(id, *on)).collect::<Vec<_>>(),
            "outbox": self.last_outbox,
            "clock": self.clock.sync(),
        });
        // Only an agent that offloads says how its queue stands.
        if let (Some(stats), Some(obj)) = (&self.offload, sample.as_object_mut()) {
            let (waiting, p) = stats.snapshot();
            obj.insert(
                "offload".into(),
                json!({
                    "queue_records": waiting.map(|w| w.records),
                    "bytes_waiting": waiting.map(|w| w.bytes),
                    "offloaded": p.offloaded,
                    "receipts_offloaded": p.receipts_offloaded,
                    "last_success": p.last_success,
                    "failures": p.failures,
                    "failures_in_a_row": p.failures_in_a_row,
                    "last_failure": p.last_failure,
                    "last_error": p.last_error,
                    "retry_in_s": p.retry_in_s,
                    "paused": p.paused,
                }),
            );
        }
        sample
    }

    /// `{"id","enabled","state","since"?}`; `state` is `disabled`, `starting`
    /// (no event yet), `up`, `down` or `stopped`.
    fn camera(&self, id: &str, enabled: bool) -> Value {
        match (enabled, self.states.get(id)) {
            (false, _) => json!({"id": id, "enabled": false, "state": "disabled"}),
            (true, None) => json!({"id": id, "enabled": true, "state": "starting"}),
            (true, Some((state, since))) => {
                json!({"id": id, "enabled": true, "state": state, "since": since})
            }
        }
    }
}
