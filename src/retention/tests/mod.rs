//! The engine against a real store on disk: real chains sealed by
//! `CameraLog`, real SQLite, real receipts; only time is chosen by the test.

mod clock;
mod model;
mod offload;
mod recovery;
mod resend;
mod scenarios;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::apply::Response;
use super::clockguard::Now;
use super::sweep::SweepReport;
use super::{Event, EventSink, Retention, Setup};
use crate::clock::SyncState;
use crate::config::Config;
use crate::store::{CameraLog, MediaFacts, SealContext, SegmentInfo};
use sargs_core::command::{Action, Command, Scope, Target};
use sargs_core::seal::sign::DeviceKey;

const PRESET: &str = include_str!("../../../deploy/policy/lv-jekabpils-2022.toml");
pub const AGENT: &str = "gw-t";
/// Camera 0: CCTV (30 days, no cap). Camera 1: municipal police (3 months, cap 3 years).
pub const CAMS: [&str; 2] = ["cam-a", "cam-p"];

/// Collects events.
#[derive(Default)]
pub struct Events(pub Mutex<Vec<Event>>);

impl EventSink for Events {
    fn emit(&self, e: Event) {
        crate::sync::lock(&self.0).push(e);
    }
}

impl Events {
    pub fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *crate::sync::lock(&self.0))
    }

    /// The deletion receipts among the events so far (taking all events).
    pub fn take_receipts(&self) -> Vec<sargs_core::retention::receipt::Receipt> {
        self.take()
            .into_iter()
            .filter_map(|e| match e {
                Event::SegmentDeleted(r) => Some(r.fields),
                _ => None,
            })
            .collect()
    }
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub config: Config,
    pub key: Arc<DeviceKey>,
    pub hq: DeviceKey,
    pub retention: Arc<Retention>,
    pub logs: Vec<CameraLog>,
    pub events: Arc<Events>,
    /// Capacity of the pretend file system; free = capacity - media bytes.
    pub capacity: Arc<AtomicU64>,
    /// Monotonic time as the test advances it.
    pub mono: Duration,
    /// The engine is told `[offload]` names a store (see [`Fixture::restart`]).
    pub offload_store: bool,
    last_wall: Option<DateTime<Utc>>,
    next_id: u64,
}

pub fn t0() -> DateTime<Utc> {
    // Just after "now" so that the guard never finds the clock behind
    // sealed_at; whole milliseconds, as the index keeps time.
    let t = crate::clock::now() + chrono::Duration::minutes(1);
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

/// `n` days, for deadlines in the tests.
pub fn day(n: i64) -> chrono::Duration {
    chrono::Duration::days(n)
}

fn media_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for cam in CAMS {
        if let Ok(entries) = std::fs::read_dir(dir.join("cameras").join(cam)) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().ends_with(".mp4.age") {
                    total += e.metadata().map(|m| m.len()).unwrap_or(0);
                }
            }
        }
    }
    total
}

impl Fixture {
    pub fn new() -> Fixture {
        Fixture::new_with(true)
    }

    /// `trust_unsync`: the configuration's `trust_unsynchronised_clock`.
    pub fn new_with(trust_unsync: bool) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("policy.toml"), PRESET).expect("policy");
        let hq = DeviceKey::generate().expect("hq key");
        let recipient = age::x25519::Identity::generate().to_public().to_string();
        let text = format!(
            r#"[agent]
id = "{AGENT}"
data_dir = "data"
policy = "policy.toml"
min_free_mb = 1

[seal]
recipients = ["{recipient}"]

[retention]
sweep_interval_s = 60
free_space_floor_mb = 1
trust_unsynchronised_clock = {trust_unsync}

[hq]
command_keys = ["{hq_key}"]

[[camera]]
id = "cam-a"
kind = "stationary"
purpose = "property-protection"
class = "cctv"
[camera.source]
type = "test"

[[camera]]
id = "cam-p"
kind = "vehicle"
purpose = "public-order"
class = "municipal-police"
[camera.source]
type = "test"
"#,
            hq_key = hq.public_key_b64()
        );
        let config = Config::from_str(&text, &dir.path().join("sargs.toml")).expect("config");
        let key = Arc::new(DeviceKey::generate().expect("device key"));
        let events = Arc::new(Events::default());
        let capacity = Arc::new(AtomicU64::new(u64::MAX / 2));
        let mut f = Fixture {
            retention: Arc::new(open(&config, &key, &events, &capacity, false)),
            dir,
            config,
            key,
            hq,
            logs: Vec::new(),
            events,
            capacity,
            mono: Duration::from_secs(1),
            offload_store: false,
            last_wall: None,
            next_id: 0,
        };
        f.open_logs();
        f
    }

    pub fn data_dir(&self) -> PathBuf {
        self.config.agent.data_dir.clone()
    }

    fn open_logs(&mut self) {
        let ctx = Arc::new(SealContext {
            agent_id: AGENT.into(),
            key: self.key.clone(),
            recipients: self.config.recipients.clone(),
            policy: self.config.policy.clone(),
            observer: Some(self.retention.clone()),
        });
        self.logs = self
            .config
            .cameras
            .iter()
            .map(|c| {
                CameraLog::open(
                    self.data_dir().join("cameras").join(&c.id),
                    c.clone(),
                    ctx.clone(),
                    false,
                )
                .expect("camera log")
            })
            .collect();
    }

    /// Simulates an agent restart: everything reopened from disk.
    pub fn restart(&mut self) {
        self.logs.clear();
        self.retention = Arc::new(open(
            &self.config,
            &self.key,
            &self.events,
            &self.capacity,
            self.offload_store,
        ));
        self.open_logs();
    }

    /// Seals one segment of camera `cam` over `[start, start + secs)`;
    /// returns its segment id.
    pub fn seal(&mut self, cam: usize, start: DateTime<Utc>, secs: i64) -> String {
        let log = &mut self.logs[cam];
        let mut seg = log.begin_segment(start, 0).expect("begin");
        seg.writer()
            .expect("writer")
            .write_all(&[7u8; 1000])
            .expect("write");
        let info = SegmentInfo {
            start,
            end: start + chrono::Duration::seconds(secs),
            media: MediaFacts {
                codec: "h264".into(),
                width: None,
                height: None,
                encoding: "encoded",
            },
        };
        log.commit_segment(&mut seg, &info, false).expect("commit");
        format!("{AGENT}/{}/{}", CAMS[cam], seg.sequence())
    }

    pub fn command(&mut self, action: Action, now: DateTime<Utc>) -> Command {
        self.next_id += 1;
        Command {
            id: format!("c-{}", self.next_id),
            issued_at: now,
            expires_at: now + chrono::Duration::days(7),
            target: Target::Agent(AGENT.into()),
            issuer: "test".into(),
            action,
        }
    }

    pub fn signed(&self, cmd: &Command) -> Vec<u8> {
        sargs_core::command::sign(&self.hq, cmd)
    }

    /// Signs and applies `action` at `now`.
    pub fn apply(&mut self, action: Action, now: DateTime<Utc>) -> Response {
        let cmd = self.command(action, now);
        self.retention
            .apply(&self.signed(&cmd), now)
            .expect("apply")
    }

    /// A sweep at wall time `wall`, `step` of monotonic time after the last.
    pub fn sweep_at(
        &mut self,
        wall: DateTime<Utc>,
        step: Duration,
        sync: SyncState,
    ) -> SweepReport {
        self.mono += step;
        self.retention
            .sweep(Now {
                wall,
                mono: self.mono,
                sync,
            })
            .expect("sweep")
    }

    /// A sweep with a steady synchronised clock (monotonic time follows the wall).
    pub fn sweep(&mut self, wall: DateTime<Utc>) -> SweepReport {
        let last = self.last_wall.unwrap_or(wall);
        let step = (wall - last).to_std().unwrap_or_default();
        self.last_wall = Some(wall);
        self.sweep_at(wall, step, SyncState::Synchronised)
    }

    pub fn media_exists(&self, id: &str) -> bool {
        let (cam, seq) = sargs_core::retention::index::parse_segment_id(id, AGENT).expect("id");
        self.data_dir()
            .join("cameras")
            .join(cam)
            .join(format!("{seq:010}.mp4.age"))
            .exists()
    }

    /// Chains, receipts and index agree.
    pub fn audit_ok(&self) {
        let a =
            super::audit::audit(&self.data_dir(), AGENT, &self.key.public_key()).expect("audit");
        let camera_problems: Vec<&String> = a
            .cameras
            .iter()
            .flat_map(|(_, r)| r.problems.iter())
            .collect();
        assert!(a.ok(), "audit: {:?} {:?}", a.problems, camera_problems);
    }

    pub fn range(cam: usize, from: DateTime<Utc>, to: DateTime<Utc>) -> Scope {
        Scope::Range {
            cameras: vec![CAMS[cam].into()],
            from,
            to,
        }
    }
}

fn open(
    config: &Config,
    key: &Arc<DeviceKey>,
    events: &Arc<Events>,
    capacity: &Arc<AtomicU64>,
    offload_store: bool,
) -> Retention {
    let data_dir = config.agent.data_dir.clone();
    let probe = data_dir.clone();
    let cap = capacity.clone();
    Retention::open(Setup {
        agent_id: AGENT.into(),
        data_dir,
        key: key.clone(),
        policy: config.policy.clone(),
        settings: config.retention,
        command_keys: config.command_keys.clone(),
        events: events.clone(),
        free_space: Box::new(move || {
            Ok(cap
                .load(Ordering::SeqCst)
                .saturating_sub(media_bytes(&probe)))
        }),
        offload_store,
    })
    .expect("retention opens")
}
