//! Offload: sealed records leave the gateway for the S3-compatible evidence
//! store (`[offload]`, `docs/design.md` "Evidence offload"), one uploader
//! thread beside the cameras.
//!
//! Invariants:
//! - **Only sealed bytes leave.** A record's objects are its manifest file,
//!   whose signature is checked against the device key and whose payload is
//!   the one the index holds, and its sealed media file, whose SHA-256 is
//!   checked against the ciphertext digest that manifest signs before it is
//!   sent. Nothing else is read for upload: never plaintext, never a key.
//! - **Verified before it counts.** A record is recorded in the index as
//!   offloaded (store, keys, digests) only after each of its objects was
//!   read back from the store in full (GET) and matched: the media object the
//!   signed ciphertext SHA-256, the manifest object its file's bytes. The
//!   `segment.offloaded` event goes out after that commit.
//! - **The queue loses nothing at kill -9.** The queue is the index itself:
//!   every record without an `offloads` row of a camera that offloads all it
//!   seals, or that a scope HQ asked to offload covers (an `offload` command,
//!   a hold with `offload = true`; [`sargs_core::retention::offloads`]). The
//!   index is brought up to date from the chains and the command journal at
//!   every start, and a command is journaled and committed before it is
//!   answered, so what HQ asked for survives a crash right after. A crash anywhere leaves the record queued; the
//!   next attempt finds an object already there (an S3 object appears whole
//!   or not at all), reads it back and records it without a second upload.
//!   Object keys are fixed by the record, so a record is at most one object
//!   pair in the store, however often it is tried.
//! - **Evidence is never overwritten.** An object already under a record's
//!   key with other bytes is reported and left alone; the record stays queued.
//! - **Never in the way of recording.** The uploader has its own thread and
//!   takes the retention engine's lock only for one short query or one
//!   commit, never during I/O; a store that is down or refuses is retried
//!   with a back-off that doubles from [`BACKOFF_MIN`] to [`BACKOFF_MAX`].
//!   Uploads go only when [`gate`] allows (`offload.schedule`,
//!   `offload.interfaces`), asked before each record.
//! - **Failures are seen.** Every failed attempt is counted in telemetry
//!   (failures, in a row, the last error, the back-off) and reported to HQ
//!   as `offload.failed`, naming the store, the object key and the error,
//!   at most once per kind every [`FAILED_EVENT_EVERY`] ([`failures`]).
//!
//! - **Freed only when verified.** With `[offload] local = "free"` a
//!   record's local media is deleted only after the index records its
//!   verified object, by the retention engine, with a signed receipt of
//!   reason `offloaded` naming that object; a protected record is kept.
//!
//! Object keys read like the gateway's chains: `{agent}/{camera}/{seq:010}.json`
//! (the manifest) and `{agent}/{camera}/{seq:010}.mp4.age` (the media), so a
//! listing sorted by key is each camera's chain in order.

pub mod failures;
pub mod gate;
pub mod pace;
mod receipts;
pub mod s3;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, OffloadMode, OffloadSettings};
use crate::events::{self, Event, EventSink};
use crate::retention::Retention;
pub use failures::FAILED_EVENT_EVERY;
use failures::{Kind, Limiter};
use s3::{S3Error, Store};
use sargs_core::retention::offloads::{Offloaded, Pending, Waiting};
use sargs_core::retention::receipt::StoredObject;
use sargs_core::seal::manifest::{self, Manifest};
use sargs_core::seal::sign::Envelope;

/// First wait after a failure; it doubles with each failure in a row.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest wait between attempts while the store fails.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// How often the queue is looked at while it is empty.
const IDLE: Duration = Duration::from_secs(1);
/// Records fetched from the index per turn.
const BATCH: usize = 16;

/// What the uploader needs.
pub struct Setup {
    pub settings: OffloadSettings,
    pub agent: String,
    pub data_dir: PathBuf,
    /// The device public key every manifest must be signed with.
    pub device_key: [u8; 32],
    /// The cameras (and body cameras) all of whose records go; others'
    /// go when HQ asks.
    pub cameras: Vec<String>,
    pub retention: Arc<Retention>,
    /// Where `offload.failed` goes (`segment.offloaded` goes through the
    /// retention engine with its commit).
    pub events: Arc<dyn EventSink>,
    pub cancel: CancellationToken,
}

/// The cameras of `config` that offload everything they seal.
pub fn cameras(config: &Config) -> Vec<String> {
    let body = config
        .dock
        .iter()
        .flat_map(|d| d.cameras.iter().map(|b| &b.camera));
    config
        .cameras
        .iter()
        .chain(body)
        .filter(|c| c.offload == OffloadMode::All)
        .map(|c| c.id.clone())
        .collect()
}

/// What telemetry shows of the uploader.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Progress {
    /// Records offloaded and verified since the agent started.
    pub offloaded: u64,
    /// Deletion receipts sent and verified since the agent started
    /// ([`receipts`]).
    pub receipts_offloaded: u64,
    pub last_success: Option<DateTime<Utc>>,
    /// Failed attempts since the agent started.
    pub failures: u64,
    /// Failed attempts since the last success.
    pub failures_in_a_row: u64,
    pub last_failure: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// While the store fails: seconds until the next attempt.
    pub retry_in_s: Option<u64>,
    /// Why uploads wait although the queue is not empty (outside
    /// `offload.schedule`, none of `offload.interfaces` up), if they do.
    pub paused: Option<String>,
}

/// The uploader's progress, shared with telemetry.
pub struct Stats {
    cameras: Vec<String>,
    retention: Arc<Retention>,
    progress: Mutex<Progress>,
}

impl Stats {
    /// How much waits (records, bytes of media) and the progress so far.
    pub fn snapshot(&self) -> (Option<Waiting>, Progress) {
        let waiting = self.retention.offload_waiting(&self.cameras).ok();
        (waiting, crate::sync::lock(&self.progress).clone())
    }

    /// Records why uploads wait now (`None`: they go); says so in the log
    /// when that changes between waiting and going.
    fn paused(&self, why: Option<String>) {
        let mut p = crate::sync::lock(&self.progress);
        match (&p.paused, &why) {
            (None, Some(w)) => tracing::info!(why = %w, "offload: paused"),
            (Some(_), None) => tracing::info!("offload: resumed"),
            _ => {}
        }
        p.paused = why;
    }

    /// Counts an attempt: `Ok(true)` a record, `Ok(false)` a receipt.
    fn note(&self, result: Result<bool, (&str, Option<Duration>)>) {
        let mut p = crate::sync::lock(&self.progress);
        match result {
            Ok(record) => {
                if record {
                    p.offloaded += 1;
                } else {
                    p.receipts_offloaded += 1;
                }
                p.last_success = Some(crate::clock::now());
                p.failures_in_a_row = 0;
                p.retry_in_s = None;
            }
            Err((e, store_retry)) => {
                p.failures += 1;
                p.failures_in_a_row += 1;
                p.last_failure = Some(crate::clock::now());
                p.last_error = Some(e.to_owned());
                if let Some(wait) = store_retry {
                    p.retry_in_s = Some(wait.as_secs());
                }
            }
        }
    }
}

/// One thing the uploader sends, as its failures are kept and reported.
struct Item {
    /// Its key in [`Uploader::later`].
    later: (String, u64),
    /// The object key a failure names.
    object: String,
    segment_id: Option<String>,
}

/// What the uploader does after an attempt.
enum Flow {
    /// Goes on with the next.
    Next,
    /// Starts a new turn (the store failed and was waited for).
    Wait,
    /// Stops: the agent is stopping.
    Stop,
}

/// Why one record did not go.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// The store: down, refusing, or answering with an error.
    #[error(transparent)]
    Store(#[from] S3Error),
    /// The record itself, here or in the store: retried later, alone.
    #[error("{0}")]
    Record(String),
}

/// Starts the uploader thread.
pub fn spawn(setup: Setup) -> std::io::Result<(std::thread::JoinHandle<()>, Arc<Stats>)> {
    let store = Store::new(&setup.settings)
        .map_err(std::io::Error::other)?
        .stop_on(setup.cancel.clone());
    let stats = Arc::new(Stats {
        cameras: setup.cameras.clone(),
        retention: setup.retention.clone(),
        progress: Mutex::new(Progress::default()),
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    let shared = stats.clone();
    let handle = std::thread::Builder::new()
        .name("offload".into())
        .spawn(move || {
            Uploader {
                gate: gate::Gate::new(setup.settings.when.clone()),
                store,
                setup,
                stats: shared,
                runtime,
                later: HashMap::new(),
                limiter: Limiter::default(),
            }
            .run()
        })?;
    Ok((handle, stats))
}

struct Uploader {
    gate: gate::Gate,
    store: Store,
    setup: Setup,
    stats: Arc<Stats>,
    runtime: tokio::runtime::Runtime,
    /// Records that failed by themselves, and when to try each again.
    later: HashMap<(String, u64), (Instant, Duration)>,
    limiter: Limiter,
}

impl Uploader {
    fn run(mut self) {
        tracing::info!(store = %self.store.label(), cameras = ?self.setup.cameras, "offload started");
        self.abandon_orphans();
        let mut backoff = BACKOFF_MIN;
        while !self.setup.cancel.is_cancelled() {
            let now = Instant::now();
            self.later.retain(|_, (at, _)| *at > now);
            // The receipts first: few and small, and the store's account
            // of a camera needs them ([`receipts`]).
            match self.offload_receipts(&mut backoff) {
                Flow::Next => {}
                Flow::Wait => continue,
                Flow::Stop => return,
            }
            let pending = match self
                .setup
                .retention
                .offload_pending(&self.setup.cameras, BATCH + self.later.len())
            {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, "offload: reading the queue failed");
                    self.pause(backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            let due: Vec<Pending> = pending
                .into_iter()
                .filter(|p| !self.later.contains_key(&(p.camera.clone(), p.seq)))
                .collect();
            if due.is_empty() {
                // Nothing waits (or only receipts, which said why above).
                let receipts = self.setup.retention.receipts_to_offload();
                if receipts.is_ok_and(|r| r.is_empty()) {
                    self.stats.paused(None);
                }
                self.pause(IDLE);
                continue;
            }
            for p in due {
                if self.setup.cancel.is_cancelled() {
                    return;
                }
                if !self.may_send() {
                    break;
                }
                let result = self.offload(&p);
                let item = Item {
                    later: (p.camera.clone(), p.seq),
                    object: format!("{}/{}/{:010}.json", self.setup.agent, p.camera, p.seq),
                    segment_id: Some(format!("{}/{}/{}", self.setup.agent, p.camera, p.seq)),
                };
                match self.outcome(result, item, &mut backoff) {
                    Flow::Next => {}
                    Flow::Wait => break,
                    Flow::Stop => return,
                }
            }
        }
    }

    /// Asks the [`gate`] (before every record and receipt); while it is
    /// closed, says why in telemetry and waits a moment.
    fn may_send(&self) -> bool {
        let closed = self.gate.closed();
        let open = closed.is_none();
        self.stats.paused(closed);
        if !open {
            self.pause(IDLE);
        }
        open
    }

    /// Counts, reports and schedules what one record's (or receipt's)
    /// attempt came to. A failure of the store makes everything wait (with
    /// the back-off, doubling); one of the item alone puts it aside.
    fn outcome(&mut self, result: Result<(), Failure>, item: Item, backoff: &mut Duration) -> Flow {
        match result {
            Ok(()) => {
                *backoff = BACKOFF_MIN;
                self.stats.note(Ok(item.segment_id.is_some()));
                self.limiter.succeeded();
                Flow::Next
            }
            Err(Failure::Store(_)) if self.setup.cancel.is_cancelled() => Flow::Stop,
            Err(Failure::Store(e)) => {
                tracing::warn!(error = %e, retry_in_s = backoff.as_secs(),
                    "offload: the store failed; retrying");
                let error = e.to_string();
                self.stats.note(Err((&error, Some(*backoff))));
                self.report(Kind::Store, e.key(), None, error, *backoff);
                self.pause(*backoff);
                *backoff = (*backoff * 2).min(BACKOFF_MAX);
                Flow::Wait
            }
            Err(Failure::Record(e)) => {
                let wait = self
                    .later
                    .get(&item.later)
                    .map_or(BACKOFF_MIN, |(_, w)| (*w * 2).min(BACKOFF_MAX));
                tracing::error!(object = %item.object, error = %e,
                    retry_in_s = wait.as_secs(), "offload: not offloaded");
                self.stats.note(Err((e.as_str(), None)));
                self.report(Kind::Record, item.object, item.segment_id, e, wait);
                self.later.insert(item.later, (Instant::now() + wait, wait));
                Flow::Next
            }
        }
    }

    /// Aborts the multipart uploads under way whose record has no local
    /// media any more (deleted before its upload finished): their parts
    /// would otherwise stay in the store, unseen.
    fn abandon_orphans(&self) {
        let root = self.setup.data_dir.join("offload");
        let Ok(cameras) = std::fs::read_dir(&root) else {
            return;
        };
        for cam in cameras.flatten() {
            let Ok(files) = std::fs::read_dir(cam.path()) else {
                continue;
            };
            for f in files.flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                let Some(media) = name.strip_suffix(".upload") else {
                    continue;
                };
                let local = self
                    .setup
                    .data_dir
                    .join("cameras")
                    .join(cam.file_name())
                    .join(media);
                if !local.exists() {
                    self.store.abandon(&f.path());
                }
            }
        }
    }

    /// Tells HQ of a failure, if its kind's event is due ([`failures`]).
    fn report(
        &mut self,
        kind: Kind,
        key: String,
        segment_id: Option<String>,
        error: String,
        retry: Duration,
    ) {
        if let Some(due) = self.limiter.failed(kind, Instant::now()) {
            self.setup
                .events
                .emit(Event::OffloadFailed(Box::new(events::OffloadFailed {
                    kind: kind.as_str(),
                    store: self.store.label().to_owned(),
                    key,
                    segment_id,
                    error,
                    failures: due.failures,
                    unreported: due.unreported,
                    retry_in_s: retry.as_secs(),
                })));
        }
    }

    /// Waits `d`, or less if the agent stops.
    fn pause(&self, d: Duration) {
        let cancel = self.setup.cancel.clone();
        self.runtime.block_on(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = tokio::time::sleep(d) => {}
            }
        });
    }

    /// Uploads and verifies one record's objects, then records it.
    fn offload(&self, p: &Pending) -> Result<(), Failure> {
        let s = &self.setup;
        let dir = s.data_dir.join("cameras").join(&p.camera);
        let name = format!("{:010}", p.seq);
        let manifest_path = dir.join(format!("{name}.json"));
        let bytes = std::fs::read(&manifest_path)
            .map_err(|e| Failure::Record(format!("{}: {e}", manifest_path.display())))?;
        let env = Envelope::open(&bytes, Some(&s.device_key))
            .map_err(|e| Failure::Record(format!("{}: {e}", manifest_path.display())))?;
        if manifest::sha256(env.payload.as_bytes()) != p.manifest_sha256 {
            return Err(Failure::Record(format!(
                "{}: not the manifest the index holds for this record",
                manifest_path.display()
            )));
        }
        let m: Manifest = serde_json::from_str(&env.payload)
            .map_err(|e| Failure::Record(format!("{}: {e}", manifest_path.display())))?;
        let prefix = format!("{}/{}/{name}", s.agent, p.camera);
        let media = match (&m.media, p.gap || p.deleted) {
            (Some(media), false) => {
                let want = digest(&media.ciphertext_sha256).ok_or_else(|| {
                    Failure::Record(format!(
                        "{}: media.ciphertext_sha256 is not a SHA-256",
                        manifest_path.display()
                    ))
                })?;
                let key = format!("{prefix}.mp4.age");
                let progress = s
                    .data_dir
                    .join("offload")
                    .join(&p.camera)
                    .join(format!("{name}.mp4.age.upload"));
                self.ensure(&key, &dir.join(&media.file), &want, Some(&progress))?;
                Some((key, want))
            }
            _ => None,
        };
        let manifest_key = format!("{prefix}.json");
        let manifest_sha = manifest::sha256(&bytes);
        self.ensure(&manifest_key, &manifest_path, &manifest_sha, None)?;
        let offloaded = Offloaded {
            store: self.store.label().to_owned(),
            manifest_key,
            manifest_sha256: manifest_sha,
            bytes: if media.is_some() { p.bytes } else { 0 },
            media,
            verified_ms: crate::clock::now().timestamp_millis(),
        };
        s.retention
            .mark_offloaded(&p.camera, p.seq, &offloaded)
            .map_err(|e| Failure::Record(e.to_string()))?;
        if let (true, Some((key, sha))) = (s.settings.free_local, &offloaded.media) {
            let object = StoredObject {
                store: offloaded.store.clone(),
                key: key.clone(),
                sha256: manifest::hex(sha),
            };
            // A failure leaves the local copy until its own deadline.
            if let Err(e) =
                s.retention
                    .free_offloaded(&p.camera, p.seq, &object, crate::clock::now())
            {
                tracing::error!(camera = %p.camera, sequence = p.seq, error = %e,
                    "offload: freeing the local copy failed; it stays until its deadline");
            }
        }
        Ok(())
    }

    /// Makes sure `key` holds exactly the bytes of `path`, whose SHA-256 is
    /// `want`: an object already there is read back; else the file is
    /// checked, sent (a multipart upload resuming from `progress`, if
    /// given), and read back.
    fn ensure(
        &self,
        key: &str,
        path: &std::path::Path,
        want: &[u8; 32],
        progress: Option<&std::path::Path>,
    ) -> Result<(), Failure> {
        match self.store.get_sha256(key)? {
            Some((got, _)) if got == *want => {
                if let Some(progress) = progress {
                    self.store.completed(progress);
                }
                return Ok(());
            }
            Some((got, len)) => {
                return Err(Failure::Record(format!(
                    "{key}: the store already holds other bytes under this key ({len} bytes, \
                     SHA-256 {}); evidence is never overwritten",
                    manifest::hex(&got)
                )))
            }
            None => {}
        }
        let local = sargs_core::layout::sha256_file(path)
            .map_err(|e| Failure::Record(format!("{}: {e}", path.display())))?;
        if local != *want {
            return Err(Failure::Record(format!(
                "{}: its SHA-256 is not the one its signed manifest names; not uploaded \
                 (`sargs verify` reports it)",
                path.display()
            )));
        }
        self.store
            .put_file(key, path, progress)
            .map_err(|e| match e {
                S3Error::Io { path, source } => {
                    Failure::Record(format!("{}: {source}", path.display()))
                }
                other => Failure::Store(other),
            })?;
        match self.store.get_sha256(key)? {
            Some((got, _)) if got == *want => Ok(()),
            Some((got, len)) => Err(Failure::Record(format!(
                "{key}: read back {len} bytes with SHA-256 {}, not the {} that was sent",
                manifest::hex(&got),
                manifest::hex(want)
            ))),
            None => Err(Failure::Record(format!(
                "{key}: not in the store after it was uploaded"
            ))),
        }
    }
}

/// A SHA-256 written as 64 hex digits.
fn digest(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}
