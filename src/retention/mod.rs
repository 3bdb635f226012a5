//! Retention, legal holds and data-subject requests, enforced on the edge.
//!
//! One engine per store ([`Retention`]) owns the index, the receipt chain and
//! the command journal; every change goes through its lock, so there is one
//! writer. The guarantees it keeps (`docs/design.md`, guarantees 2–4):
//! - **Retention is a maximum**: a segment is deleted no later than its
//!   deadline plus one sweep interval, unless protected ([`rules`]) or the
//!   clock cannot be trusted ([`clockguard`]) — then deletions wait and the
//!   reason is reported, never a mass deletion.
//! - **Holds override**: nothing deletes a protected segment — not the
//!   sweeper, not disk pressure, not an erasure. [`rules::Protections::protector`]
//!   is the one definition of "protected".
//! - **Durable before acknowledged**: a command is journaled and committed to
//!   the index before [`Retention::apply`] returns its response.
//! - **Provable**: a media file is removed only after its signed, chained
//!   receipt is durable ([`receipt`]); the order of one deletion batch is
//!   receipts (fsync) → unlink media (directory fsync) → index commit. A crash
//!   anywhere in it is completed at the next start from the receipts.
//!
//! The segment's manifest stays in its camera chain after deletion (it holds
//! no image content): the chain stays verifiable, and chain + receipts show
//! for any time range whether a segment was recorded, deleted and why.

pub mod apply;
pub mod audit;
pub mod clockguard;
mod delete;
mod error;
pub mod inbox;
pub mod journal;
mod offloads;
mod originals;
pub mod resend;
pub mod status;
pub mod sweep;

use sargs_core::layout::INDEX_FILE;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};

use crate::config::RetentionSettings;
use crate::events::{Event, EventSink};
use clockguard::ClockGuard;
use journal::Journal;
use sargs_core::policy::Policy;
use sargs_core::retention::index::{Index, Row, Writer};
use sargs_core::retention::receipt::{Receipt, ReceiptHead, ReceiptLog};
use sargs_core::seal::manifest::{self, Manifest, RecordKind};
use sargs_core::seal::sign::{DeviceKey, Envelope};

pub use error::{OsNote, RetentionError};

/// How the engine reads free space (the real file system, or a test's).
pub type FreeSpace = Box<dyn Fn() -> std::io::Result<u64> + Send>;

/// What the engine needs from the agent.
pub struct Setup {
    pub agent_id: String,
    pub data_dir: PathBuf,
    pub key: Arc<DeviceKey>,
    pub policy: Arc<Policy>,
    pub settings: RetentionSettings,
    pub command_keys: Vec<[u8; 32]>,
    pub events: Arc<dyn EventSink>,
    pub free_space: FreeSpace,
    /// `[offload]` names an evidence store: `offload` commands and holds
    /// with `offload = true` are accepted only then.
    pub offload_store: bool,
}

/// The engine. Cheap to share (`Arc`); every method takes the one lock.
///
/// Events an operation causes are collected while it runs and handed to the
/// sink together once it is done, outside the lock — except deletion
/// receipts, which reach the sink before the media goes (see [`Engine::delete`]).
pub struct Retention {
    inner: Mutex<Engine>,
    events: Arc<dyn EventSink>,
    /// The device public key every manifest and receipt is signed with (Base64).
    device_key: String,
}

pub(crate) struct Engine {
    agent: String,
    data_dir: PathBuf,
    index_path: PathBuf,
    index: Index,
    receipts: ReceiptLog,
    receipt_head: ReceiptHead,
    journal: Journal,
    journal_head: u64,
    key: Arc<DeviceKey>,
    policy: Arc<Policy>,
    settings: RetentionSettings,
    trust: sargs_core::command::Trust,
    guard: ClockGuard,
    events: Arc<dyn EventSink>,
    /// Events of the operation under way, handed over when it ends.
    pending: Vec<Event>,
    free_space: FreeSpace,
    pub(crate) offload_store: bool,
    /// The last sweep's clock verdict and pressure state, for status.
    pub(crate) paused: Option<String>,
    pub(crate) pressure: Option<String>,
    pub(crate) last_sweep: Option<DateTime<Utc>>,
    /// Wall time of the last sweep that trusted the clock, and when that was
    /// on the monotonic clock.
    pub(crate) last_trusted: Option<(DateTime<Utc>, std::time::Instant)>,
}

impl Retention {
    /// Opens the index (creating it), then brings it up to date with the disk:
    /// completes deletions whose receipts exist, re-applies journal entries the
    /// index has not seen, and indexes records sealed since (chain heads).
    pub fn open(setup: Setup) -> Result<Retention, RetentionError> {
        let index_path = setup.data_dir.join(INDEX_FILE);
        Retention::open_at(setup, index_path)
    }

    /// Rebuilds the index from the files alone — chains, receipts, journal —
    /// into a new database that replaces the old one only when complete.
    /// The store must be locked (agent stopped).
    pub fn reindex(setup: Setup) -> Result<status::Status, RetentionError> {
        let data_dir = setup.data_dir.clone();
        let live = data_dir.join(INDEX_FILE);
        let fresh = data_dir.join(format!("{INDEX_FILE}.rebuild"));
        let remove = |p: &Path| match std::fs::remove_file(p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(RetentionError::Io {
                path: p.to_owned(),
                source: e,
            }),
            _ => Ok(()),
        };
        let sidecars = |p: &Path| -> [PathBuf; 3] {
            let s = p.display().to_string();
            [
                p.to_owned(),
                format!("{s}-wal").into(),
                format!("{s}-shm").into(),
            ]
        };
        for p in sidecars(&fresh) {
            remove(&p)?;
        }
        let status = {
            let engine = Retention::open_at(setup, fresh.clone())?;
            let now = crate::clock::now();
            engine.status(now)?
        };
        // The old database's WAL must not be applied to the new one.
        for p in &sidecars(&live)[1..] {
            remove(p)?;
        }
        std::fs::rename(&fresh, &live).map_err(|source| RetentionError::Io {
            path: live.clone(),
            source,
        })?;
        sargs_core::fsutil::sync_dir(&data_dir).map_err(|source| RetentionError::Io {
            path: data_dir,
            source,
        })?;
        Ok(status)
    }

    fn open_at(setup: Setup, index_path: PathBuf) -> Result<Retention, RetentionError> {
        sargs_core::fsutil::create_private_dir(&setup.data_dir).map_err(|source| {
            RetentionError::Io {
                path: setup.data_dir.clone(),
                source,
            }
        })?;
        let index = Index::open(&index_path)
            .map_err(|source| RetentionError::index(&index_path, None, source))?;
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| RetentionError::Io { path, source }
        };
        let receipts = ReceiptLog::open(&setup.data_dir).map_err(io(&setup.data_dir))?;
        let journal = Journal::open(&setup.data_dir).map_err(io(&setup.data_dir))?;
        let device_key = setup.key.public_key_b64();
        let mut engine = Engine {
            agent: setup.agent_id,
            data_dir: setup.data_dir,
            index_path,
            index,
            receipts,
            receipt_head: ReceiptHead::genesis(),
            journal,
            journal_head: 0,
            key: setup.key,
            policy: setup.policy,
            guard: ClockGuard::new(
                setup.settings.clock_jump,
                setup.settings.clock_settle,
                setup.settings.trust_unsynchronised_clock,
            ),
            settings: setup.settings,
            trust: sargs_core::command::Trust::new(setup.command_keys),
            events: setup.events.clone(),
            pending: Vec::new(),
            free_space: setup.free_space,
            offload_store: setup.offload_store,
            paused: None,
            pressure: None,
            last_sweep: None,
            last_trusted: None,
        };
        engine.recover()?;
        let pending = std::mem::take(&mut engine.pending);
        setup.events.emit_all(pending);
        Ok(Retention {
            device_key,
            inner: Mutex::new(engine),
            events: setup.events,
        })
    }

    /// Runs `op` on the engine, then hands the events it caused to the sink
    /// (also when it failed: they describe what was done before the failure).
    pub(crate) fn run<T>(&self, op: impl FnOnce(&mut Engine) -> T) -> T {
        let (out, events) = self.run_collecting(op);
        self.events.emit_all(events);
        out
    }

    /// [`Retention::run`], returning the events instead of emitting them.
    pub(crate) fn run_collecting<T>(&self, op: impl FnOnce(&mut Engine) -> T) -> (T, Vec<Event>) {
        let mut e = self.lock();
        let out = op(&mut e);
        let events = std::mem::take(&mut e.pending);
        (out, events)
    }

    /// Indexes every record sealed since the index last saw its camera (the
    /// indexer skips a busy engine; the agent calls this at a clean stop).
    pub fn catch_up(&self) -> Result<(), RetentionError> {
        self.run(|e| e.index_chains())
    }

    /// The device public key (standard Base64, as in every envelope's `key`).
    pub fn device_key(&self) -> &str {
        &self.device_key
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Engine> {
        // A panic while holding the lock leaves the database consistent
        // (transactions roll back): see `crate::sync`.
        crate::sync::lock(&self.inner)
    }
}

/// Reports each committed record to HQ (`segment.sealed`, `gap.recorded`,
/// with the envelope the store wrote) and indexes each
/// record without ever making a camera wait: while the engine is busy (a long
/// sweep, another camera's record), the record is left to the catch-up every
/// sweep starts with; a failure is logged and repaired the same way. The
/// catch-up reads each chain onwards from the camera's newest indexed record,
/// so a record is indexed here only right after its predecessor; after a
/// skipped one the chain is caught up instead, this record included — a record
/// once skipped is never left behind a newer one. The event goes out as the
/// record is committed; a crash between the two leaves the chain, not the
/// events, as the record of it.
impl Retention {
    /// Reports a change of the sweep's outcome to HQ: `failed` with the
    /// error (once per cause, not at every retry), or resumed.
    pub fn report_sweep(&self, failed: Option<&str>, before: Option<&str>) {
        match (failed, before) {
            (Some(now), prev) if prev != Some(now) => self.events.emit(Event::SweepFailed {
                reason: now.to_owned(),
            }),
            (None, Some(_)) => self.events.emit(Event::SweepResumed),
            _ => {}
        }
    }
}

impl crate::store::SealObserver for Retention {
    fn sealed(&self, manifest: &Manifest, envelope: &Envelope) {
        let payload = envelope.payload.as_str();
        if let Some(e) = Event::committed(manifest, envelope) {
            self.events.emit(e);
        }
        let Some(mut engine) = crate::sync::try_lock(&self.inner) else {
            tracing::debug!(camera = %manifest.camera_id, sequence = manifest.sequence,
                "engine busy; the record is indexed at the next sweep");
            return;
        };
        let indexed = match engine.index_manifest(manifest, payload) {
            // An earlier record was skipped while the engine was busy: index
            // the camera's chain up to here now, this record included.
            Ok(false) => engine.index_camera(&manifest.camera_id),
            other => other.map(|_| ()),
        };
        if let Err(e) = indexed {
            tracing::error!(camera = %manifest.camera_id, sequence = manifest.sequence, error = %e,
                "could not index a sealed record; it is indexed at the next sweep");
        }
    }
}

impl Engine {
    pub(crate) fn db_err(&self) -> impl FnOnce(rusqlite::Error) -> RetentionError + '_ {
        move |source| RetentionError::index(&self.index_path, Some(self.index.conn()), source)
    }

    /// Runs `f` in one committed transaction.
    pub(crate) fn write<T>(
        &mut self,
        f: impl FnOnce(&Writer<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, RetentionError> {
        let done = self.index.tx().and_then(|tx| {
            let out = f(&Writer { tx: &tx })?;
            let _op = crate::diskwatch::begin("commit", &self.index_path, None);
            tx.commit().map(|()| out)
        });
        // The transaction is over (committed or rolled back): the
        // connection says what the OS said of a failure.
        done.map_err(self.db_err())
    }

    pub(crate) fn camera_dir(&self, camera: &str) -> PathBuf {
        self.data_dir.join("cameras").join(camera)
    }

    pub(crate) fn row_from_manifest(&self, m: &Manifest, payload: &str) -> Row {
        let payload_sha = manifest::sha256(payload.as_bytes());
        let class = self.policy.class(&m.retention.class);
        // A clock-faulted record's cap is pending with its deadline: counted
        // from its stated start (1970, say) it would be long past.
        let cap_at = match m.clock_fault {
            Some(_) => class
                .and_then(|c| c.hold_cap)
                .map(|_| sweep::pending_deadline()),
            None => class.and_then(|c| c.hold_limit(m.start)),
        };
        let (bytes, cipher, truncated) = match &m.media {
            Some(media) => (
                media.ciphertext_bytes,
                manifest::unhex32(&media.ciphertext_sha256),
                media.truncated,
            ),
            None => (0, None, false),
        };
        Row {
            camera: m.camera_id.clone(),
            seq: m.sequence,
            gap: m.record == RecordKind::Gap,
            start: m.start,
            end: m.end,
            sealed_at: m.sealed_at,
            class: m.retention.class.clone(),
            // A record whose times the agent could not vouch for keeps the
            // deadline it states, but is deleted by one counted from the
            // first trusted sweep that sees it (`sweep::rebase_pending`).
            delete_after: if m.clock_fault.is_some() {
                sweep::pending_deadline()
            } else {
                m.retention.delete_after
            },
            cap_at,
            bytes,
            manifest_sha256: payload_sha,
            ciphertext_sha256: cipher,
            truncated,
            deleted: None,
        }
    }

    /// Brings the index up to date with the files (see [`Retention::open`]):
    /// records first (a receipt or a journaled erasure refers to them), then
    /// receipts past the index's head, then journal entries past its head.
    fn recover(&mut self) -> Result<(), RetentionError> {
        self.index_chains()?;
        let head_seq: u64 = self
            .index
            .meta("receipt_head")
            .map_err(self.db_err())?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let head_sha = self.index.meta("receipt_sha256").map_err(self.db_err())?;
        self.receipt_head = ReceiptHead {
            sequence: head_seq,
            sha256: head_sha.unwrap_or_else(|| ReceiptHead::genesis().sha256),
        };
        let pubkey = self.key.public_key();
        let mut pending = Vec::new();
        let mut seq = head_seq + 1;
        while let Some((r, env)) = self
            .receipts
            .read_signed(seq, &pubkey)
            .map_err(RetentionError::Corrupt)?
        {
            pending.push((r, env));
            seq += 1;
        }
        for chunk in pending.chunks(4096) {
            tracing::info!(
                receipts = chunk.len(),
                "completing deletions from their receipts"
            );
            // The crash may have come before HQ's copy was queued: queue it
            // (again — at least once; HQ knows a receipt by its sequence).
            self.events.emit_all(
                chunk
                    .iter()
                    .map(|(r, env)| Event::deleted(r.clone(), env.clone()))
                    .collect(),
            );
            let with_sha: Vec<(Receipt, String)> = chunk
                .iter()
                .map(|(r, env)| (r.clone(), manifest::sha256_hex(env.payload.as_bytes())))
                .collect();
            self.finish_deletions(&with_sha)?;
        }
        self.journal_head = self
            .index
            .meta("journal_head")
            .map_err(self.db_err())?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let entries = self
            .journal
            .after(self.journal_head)
            .map_err(RetentionError::Corrupt)?;
        for entry in entries {
            tracing::info!(sequence = entry.sequence, "applying a journaled command");
            self.replay(&entry)?;
        }
        Ok(())
    }

    /// Indexes every manifest newer than the index's head of its camera.
    pub(crate) fn index_chains(&mut self) -> Result<(), RetentionError> {
        let cams_dir = self.data_dir.join("cameras");
        let entries = match std::fs::read_dir(&cams_dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(RetentionError::Io {
                    path: cams_dir,
                    source,
                })
            }
        };
        let mut cameras = Vec::new();
        for e in entries {
            let e = e.map_err(|source| RetentionError::Io {
                path: cams_dir.clone(),
                source,
            })?;
            if let Some(name) = e.file_name().to_str() {
                cameras.push(name.to_owned());
            }
        }
        for cam in cameras {
            self.index_camera(&cam)?;
        }
        Ok(())
    }

    /// Indexes the records of `cam` after its highest indexed one, from
    /// their manifest files, in one transaction.
    fn index_camera(&mut self, cam: &str) -> Result<(), RetentionError> {
        let key = self.key.public_key();
        let dir = self.camera_dir(cam);
        let mut seq = self.index.camera_head(cam).map_err(self.db_err())? + 1;
        let mut rows = Vec::new();
        loop {
            let path = dir.join(format!("{seq:010}.json"));
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(source) => return Err(RetentionError::Io { path, source }),
            };
            let env = Envelope::open(&bytes, Some(&key))
                .map_err(|e| RetentionError::Corrupt(format!("{}: {e}", path.display())))?;
            let m: Manifest = serde_json::from_str(&env.payload)
                .map_err(|e| RetentionError::Corrupt(format!("{}: {e}", path.display())))?;
            rows.push((
                self.row_from_manifest(&m, &env.payload),
                originals::original_of(&m),
            ));
            seq += 1;
        }
        if !rows.is_empty() {
            tracing::info!(camera = %cam, records = rows.len(), "indexing records");
            self.write(|w| {
                rows.iter()
                    .try_for_each(|(r, o)| w.insert_with(r, o.as_ref()))
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
