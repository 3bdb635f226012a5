//! Periodic telemetry: counts and identifiers only (design.md): CPU, memory,
//! disk, temperature, storage per class against its limit, holds, requests,
//! outbox depth, clock state. Published at QoS 0 and not queued: while HQ is
//! unreachable telemetry is dropped, and the next sample replaces it.
//!
//! Sampling runs on the link's thread, so it touches nothing that can hang:
//! the disk figure is one `statvfs` of the data directory, never a walk over
//! every mount.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{json, Value};
use sysinfo::{Components, System};

use super::outbox::Outbox;
use crate::retention::Retention;

/// Samples the machine and the store.
pub struct Telemetry {
    agent: String,
    data_dir: PathBuf,
    retention: Arc<Retention>,
    outbox: Arc<Outbox>,
    cameras: Vec<(String, bool)>,
    sys: Option<System>,
}

impl Telemetry {
    pub fn new(
        agent: String,
        data_dir: PathBuf,
        retention: Arc<Retention>,
        outbox: Arc<Outbox>,
        cameras: Vec<(String, bool)>,
    ) -> Telemetry {
        Telemetry {
            agent,
            data_dir,
            retention,
            outbox,
            cameras,
            sys: System::new().ok(),
        }
    }

    pub fn sample(&mut self) -> Value {
        let now = crate::clock::now();
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
        let disk = crate::fsutil::space(&self.data_dir)
            .ok()
            .map(|s| json!({"total_bytes": s.total, "free_bytes": s.available}));
        let temperature = Components::new_with_refreshed_list().ok().and_then(|c| {
            c.iter()
                .filter_map(|c| c.temperature())
                .fold(None, |m: Option<f32>, t| Some(m.map_or(t, |m| m.max(t))))
        });
        let storage = self
            .retention
            .status(now)
            .ok()
            .and_then(|s| serde_json::to_value(s).ok());
        json!({
            "v": 1,
            "agent": self.agent,
            "at": now,
            "cpu_percent": cpu,
            "memory": {"used_bytes": mem_used, "total_bytes": mem_total},
            "disk": disk,
            "temperature_c": temperature,
            "storage": storage,
            "cameras": self.cameras.iter().map(|(id, on)| json!({"id": id, "enabled": on})).collect::<Vec<_>>(),
            "outbox": {"depth": self.outbox.depth(), "dropped": self.outbox.dropped()},
            "clock": crate::clock::sync_state(),
        })
    }
}
