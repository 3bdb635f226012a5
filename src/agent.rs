//! The running agent: one store owner, one recorder thread per camera, one
//! shutdown path.
//!
//! Start order: take the data directory (lock, unclean-stop detection), load
//! or create the device key, open the retention engine, start the HQ link
//! (if configured), recover each camera's chain, then start the cameras and
//! the dock thread (`[dock] paths`, see [`crate::dock::watch`]).
//! Stop order: cancel the token, let every camera close its open segment
//! and the dock finish or drop its current file, join the threads, stop the retention thread, index what it skipped, stop
//! the link (it publishes `offline`), then mark the stop clean. A store that cannot
//! be taken or a key that cannot be read stops start-up with the reason; a
//! camera that cannot record only affects that camera.
//!
//! A disk watch thread ([`crate::diskwatch`]) starts first and stops just
//! before the link: a write or fsync the disk holds past
//! `agent.disk_stall_s` is reported to HQ from memory.
//!
//! With `[offload]`, an uploader thread
//! ([`crate::offload`]) starts after the retention engine and stops after
//! the cameras; it only reads files and the engine, so recording never
//! waits for it.
//!
//! Beside the cameras runs one retention thread: it applies commands handed
//! over through the inbox (as soon as one lands there) and sweeps every
//! `retention.sweep_interval`. It is stopped after the cameras, so every
//! segment they seal is indexed.
//!
//! Every camera loop and the retention loop beat a [`Liveness`] heartbeat,
//! which the service manager's watchdog is fed from (`crate::service`). The
//! dock thread does not: a docked camera's storage that hangs (a USB read
//! stuck in the kernel) must not make the watchdog restart the cameras'
//! recording; it stops only the dock, and its files stay on the camera.

use std::sync::Arc;
use std::thread::JoinHandle;

use tokio_util::sync::CancellationToken;

use crate::capture::{DiskFloor, Recorder};
use crate::clock::Clock;
use crate::config::Config;
use crate::events::EventSink;
use crate::hq::telemetry::{CameraStates, Telemetry, Tracking};
use crate::hq::{Link, LinkError};
use crate::liveness::{Beat, Liveness};
use crate::retention::clockguard::Now;
use crate::retention::{inbox, Retention, RetentionError};
use crate::store::{CameraLog, SealContext, Store, StoreError};
use crate::wiring::{event_sink, retention_setup};
use sargs_core::seal::sign::{DeviceKey, KeyError};

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Retention(#[from] RetentionError),
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("{0}")]
    Gstreamer(String),
    #[error("starting camera thread {camera}: {source}")]
    Thread {
        camera: String,
        source: std::io::Error,
    },
}

/// A running agent.
pub struct Agent {
    store: Store,
    cameras: Vec<(String, JoinHandle<()>)>,
    /// The dock thread (`[dock] paths`), stopped with the cameras.
    dock: Option<JoinHandle<()>>,
    retention: Arc<Retention>,
    sweeper: Option<JoinHandle<()>>,
    /// The uploader thread, if this agent offloads.
    offload: Option<JoinHandle<()>>,
    stop_offload: CancellationToken,
    link: Option<Link>,
    /// The disk watch's thread and its stop, stopped last but the link.
    diskwatch: Option<(JoinHandle<()>, CancellationToken)>,
    /// Stops the retention thread (after the cameras).
    stop_sweeper: CancellationToken,
    cancel: CancellationToken,
    liveness: Arc<Liveness>,
}

impl Agent {
    /// Starts recording every enabled camera of `config`.
    pub fn start(config: &Config) -> Result<Agent, StartError> {
        Agent::start_with(config, Clock::system())
    }

    /// [`Agent::start`] with retention on `clock` (see [`Clock`]).
    pub fn start_with(config: &Config, clock: Clock) -> Result<Agent, StartError> {
        crate::capture::init().map_err(StartError::Gstreamer)?;
        let store = Store::open(&config.agent.data_dir)?;
        let key = Arc::new(DeviceKey::load_or_create(&config.agent.signing_key)?);
        tracing::info!(agent = %config.agent.id, data_dir = %config.agent.data_dir.display(),
            device_key = %key.public_key_b64(), unclean_stop = store.unclean(), "agent starting");
        let (events, outbox) = event_sink(config)?;
        let retention = Arc::new(Retention::open(retention_setup(
            config,
            key.clone(),
            events.clone(),
        ))?);
        // Before anything writes: a stalled write is reported from memory.
        let stop_watch = CancellationToken::new();
        let diskwatch =
            crate::diskwatch::spawn(config.agent.disk_stall, events.clone(), stop_watch.clone())
                .map_err(|source| StartError::Thread {
                    camera: "diskwatch".into(),
                    source,
                })?;
        // A start that fails from here on stops the watch thread too.
        let watch_guard = stop_watch.clone().drop_guard();
        let stop_offload = CancellationToken::new();
        let offload_cameras = crate::offload::cameras(config);
        let offload = match &config.offload {
            // Also without a camera that offloads everything: HQ may ask
            // for records (an `offload` command, a hold with offload).
            Some(settings) => {
                let setup = crate::offload::Setup {
                    settings: settings.clone(),
                    agent: config.agent.id.clone(),
                    data_dir: config.agent.data_dir.clone(),
                    device_key: key.public_key(),
                    cameras: offload_cameras,
                    retention: retention.clone(),
                    events: events.clone(),
                    cancel: stop_offload.clone(),
                };
                let (handle, stats) =
                    crate::offload::spawn(setup).map_err(|source| StartError::Thread {
                        camera: "offload".into(),
                        source,
                    })?;
                Some((handle, stats))
            }
            None => None,
        };
        let offload_stats = offload.as_ref().map(|(_, s)| s.clone());
        let offload = offload.map(|(h, _)| h);
        let ctx = Arc::new(SealContext::of(config, key, Some(retention.clone())));
        // Cameras report up/down through this sink; telemetry reads the states.
        let states = Arc::new(CameraStates::default());
        let camera_events: Arc<dyn EventSink> = Arc::new(Tracking {
            states: states.clone(),
            inner: events.clone(),
        });
        // The link first: it only reads the engine and the outbox, and a
        // configuration it cannot use stops start-up before any camera runs.
        let link = match (&config.link, outbox) {
            (Some(settings), Some(outbox)) => {
                let telemetry = Telemetry::new(
                    config.agent.id.clone(),
                    config.agent.data_dir.clone(),
                    retention.clone(),
                    outbox.clone(),
                    config
                        .cameras
                        .iter()
                        .map(|c| (c.id.clone(), c.enabled))
                        .collect(),
                    states,
                    clock,
                )
                .with_offload(offload_stats);
                match Link::start(
                    settings,
                    &config.agent.id,
                    retention.clone(),
                    outbox,
                    telemetry,
                    clock,
                ) {
                    Ok(l) => Some(l),
                    // Nothing has started yet: a bad TLS file stops start-up cleanly.
                    Err(e) => return Err(e.into()),
                }
            }
            _ => None,
        };
        let cancel = CancellationToken::new();
        let liveness = Liveness::new();
        let mut logs = Vec::new();
        for cam in config.enabled_cameras() {
            let log = CameraLog::open(
                store.camera_dir(&cam.id),
                cam.clone(),
                ctx.clone(),
                store.unclean(),
            )?;
            logs.push(log);
        }
        let mut cameras = Vec::new();
        for log in logs {
            let id = log.camera().id.clone();
            let rec = Recorder::new(
                log,
                DiskFloor {
                    path: config.agent.data_dir.clone(),
                    min_free_bytes: config.agent.min_free_bytes,
                },
                config.policy.clone(),
                config.agent.id.clone(),
                config.supervision,
                cancel.clone(),
            )
            .with_events(camera_events.clone())
            .with_beat(liveness.register(format!("camera {id}")));
            let handle = std::thread::Builder::new()
                .name(format!("cam-{id}"))
                .spawn(move || rec.run())
                .map_err(|source| {
                    cancel.cancel();
                    StartError::Thread {
                        camera: id.clone(),
                        source,
                    }
                })?;
            cameras.push((id, handle));
        }
        let dock = match &config.dock {
            Some(settings) if !settings.paths.is_empty() => {
                let setup = crate::dock::watch::Setup {
                    settings: settings.clone(),
                    ctx: ctx.clone(),
                    chains: settings
                        .cameras
                        .iter()
                        .map(|b| (b.camera.id.clone(), store.camera_dir(&b.camera.id)))
                        .collect(),
                    retention: retention.clone(),
                    events: events.clone(),
                    data_dir: config.agent.data_dir.clone(),
                    min_free_bytes: config.agent.min_free_bytes,
                    unclean_stop: store.unclean(),
                    cancel: cancel.clone(),
                };
                Some(crate::dock::watch::spawn(setup).map_err(|source| {
                    cancel.cancel();
                    StartError::Thread {
                        camera: "dock".into(),
                        source,
                    }
                })?)
            }
            _ => None,
        };
        let stop_sweeper = CancellationToken::new();
        let sweeper = {
            let retention = retention.clone();
            let stop = stop_sweeper.clone();
            let data_dir = config.agent.data_dir.clone();
            let interval = config.retention.sweep_interval;
            let beat = liveness.register("retention");
            tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build()
                .and_then(|runtime| {
                    std::thread::Builder::new()
                        .name("retention".into())
                        .spawn(move || {
                            retention_loop(
                                runtime, &retention, &data_dir, interval, clock, &stop, &beat,
                            )
                        })
                })
                .map_err(|source| {
                    cancel.cancel();
                    StartError::Thread {
                        camera: "retention".into(),
                        source,
                    }
                })?
        };
        watch_guard.disarm();
        Ok(Agent {
            store,
            cameras,
            dock,
            retention,
            link,
            diskwatch: Some((diskwatch, stop_watch)),
            sweeper: Some(sweeper),
            stop_sweeper,
            offload,
            stop_offload,
            cancel,
            liveness,
        })
    }

    /// The token that stops the agent.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// The heartbeats of the camera and retention loops.
    pub fn liveness(&self) -> &Arc<Liveness> {
        &self.liveness
    }

    /// How many cameras are recording (enabled and started).
    pub fn cameras(&self) -> usize {
        self.cameras.len()
    }

    /// The retention engine (status, commands).
    pub fn retention(&self) -> &Arc<Retention> {
        &self.retention
    }

    /// Stops every camera (each closes its open segment) and marks a clean stop.
    pub fn stop(mut self) -> Result<(), StoreError> {
        self.cancel.cancel();
        for (id, handle) in self.cameras {
            if handle.join().is_err() {
                tracing::error!(camera = %id, "camera thread panicked");
            }
        }
        if let Some(h) = self.dock.take() {
            if h.join().is_err() {
                tracing::error!("dock thread panicked");
            }
        }
        self.stop_offload.cancel();
        if let Some(h) = self.offload.take() {
            if h.join().is_err() {
                tracing::error!("offload thread panicked");
            }
        }
        self.stop_sweeper.cancel();
        if let Some(h) = self.sweeper.take() {
            if h.join().is_err() {
                tracing::error!("retention thread panicked");
            }
        }
        if let Err(e) = self.retention.catch_up() {
            tracing::error!(error = %e, "indexing the last records failed; the next start does it");
        }
        if let Some((h, stop)) = self.diskwatch.take() {
            stop.cancel();
            if h.join().is_err() {
                tracing::error!("disk watch thread panicked");
            }
        }
        // Last: what the cameras and the sweeper queued has had its chance,
        // and HQ hears `offline` from the agent itself.
        if let Some(link) = self.link.take() {
            link.stop();
        }
        self.store.close()?;
        tracing::info!("agent stopped");
        Ok(())
    }
}

/// Longest wait of the retention thread between turns: it beats, reads the
/// inbox and checks whether a sweep is due at least this often.
const RETENTION_TURN: std::time::Duration = std::time::Duration::from_secs(2);
/// Shortest wait between turns (a sweep interval shorter than this, as in an
/// accelerated demo, is kept to this pace).
const RETENTION_MIN_TURN: std::time::Duration = std::time::Duration::from_millis(250);

/// The retention thread: a sweep every `interval` on `clock`, the inbox as
/// soon as a command lands in it, and a turn at least every
/// [`RETENTION_TURN`]; it stops at once when `stop` is cancelled.
fn retention_loop(
    runtime: tokio::runtime::Runtime,
    retention: &Retention,
    data_dir: &std::path::Path,
    interval: std::time::Duration,
    clock: Clock,
    stop: &CancellationToken,
    beat: &Beat,
) {
    runtime.block_on(async {
        let mut watch = inbox::Watch::new(data_dir);
        let mut next_sweep = clock.mono();
        // The last sweep's error, reported to HQ once per cause.
        let mut failing: Option<String> = None;
        while !stop.is_cancelled() {
            beat.beat();
            inbox::drain(data_dir, retention, clock.wall());
            if clock.mono() >= next_sweep {
                let now = Now {
                    wall: clock.wall(),
                    mono: clock.mono(),
                    sync: clock.sync(),
                };
                // A backlog (after a long power-off) may take a while.
                let swept = beat.busy(|| retention.sweep(now));
                let error = swept.as_ref().err().map(|e| e.to_string());
                retention.report_sweep(error.as_deref(), failing.as_deref());
                failing = error;
                match swept {
                    Ok(r) if r.expired + r.evicted > 0 => {
                        tracing::info!(expired = r.expired, evicted = r.evicted, "sweep")
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "sweep failed; retried at the next interval")
                    }
                }
                next_sweep = (next_sweep + interval).max(now.mono);
            }
            let until_sweep = clock.real(next_sweep.saturating_sub(clock.mono()));
            let wait = until_sweep.clamp(RETENTION_MIN_TURN, RETENTION_TURN);
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = watch.landed() => {}
                _ = tokio::time::sleep(wait) => watch.renew(data_dir),
            }
        }
    });
}
