//! The raw layer: `sargs.toml` exactly as written, before any check beyond
//! TOML types. Unknown keys are rejected here (`deny_unknown_fields`);
//! defaults and every value rule are applied in `validate` and `source`.

use serde::Deserialize;

use super::{CameraKind, RtspTransport};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub agent: RawAgent,
    pub seal: RawSeal,
    pub supervision: Option<RawSupervision>,
    pub retention: Option<RawRetention>,
    pub hq: Option<RawHq>,
    pub dock: Option<RawDock>,
    pub offload: Option<super::offload::RawOffload>,
    #[serde(default)]
    pub camera: Vec<RawCamera>,
}

/// `[dock]`: body cameras offloaded at this gateway's dock.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDock {
    #[serde(default)]
    pub paths: Vec<String>,
    pub purpose: Option<String>,
    pub class: Option<String>,
    pub keep_originals: Option<bool>,
    pub scan_interval_s: Option<u64>,
    pub workers: Option<u64>,
    pub extensions: Option<Vec<String>>,
    pub clock_file: Option<String>,
    #[serde(default)]
    pub camera: Vec<RawBodyCamera>,
}

/// One `[[dock.camera]]`: a body camera known by its serial.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBodyCamera {
    pub serial: String,
    pub id: String,
    pub officer: String,
    pub purpose: Option<String>,
    pub class: Option<String>,
    pub offload: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetention {
    pub sweep_interval_s: Option<u64>,
    pub free_space_floor_mb: Option<u64>,
    pub clock_jump_s: Option<u64>,
    pub clock_settle_s: Option<u64>,
    pub trust_unsynchronised_clock: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHq {
    #[serde(default)]
    pub command_keys: Vec<String>,
    pub broker: Option<String>,
    pub prefix: Option<String>,
    pub ca_file: Option<String>,
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
    pub username: Option<String>,
    pub password_file: Option<String>,
    pub telemetry_interval_s: Option<u64>,
    pub keep_alive_s: Option<u64>,
    pub outbox_max: Option<usize>,
    pub protocol: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAgent {
    pub id: String,
    pub data_dir: String,
    pub policy: String,
    pub signing_key: Option<String>,
    pub segment_seconds: Option<u32>,
    pub min_free_mb: Option<u64>,
    pub disk_stall_s: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSeal {
    pub recipients: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSupervision {
    pub backoff_initial_ms: Option<u64>,
    pub backoff_max_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCamera {
    pub id: String,
    pub kind: CameraKind,
    pub purpose: String,
    pub class: String,
    pub enabled: Option<bool>,
    pub segment_seconds: Option<u32>,
    #[serde(default)]
    pub masks: Vec<RawMask>,
    pub offload: Option<String>,
    pub source: RawSource,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMask {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum SourceType {
    Test,
    V4l2,
    File,
    Rtsp,
}

impl SourceType {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceType::Test => "test",
            SourceType::V4l2 => "v4l2",
            SourceType::File => "file",
            SourceType::Rtsp => "rtsp",
        }
    }
}

/// One flat table for every source type, so a misplaced key gets a precise
/// "not used by type = …" error instead of a generic decoding failure.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
    #[serde(rename = "type")]
    pub kind: SourceType,
    pub pattern: Option<String>,
    pub device: Option<String>,
    pub path: Option<String>,
    pub url: Option<String>,
    pub transport: Option<RtspTransport>,
    pub latency_ms: Option<u32>,
    pub transcode: Option<bool>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub fps: Option<u32>,
    pub bitrate_kbps: Option<u32>,
}

impl RawSource {
    /// The keys that are set, by name, in file-format order.
    pub fn set_keys(&self) -> Vec<&'static str> {
        let present = [
            ("pattern", self.pattern.is_some()),
            ("device", self.device.is_some()),
            ("path", self.path.is_some()),
            ("url", self.url.is_some()),
            ("transport", self.transport.is_some()),
            ("latency_ms", self.latency_ms.is_some()),
            ("transcode", self.transcode.is_some()),
            ("width", self.width.is_some()),
            ("height", self.height.is_some()),
            ("fps", self.fps.is_some()),
            ("bitrate_kbps", self.bitrate_kbps.is_some()),
        ];
        present
            .into_iter()
            .filter(|(_, set)| *set)
            .map(|(k, _)| k)
            .collect()
    }
}
