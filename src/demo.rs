//! `sargs demo`: a self-contained first run.
//!
//! Makes (once) a throwaway HQ age identity, a copy of the shipped Jēkabpils
//! 2022 policy, and a config with two test-source cameras — a CCTV camera
//! (purpose J-A1 17.1, 30-day class, one privacy mask) and a municipal-police
//! vehicle camera (purpose J-A1 17.2, 3-month class). Running it again reuses
//! the folder, so the chains continue. The identity is written only to the
//! demo folder (0600); a real agent never holds one.

use std::path::{Path, PathBuf};

use sargs_core::keys::ExposeSecret;

use crate::config::Config;
use sargs_core::fsutil;

/// The shipped policy preset, embedded so the demo needs no other files.
pub const POLICY_PRESET: &str = include_str!("../deploy/policy/lv-jekabpils-2022.toml");

/// Camera ids of the demo config.
pub const CCTV_CAMERA: &str = "demo-cctv";
pub const POLICE_CAMERA: &str = "demo-police-car";

/// A prepared demo folder.
pub struct DemoSetup {
    pub dir: PathBuf,
    pub config: Config,
    pub identity: PathBuf,
    /// HQ's command-signing key (throwaway, like the identity).
    pub signing_key: PathBuf,
    /// The broker the demo agent connects to (`--mqtt`).
    pub broker: Option<String>,
}

/// Why the demo could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DemoError + '_ {
    move |source| DemoError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Creates (or reuses) the demo folder and loads its config; with `broker`
/// (`mqtt://HOST:PORT`) the agent connects to it.
pub fn prepare(dir: &Path, broker: Option<&str>) -> Result<DemoSetup, DemoError> {
    fsutil::create_private_dir(dir).map_err(io(dir))?;
    let dir = dir.canonicalize().map_err(io(dir))?;
    let identity = dir.join("hq-identity.txt");
    let signing_key = dir.join("hq-signing.pk8");
    let hq = sargs_core::seal::sign::DeviceKey::load_or_create(&signing_key).map_err(|e| {
        DemoError::Io {
            path: signing_key.clone(),
            source: std::io::Error::other(e.to_string()),
        }
    })?;
    let config_path = dir.join("sargs.toml");
    if !config_path.exists() {
        let (recipient, text) = sargs_core::keys::new_identity();
        fsutil::write_atomic(&identity, text.expose_secret().as_bytes(), 0o600)
            .map_err(io(&identity))?;
        let policy = dir.join("policy.toml");
        fsutil::write_atomic(&policy, POLICY_PRESET.as_bytes(), 0o644).map_err(io(&policy))?;
        fsutil::write_atomic(&config_path, demo_config(&recipient).as_bytes(), 0o644)
            .map_err(io(&config_path))?;
    }
    // The [hq] table: HQ's command key always; the broker only with --mqtt.
    let text = std::fs::read_to_string(&config_path).map_err(io(&config_path))?;
    let mut kept: Vec<&str> = Vec::new();
    let mut in_hq = false;
    for line in text.lines() {
        if line.starts_with('[') {
            in_hq = line.trim() == "[hq]";
        }
        if !in_hq {
            kept.push(line);
        }
    }
    let mut text = kept.join("\n");
    text.push_str(&format!(
        "\n[hq]\n# HQ's command key (its secret half is hq-signing.pk8 beside this file).\ncommand_keys = [\"{}\"]\n",
        hq.public_key_b64()
    ));
    if let Some(url) = broker {
        text.push_str(&format!("broker = \"{url}\"\ntelemetry_interval_s = 10\n"));
    }
    fsutil::write_atomic(&config_path, text.as_bytes(), 0o644).map_err(io(&config_path))?;
    let config = Config::load(&config_path)?;
    Ok(DemoSetup {
        dir,
        config,
        identity,
        signing_key,
        broker: broker.map(str::to_owned),
    })
}

/// The demo's agent config, sealing to `recipient`.
pub fn demo_config(recipient: &str) -> String {
    format!(
        r#"# sargs demo configuration (made by `sargs demo`; edit freely).
[agent]
id = "demo-gateway"
data_dir = "data"
policy = "policy.toml"
segment_seconds = 10

[seal]
# HQ's public key. Its identity (secret key) is hq-identity.txt beside this file:
# in a real deployment it stays at HQ and never reaches a gateway.
recipients = ["{recipient}"]

[[camera]]
id = "{CCTV_CAMERA}"
kind = "stationary"
purpose = "property-protection"
class = "cctv"
# A privacy mask: a window of a neighbouring home is blacked out before encoding.
masks = [{{ x = 960, y = 0, width = 320, height = 180 }}]
[camera.source]
type = "test"
pattern = "smpte"
width = 1280
height = 720
fps = 25
bitrate_kbps = 1500

[[camera]]
id = "{POLICE_CAMERA}"
kind = "vehicle"
purpose = "public-order"
class = "municipal-police"
[camera.source]
type = "test"
pattern = "ball"
width = 640
height = 360
fps = 25
bitrate_kbps = 800
"#
    )
}

impl DemoSetup {
    /// A `hold.place` command, signed with the demo's HQ key as HQ would sign
    /// it, holding the CCTV camera's `[from, from + seconds)`; issued on
    /// `clock`, valid for a week of it.
    pub fn hold_command(
        &self,
        clock: &crate::clock::Clock,
        from: chrono::DateTime<chrono::Utc>,
        seconds: u64,
    ) -> Result<(String, Vec<u8>), DemoError> {
        use sargs_core::command::{Action, Command, Scope, Target};
        let hq = sargs_core::seal::sign::DeviceKey::load(&self.signing_key).map_err(|e| {
            DemoError::Io {
                path: self.signing_key.clone(),
                source: std::io::Error::other(e.to_string()),
            }
        })?;
        let issued = clock.wall();
        let stamp = from.format("%Y%m%dT%H%M%SZ");
        let hold = format!("DEMO-{stamp}");
        let seconds = i64::try_from(seconds).unwrap_or(i64::MAX);
        let cmd = Command {
            id: format!("demo-hold-{stamp}"),
            issued_at: issued,
            expires_at: issued + chrono::Duration::days(7),
            target: Target::Agent(self.config.agent.id.clone()),
            issuer: "sargs demo, acting as HQ".into(),
            action: Action::HoldPlace {
                hold: hold.clone(),
                case: "DEMO (a legal hold placed by the demo)".into(),
                scope: Scope::Range {
                    cameras: vec![CCTV_CAMERA.into()],
                    from,
                    to: from + chrono::Duration::seconds(seconds),
                },
                until: None,
                offload: false,
            },
        };
        Ok((hold, sargs_core::command::sign(&hq, &cmd)))
    }

    /// One line of the accelerated demo's progress: the demo clock and what
    /// the store holds per class.
    pub fn progress(
        &self,
        clock: &crate::clock::Clock,
        started: chrono::DateTime<chrono::Utc>,
        st: &crate::retention::status::Status,
    ) -> String {
        let days = (clock.wall() - started).num_minutes() as f64 / 1440.0;
        let classes: Vec<String> = st
            .classes
            .iter()
            .map(|c| {
                let mut s = format!("{}: {} kept", c.class, c.segments);
                if c.past_deadline > 0 {
                    s.push_str(&format!(" ({} past deadline, held)", c.past_deadline));
                }
                s
            })
            .collect();
        let deleted: u64 = st.deleted.values().sum();
        let kept = if classes.is_empty() {
            "nothing sealed yet".to_owned()
        } else {
            classes.join(", ")
        };
        format!(
            "  demo clock {} (+{days:.1} days): {kept}; {deleted} deleted with receipts",
            clock.wall().format("%Y-%m-%d %H:%M"),
        )
    }

    /// What the demo prints before it starts.
    pub fn banner(&self) -> String {
        let mut out = format!(
            "sargs demo in {dir}\n  config:   {dir}/sargs.toml\n  HQ key:   {id} (throwaway; only HQ would hold this)\n  recording {n} test cameras into {data}; press Ctrl-C to stop",
            dir = self.dir.display(),
            id = self.identity.display(),
            n = self.config.cameras.len(),
            data = self.config.agent.data_dir.display(),
        );
        if let Some(url) = &self.broker {
            let now = crate::clock::now();
            let t = |d: i64| {
                (now + chrono::Duration::hours(d))
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            };
            let common = format!(
                "--key {} --agent {} --issuer demo --broker {url}",
                self.signing_key.display(),
                self.config.agent.id
            );
            out.push_str(&format!(
                "\n\nConnected to HQ's broker {url}. From another terminal, as HQ:\n  sargsctl watch --broker {url}\n  sargsctl hold --hold DEMO-1 --case DEMO --cameras {CCTV_CAMERA} --from {} --to {} {common}\n  sargsctl release --hold DEMO-1 {common}\n  sargs status --config {}",
                t(-1),
                t(1),
                self.dir.join("sargs.toml").display()
            ));
        }
        out
    }

    /// What the demo prints after it stops: where the segments are and how to play one.
    pub fn summary(&self) -> Result<String, DemoError> {
        let mut out = String::from("\nSealed segments:\n");
        let mut example = None;
        for cam in &self.config.cameras {
            let dir = self.config.agent.data_dir.join("cameras").join(&cam.id);
            let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
                Ok(rd) => rd
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.to_string_lossy().ends_with(".mp4.age"))
                    .collect(),
                Err(_) => Vec::new(),
            };
            files.sort();
            out.push_str(&format!(
                "  {}: {} segments in {}\n",
                cam.id,
                files.len(),
                dir.display()
            ));
            if example.is_none() {
                example = files.last().cloned();
            }
        }
        if let Some(seg) = example {
            out.push_str(&format!(
                "\nPlay one back (decrypt with HQ's key, then any player):\n  age -d -i {} {} > segment.mp4 && ffplay segment.mp4\nCheck every chain:\n  sargs verify --config {}\n",
                self.identity.display(),
                seg.display(),
                self.dir.join("sargs.toml").display(),
            ));
        }
        Ok(out)
    }
}
