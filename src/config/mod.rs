//! The agent configuration (`/etc/sargs/sargs.toml`): raw TOML → validated.
//!
//! Guarantee: a [`Config`] value is complete and consistent, so nothing
//! downstream re-checks it. Loading either returns such a value or a
//! [`ConfigError`] naming the file, the key (`camera[1].source.url`) and the
//! reason — and in that case nothing is started or changed. In particular:
//! - unknown keys anywhere are errors (often typos of a real key);
//! - relative paths (`agent.data_dir`, `agent.policy`, `agent.signing_key`,
//!   a file source's `path`) are resolved against the directory of the
//!   config file and stored absolute;
//! - the policy file is loaded and validated too, and every camera's
//!   purpose and retention class exist in it (and the purpose allows the
//!   class);
//! - at least one camera or body camera is configured, camera ids are
//!   unique across both, body-camera serials are unique, at least one
//!   HQ recipient is given and none twice;
//! - every privacy mask lies inside the frame it is burnt into, and masks are
//!   refused where no frame is decoded (a passthrough RTSP stream);
//! - video parameters, segment lengths and back-off times are in range;
//! - an `[offload]` store outside its allow-list, or a credentials file
//!   others may read, is refused ([`offload`]);
//! - a password inside an RTSP URL never appears in an error or in `Debug`
//!   output ([`redact_userinfo`]).
//!
//! Every key is documented in `docs/config.md` and in the commented example
//! `deploy/sargs.toml`.

mod dock;
mod fields;
pub mod link;
pub mod offload;
mod raw;
mod source;
#[cfg(test)]
mod tests;
mod validate;
pub mod when;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use offload::{OffloadMode, OffloadSettings};
pub use sargs_core::config::{check, error, ConfigError};
pub use sargs_core::link::TlsFiles;
pub use sargs_core::seal::manifest::MaskRect;
pub use source::redact_userinfo;

use sargs_core::policy::{Policy, Purpose, RetentionClass};

/// Where the agent looks for its configuration unless told otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/sargs/sargs.toml";

/// A validated agent configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file this was loaded from (as given).
    pub file: PathBuf,
    pub agent: AgentConfig,
    /// HQ (and escrow) keys every segment is sealed to; at least one.
    pub recipients: Vec<sargs_core::seal::Recipient>,
    pub supervision: Supervision,
    pub retention: RetentionSettings,
    /// HQ's Ed25519 command-signing public keys (`[hq] command_keys`); a
    /// command signed by any other key is refused.
    pub command_keys: Vec<[u8; 32]>,
    /// The MQTT link to HQ (`[hq] broker`), if configured.
    pub link: Option<LinkSettings>,
    /// All configured cameras, in file order (including disabled ones).
    pub cameras: Vec<CameraConfig>,
    /// Body cameras ingested at this gateway's dock (`[dock]`), if any.
    pub dock: Option<DockSettings>,
    /// The evidence store sealed records are offloaded to (`[offload]`), if any.
    pub offload: Option<OffloadSettings>,
    pub policy: Arc<Policy>,
}

/// The `[dock]` table: where docked body cameras appear and how their
/// recordings are taken off them (see [`crate::dock`]).
#[derive(Clone, Debug)]
pub struct DockSettings {
    /// Absolute directories `sargs run` watches; each subdirectory is one
    /// docked camera's storage, named by the camera's serial.
    pub paths: Vec<PathBuf>,
    /// Leave each original on the camera after it is sealed (default: remove it).
    pub keep_originals: bool,
    /// How often the dock paths are looked at.
    pub scan_interval: Duration,
    /// `dock.workers`: at most this many docked cameras are ingested at once
    /// (see [`DockSettings::workers`]); `None`: as many as there are cores.
    pub workers: Option<usize>,
    /// File extensions (lower case, without the dot) that are recordings.
    pub extensions: Vec<String>,
    /// Name of the file in which a docked camera states its clock, at the
    /// top of its storage.
    pub clock_file: String,
    pub cameras: Vec<BodyCamera>,
}

impl DockSettings {
    /// How many docked cameras are ingested at once: the cores this process
    /// may run on (`std::thread::available_parallelism`, which follows
    /// `taskset` and cgroup quotas), capped by `dock.workers`. Each ingest
    /// runs on three threads (read and hash, seal and write, read back and
    /// hash), so one camera alone already keeps two cores busy.
    pub fn workers(&self) -> usize {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        self.workers.map_or(cores, |cap| cap.min(cores)).max(1)
    }

    /// The body camera with this serial.
    pub fn by_serial(&self, serial: &str) -> Option<&BodyCamera> {
        self.cameras.iter().find(|c| c.serial == serial)
    }
}

/// One `[[dock.camera]]`: a body camera, its officer and its chain.
#[derive(Clone, Debug)]
pub struct BodyCamera {
    /// The serial the camera is known by (its directory name in a dock path).
    pub serial: String,
    /// The officer the camera is issued to (an identifier, not a name).
    pub officer: String,
    /// The camera's chain: id, `kind = body`, purpose, class; its source is the dock.
    pub camera: CameraConfig,
}

/// The `[agent]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentConfig {
    pub id: String,
    /// Absolute.
    pub data_dir: PathBuf,
    /// Absolute path of the policy file.
    pub policy_file: PathBuf,
    /// Absolute path of the device signing key (PKCS#8).
    pub signing_key: PathBuf,
    /// Default segment length.
    pub segment: Duration,
    /// Free space the data directory's file system keeps: below it a camera
    /// closes its open segment cleanly and waits (a gap record says why).
    pub min_free_bytes: u64,
    /// A write or fsync of the data directory that has not returned after
    /// this long is reported to HQ as `disk.stalled` (`crate::diskwatch`).
    pub disk_stall: Duration,
}

/// The `[supervision]` table: how a failed camera pipeline is restarted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Supervision {
    /// First delay before restarting a failed camera.
    pub backoff_initial: Duration,
    /// The delay doubles after each failure up to this.
    pub backoff_max: Duration,
}

impl Default for Supervision {
    fn default() -> Self {
        Supervision {
            backoff_initial: Duration::from_millis(1000),
            backoff_max: Duration::from_millis(60_000),
        }
    }
}

/// The `[retention]` table: how the sweeper enforces deadlines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetentionSettings {
    /// How often due segments are looked for (a segment is gone at most this
    /// long after its deadline).
    pub sweep_interval: Duration,
    /// Below this much free space, unprotected segments are deleted early,
    /// earliest deadline first. At least `agent.min_free_mb`.
    pub free_space_floor_bytes: u64,
    /// A wall-clock step larger than this (against the monotonic clock)
    /// pauses deletions until the clock is synchronised again.
    pub clock_jump: Duration,
    /// After such a step, how long the clock must stay synchronised without
    /// another step before deadline deletions resume (default the sweep
    /// interval, at least 60 s).
    pub clock_settle: Duration,
    /// Delete on deadline even while the kernel reports the clock as not
    /// synchronised. Off by default: a board without RTC may boot far in the
    /// future and must not delete everything.
    pub trust_unsynchronised_clock: bool,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        RetentionSettings {
            sweep_interval: Duration::from_secs(60),
            free_space_floor_bytes: 1024 << 20,
            clock_jump: Duration::from_secs(120),
            clock_settle: Duration::from_secs(60),
            trust_unsynchronised_clock: false,
        }
    }
}

/// The `[hq]` table's MQTT link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkSettings {
    pub host: String,
    pub port: u16,
    /// `mqtts://`: TLS with these files (CA for the server; optional client
    /// certificate and key).
    pub tls: Option<TlsFiles>,
    pub username: Option<String>,
    /// Read from `password_file` at load time.
    pub password: Option<String>,
    /// Topic prefix, default `sargs`.
    pub prefix: String,
    pub telemetry_interval: Duration,
    pub keep_alive: Duration,
    /// Most messages the durable outbox keeps while HQ is unreachable.
    pub outbox_max: usize,
    /// Which MQTT version to speak.
    pub protocol: MqttVersion,
}

/// `hq.protocol`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MqttVersion {
    /// MQTT 5, falling back to 3.1.1 for a broker that answers as a 3.1.1 broker.
    Auto,
    V5,
    V311,
}

/// One `[[camera]]`.
#[derive(Clone, Debug)]
pub struct CameraConfig {
    pub id: String,
    pub kind: CameraKind,
    pub purpose: Purpose,
    pub class: RetentionClass,
    pub enabled: bool,
    /// Target segment length (the camera's override or the agent default).
    pub segment: Duration,
    /// Privacy masks in pixels of the encoded frame; empty for a passthrough
    /// RTSP source (enforced).
    pub masks: Vec<MaskRect>,
    /// Which of its records go to the evidence store by themselves.
    pub offload: OffloadMode,
    pub source: SourceConfig,
}

/// What kind of camera (J-A1 18).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CameraKind {
    /// Fixed CCTV camera (stationary or movable on a mount).
    Stationary,
    /// Mobile camera mounted in an operational vehicle.
    Vehicle,
    /// Camera worn on staff work clothing.
    Body,
}

impl CameraKind {
    /// The name used in config and manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            CameraKind::Stationary => "stationary",
            CameraKind::Vehicle => "vehicle",
            CameraKind::Body => "body",
        }
    }
}

impl fmt::Display for CameraKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a camera's video comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum SourceConfig {
    /// GStreamer `videotestsrc` with this pattern nick.
    Test { pattern: String, video: VideoParams },
    /// A V4L2 device (USB/CSI camera), encoded by the agent.
    V4l2 { device: PathBuf, video: VideoParams },
    /// A media file (absolute path), decoded, masked, re-encoded, looped.
    File { path: PathBuf, video: VideoParams },
    /// A body camera's recordings, ingested from its storage when docked.
    Dock { serial: String },
    /// An RTSP camera. `transcode: None` records the camera's own stream
    /// as sent (no masks possible); `Some` decodes, masks and re-encodes.
    Rtsp {
        /// May contain userinfo (`user:password@`); never log it as is —
        /// use [`SourceConfig::display_url`] or [`redact_userinfo`].
        url: String,
        transport: RtspTransport,
        latency_ms: u32,
        transcode: Option<VideoParams>,
    },
}

impl SourceConfig {
    /// `test`, `v4l2`, `file` or `rtsp`.
    pub fn type_str(&self) -> &'static str {
        match self {
            SourceConfig::Test { .. } => "test",
            SourceConfig::V4l2 { .. } => "v4l2",
            SourceConfig::File { .. } => "file",
            SourceConfig::Rtsp { .. } => "rtsp",
            SourceConfig::Dock { .. } => "dock",
        }
    }

    /// The parameters the agent encodes with, or `None` for a passthrough
    /// RTSP stream.
    pub fn video(&self) -> Option<&VideoParams> {
        match self {
            SourceConfig::Test { video, .. }
            | SourceConfig::V4l2 { video, .. }
            | SourceConfig::File { video, .. } => Some(video),
            SourceConfig::Rtsp { transcode, .. } => transcode.as_ref(),
            SourceConfig::Dock { .. } => None,
        }
    }

    /// A loggable description: the device, file or URL with any password removed.
    pub fn display_url(&self) -> String {
        match self {
            SourceConfig::Test { pattern, .. } => format!("videotestsrc pattern={pattern}"),
            SourceConfig::V4l2 { device, .. } => device.display().to_string(),
            SourceConfig::File { path, .. } => path.display().to_string(),
            SourceConfig::Rtsp { url, .. } => redact_userinfo(url),
            SourceConfig::Dock { serial } => format!("dock, serial {serial}"),
        }
    }
}

impl fmt::Debug for SourceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceConfig::Test { pattern, video } => f
                .debug_struct("Test")
                .field("pattern", pattern)
                .field("video", video)
                .finish(),
            SourceConfig::V4l2 { device, video } => f
                .debug_struct("V4l2")
                .field("device", device)
                .field("video", video)
                .finish(),
            SourceConfig::File { path, video } => f
                .debug_struct("File")
                .field("path", path)
                .field("video", video)
                .finish(),
            SourceConfig::Dock { serial } => {
                f.debug_struct("Dock").field("serial", serial).finish()
            }
            SourceConfig::Rtsp {
                url,
                transport,
                latency_ms,
                transcode,
            } => f
                .debug_struct("Rtsp")
                .field("url", &redact_userinfo(url))
                .field("transport", transport)
                .field("latency_ms", latency_ms)
                .field("transcode", transcode)
                .finish(),
        }
    }
}

/// Encoder parameters: output frame size, frame rate and H.264 bitrate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct VideoParams {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub bitrate_kbps: u32,
}

impl Default for VideoParams {
    fn default() -> Self {
        VideoParams {
            width: 1280,
            height: 720,
            fps: 25,
            bitrate_kbps: 2000,
        }
    }
}

/// RTSP lower transport.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RtspTransport {
    /// Let the client negotiate (UDP first, then TCP).
    #[default]
    Auto,
    /// RTP interleaved over the RTSP TCP connection (firewall/NAT friendly).
    Tcp,
    /// RTP over UDP.
    Udp,
}

impl RtspTransport {
    pub fn as_str(self) -> &'static str {
        match self {
            RtspTransport::Auto => "auto",
            RtspTransport::Tcp => "tcp",
            RtspTransport::Udp => "udp",
        }
    }
}

impl Config {
    /// Reads and validates `path` and the policy file it names.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = error::read_file(path)?;
        Config::from_str(&text, path)
    }

    /// Validates config text as if read from `file`: errors name `file`,
    /// and relative paths (including the policy file, which is read) resolve
    /// against `file`'s directory.
    pub fn from_str(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let raw: raw::RawConfig = error::decode(text, file)?;
        validate::build(raw, file)
    }

    /// The camera with this id.
    pub fn camera(&self, id: &str) -> Option<&CameraConfig> {
        self.cameras.iter().find(|c| c.id == id)
    }

    /// The body camera (`[[dock.camera]]`) with this id.
    pub fn body_camera(&self, id: &str) -> Option<&BodyCamera> {
        self.dock
            .as_ref()
            .and_then(|d| d.cameras.iter().find(|c| c.camera.id == id))
    }

    /// Cameras with `enabled = true`, in file order.
    pub fn enabled_cameras(&self) -> impl Iterator<Item = &CameraConfig> {
        self.cameras.iter().filter(|c| c.enabled)
    }
}
