//! Dock mode of `sargs run`: one thread polls the configured dock paths and
//! ingests each docked camera it knows.
//!
//! Rules:
//! - each subdirectory of a dock path is a docked camera's storage, named by
//!   its serial; a serial not in the config gets one `dock.unknown_camera`
//!   event per docking and nothing is taken off it;
//! - a camera's recordings are ingested once their listing (names, sizes,
//!   times) is the same in two scans in a row, so a file still being written
//!   onto the dock is not taken half-way;
//! - after a complete session the camera is left alone until its listing
//!   changes; after an incomplete one (pulled out, disk full) it is tried
//!   again when it is docked again, its listing changes, or after
//!   [`RETRY_AFTER`];
//! - the cameras due in one scan are ingested at once, at most
//!   [`DockSettings::workers`] of them (the cores, capped by `dock.workers`),
//!   each on its own threads over its own chain, so that docked cameras
//!   share the cores; those beyond the cap wait for the next round of the
//!   same scan;
//! - every dock thread runs at nice [`NICE`]: when a gateway records live
//!   cameras too, the kernel gives their capture and sealing the CPU first
//!   and the ingest the rest, so recording keeps real time however many
//!   cameras are docked;
//! - the stop token ends the current files (their originals stay on the
//!   cameras) and the thread.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use super::ingest::{Quiet, Session};
use super::scan;
use crate::config::DockSettings;
use crate::events::DockEvent;
use crate::events::{Event, EventSink};
use crate::retention::Retention;
use crate::store::{CameraLog, SealContext};

/// An incomplete session is retried after this long even if nothing changed.
pub const RETRY_AFTER: Duration = Duration::from_secs(60);
/// The dock threads' nice value (inherited by the threads an ingest starts).
pub const NICE: libc::c_int = 10;

/// What the dock thread needs.
pub struct Setup {
    pub settings: DockSettings,
    pub ctx: Arc<SealContext>,
    /// Chain directory of each body camera, by camera id.
    pub chains: HashMap<String, PathBuf>,
    pub retention: Arc<Retention>,
    pub events: Arc<dyn EventSink>,
    pub data_dir: PathBuf,
    pub min_free_bytes: u64,
    pub unclean_stop: bool,
    pub cancel: CancellationToken,
}

type Listing = Vec<(String, u64, Option<SystemTime>)>;

/// What the thread remembers of one docked camera while it stays docked.
#[derive(Default)]
struct Docked {
    /// The listing of the previous scan.
    last: Option<Listing>,
    /// The listing a session last started from, whether it completed, when.
    session: Option<(Listing, bool, Instant)>,
}

/// Starts the dock thread.
pub fn spawn(setup: Setup) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("dock".into())
        .spawn(move || run(setup))
}

fn run(s: Setup) {
    lower_priority();
    let mut logs: HashMap<String, CameraLog> = HashMap::new();
    // Complete what a crash interrupted in chains that exist already.
    for body in &s.settings.cameras {
        if let Some(dir) = s.chains.get(&body.camera.id).filter(|d| d.is_dir()) {
            open_log(&s, &mut logs, body, dir);
        }
    }
    let mut docked: HashMap<PathBuf, Docked> = HashMap::new();
    let mut unknown: HashSet<PathBuf> = HashSet::new();
    tracing::info!(paths = ?s.settings.paths, "dock: watching");
    while !s.cancel.is_cancelled() {
        let present = present(&s.settings);
        docked.retain(|dir, _| present.iter().any(|(d, _)| d == dir));
        unknown.retain(|dir| present.iter().any(|(d, _)| d == dir));
        let mut sessions = Vec::new();
        for (dir, serial) in present {
            if s.cancel.is_cancelled() {
                break;
            }
            let Some(body) = s.settings.by_serial(&serial) else {
                if unknown.insert(dir.clone()) {
                    tracing::warn!(%serial, dir = %dir.display(),
                        "dock: a camera the config does not know is docked; nothing is taken off it");
                    s.events
                        .emit(Event::Dock(Box::new(DockEvent::UnknownCamera {
                            serial,
                            path: dir.display().to_string(),
                        })));
                }
                continue;
            };
            let Ok(files) = scan::recordings(&dir, &s.settings) else {
                continue; // mounted but not readable yet, or just pulled out
            };
            let listing: Listing = files
                .iter()
                .map(|c| (c.name.clone(), c.len, c.modified))
                .collect();
            let state = docked.entry(dir.clone()).or_default();
            let stable = state.last.as_ref() == Some(&listing);
            state.last = Some(listing.clone());
            let due = match &state.session {
                None => true,
                Some((l, true, _)) => *l != listing,
                Some((l, false, at)) => *l != listing || at.elapsed() >= RETRY_AFTER,
            };
            if !stable || listing.is_empty() || !due {
                continue;
            }
            let Some(chain) = s.chains.get(&body.camera.id) else {
                continue;
            };
            if open_log(&s, &mut logs, body, chain).is_none() {
                continue;
            }
            sessions.push((dir, body, listing));
        }
        for batch in sessions.chunks(s.settings.workers()) {
            let mut jobs = Vec::with_capacity(batch.len());
            for (dir, body, listing) in batch {
                if let Some(log) = logs.remove(&body.camera.id) {
                    jobs.push((dir, *body, listing, log));
                }
            }
            let ended = std::thread::scope(|scope| {
                let running: Vec<_> = jobs
                    .into_iter()
                    .map(|(dir, body, listing, mut log)| {
                        let s = &s;
                        scope.spawn(move || {
                            let session = Session {
                                agent_id: &s.ctx.agent_id,
                                body,
                                settings: &s.settings,
                                retention: &s.retention,
                                events: s.events.as_ref(),
                                watch: &Quiet,
                                cancel: &s.cancel,
                                data_dir: &s.data_dir,
                                min_free_bytes: s.min_free_bytes,
                            };
                            let finished = session.ingest_dir(&mut log, dir);
                            (dir, body, listing, log, finished.complete)
                        })
                    })
                    .collect();
                // A session that panicked is logged; its camera's log is
                // opened again and its files retried at the next scan.
                running
                    .into_iter()
                    .filter_map(|h| match h.join() {
                        Ok(ended) => Some(ended),
                        Err(_) => {
                            tracing::error!(
                                "dock: an ingest session panicked; retried at the next scan"
                            );
                            None
                        }
                    })
                    .collect::<Vec<_>>()
            });
            for (dir, body, listing, log, complete) in ended {
                logs.insert(body.camera.id.clone(), log);
                let after: Option<Listing> = scan::recordings(dir, &s.settings)
                    .map(|f| {
                        f.iter()
                            .map(|c| (c.name.clone(), c.len, c.modified))
                            .collect()
                    })
                    .ok();
                let state = docked.entry(dir.to_path_buf()).or_default();
                state.last = after.clone();
                state.session = Some((
                    after.unwrap_or_else(|| listing.clone()),
                    complete,
                    Instant::now(),
                ));
            }
        }
        wait(&s.cancel, s.settings.scan_interval);
    }
    tracing::info!("dock: stopped");
}

/// The camera's chain, opened (and recovered) the first time it is needed.
fn open_log<'a>(
    s: &Setup,
    logs: &'a mut HashMap<String, CameraLog>,
    body: &crate::config::BodyCamera,
    dir: &std::path::Path,
) -> Option<&'a mut CameraLog> {
    let id = body.camera.id.clone();
    if !logs.contains_key(&id) {
        match CameraLog::open(
            dir.to_owned(),
            body.camera.clone(),
            s.ctx.clone(),
            s.unclean_stop,
        ) {
            Ok(log) => {
                logs.insert(id.clone(), log);
            }
            Err(e) => {
                tracing::error!(camera = %id, error = %e, "dock: cannot open the camera's chain");
                return None;
            }
        }
    }
    logs.get_mut(&id)
}

/// Every `(directory, serial)` in the dock paths now.
fn present(settings: &DockSettings) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for root in &settings.paths {
        let Ok(rd) = std::fs::read_dir(root) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') && e.file_type().is_ok_and(|t| t.is_dir()) {
                out.push((e.path(), name));
            }
        }
    }
    out.sort();
    out
}

/// Lowers this thread's scheduling priority to [`NICE`] (Linux: per
/// thread, inherited by the threads it starts). A refusal only means the
/// ingest competes with recording as an equal.
fn lower_priority() {
    // SAFETY: plain syscalls on this thread's own id.
    let rc = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, NICE)
    };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "dock: could not lower the ingest's priority");
    }
}

fn wait(cancel: &CancellationToken, d: Duration) {
    let until = Instant::now() + d;
    while !cancel.is_cancelled() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100).min(d));
    }
}
