//! Periodic telemetry: counts and identifiers only (design.md): CPU, memory,
//! disk, temperature, storage per class against its limit, holds, requests,
//! outbox depth, clock state. Published at QoS 0 and not queued: while HQ is
//! unreachable telemetry is dropped, and the next sample replaces it.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{json, Value};
use sysinfo::{Components, Disks, System};

use super::outbox::Outbox;
use crate::clock::Clock;
use crate::retention::Retention;

/// Samples the machine and the store.
pub struct Telemetry {
    agent: String,
    data_dir: PathBuf,
    retention: Arc<Retention>,
    outbox: Arc<Outbox>,
    cameras: Vec<(String, bool)>,
    clock: Clock,
    sys: Option<System>,
}

impl Telemetry {
    pub fn new(
        agent: String,
        data_dir: PathBuf,
        retention: Arc<Retention>,
        outbox: Arc<Outbox>,
        cameras: Vec<(String, bool)>,
        clock: Clock,
    ) -> Telemetry {
        Telemetry {
            agent,
            data_dir,
            retention,
            outbox,
            cameras,
            clock,
            sys: System::new().ok(),
        }
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
        let disk = Disks::new_with_refreshed_list().ok().and_then(|d| {
            d.iter()
                .filter(|d| self.data_dir.starts_with(d.mount_point()))
                .max_by_key(|d| d.mount_point().as_os_str().len())
                .map(|d| json!({"total_bytes": d.total_space(), "free_bytes": d.available_space()}))
        });
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
            "clock": self.clock.sync(),
        })
    }
}
