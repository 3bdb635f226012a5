//! The on-disk store: layout, single ownership, and crash recovery.
//!
//! ```text
//! <data_dir>/
//!   LOCK                      flock(2)ed by the one process that owns the store
//!   RUNNING                   present while an agent runs; found at start => unclean stop
//!   device/signing.pk8        Ed25519 device key (0600, directory 0700)
//!   cameras/<camera>/
//!     HEAD                    chain head: last committed sequence, its payload hash, end
//!     0000000042.mp4.age.partial   segment being written (age stream, no final chunk yet)
//!     0000000042.mp4.age      sealed segment
//!     0000000042.json         signed manifest (segment or gap record)
//!   receipts/, commands/, inbox/, index.sqlite   owned by [`crate::retention`]
//! ```
//!
//! Single ownership: [`Store::lock`] takes an exclusive, non-blocking advisory
//! `flock(2)` lock on `LOCK` through std ([`File::try_lock`]). A second process
//! that finds it held gets [`StoreError::Locked`] and goes no further; the lock
//! is released when the [`Store`] is dropped or closed (and by the kernel when
//! the owning process dies, so a crash never leaves the store locked).
//!
//! A segment's media file is removed only by the retention engine, after its
//! deletion receipt is durable; its manifest stays in the chain.
//!
//! Durability order for a segment (the invariant every path keeps; recovery in
//! [`camera::CameraLog::open`] completes or marks whatever a crash interrupted):
//! 1. **file**: the sealed media is written as `N.mp4.age.partial` (created with
//!    `O_EXCL`, mode 0600), its final age chunk written and the file fsynced;
//! 2. **manifest**: the signed manifest `N.json` is written to a temporary file,
//!    fsynced, renamed, and the directory fsynced;
//! 3. **directory**: `N.mp4.age.partial` is renamed to `N.mp4.age` and the
//!    directory fsynced;
//! 4. **index**: `HEAD` is rewritten atomically (temp, fsync, rename, directory fsync).
//!
//! A crash before 2 leaves a partial file without manifest: at start it is kept
//! byte for byte and committed as a `truncated` segment. Between 2 and 3 the
//! rename is completed. Between 3 and 4 the manifest is adopted into `HEAD`.
//! At no step does plaintext exist on disk: the media is encrypted before its
//! first byte is written.

pub mod camera;

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::path::{Path, PathBuf};

pub use camera::{
    CameraLog, IngestInfo, MediaFacts, OpenSegment, SealContext, SealObserver, SegmentInfo,
};

/// Store errors. I/O errors during a commit are fatal for that commit: the
/// segment is retried as a truncated one at the next start, never dropped.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: another sargs process owns this data directory")]
    Locked { path: PathBuf },
    #[error("{path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("camera {camera}: commit of sequence {got} out of order (head is {head})")]
    OutOfOrder { camera: String, got: u64, head: u64 },
}

impl StoreError {
    pub(crate) fn io(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
        move |source| StoreError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// Ownership of a data directory for the lifetime of one agent process.
pub struct Store {
    root: PathBuf,
    _lock: File,
    unclean: bool,
    /// Whether this owner marked the store running (an agent) or only
    /// locked it (maintenance: `apply`, `reindex`).
    running: bool,
}

impl Store {
    /// Takes the data directory: creates it (0700), locks it against a second
    /// agent, and notes whether the previous agent stopped cleanly.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        let mut store = Store::lock(root)?;
        let running = root.join("RUNNING");
        sargs_core::fsutil::write_atomic(
            &running,
            std::process::id().to_string().as_bytes(),
            0o600,
        )
        .map_err(StoreError::io(&running))?;
        store.running = true;
        Ok(store)
    }

    /// Takes the data directory for maintenance without marking it running:
    /// an unclean stop stays on record for the next agent.
    pub fn lock(root: &Path) -> Result<Store, StoreError> {
        sargs_core::fsutil::create_private_dir(&root.join("cameras"))
            .map_err(StoreError::io(root))?;
        let lock_path = root.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(StoreError::io(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(StoreError::Locked { path: lock_path }),
            Err(TryLockError::Error(source)) => {
                return Err(StoreError::Io {
                    path: lock_path,
                    source,
                })
            }
        }
        let unclean = root.join("RUNNING").exists();
        Ok(Store {
            root: root.to_owned(),
            _lock: lock,
            unclean,
            running: false,
        })
    }

    /// True when the previous agent on this store did not stop cleanly.
    pub fn unclean(&self) -> bool {
        self.unclean
    }

    /// The directory that holds one camera's chain.
    pub fn camera_dir(&self, camera: &str) -> PathBuf {
        self.root.join("cameras").join(camera)
    }

    /// Marks a clean stop. Call after every camera has committed its last record.
    pub fn close(self) -> Result<(), StoreError> {
        if !self.running {
            return Ok(());
        }
        let running = self.root.join("RUNNING");
        std::fs::remove_file(&running).map_err(StoreError::io(&running))?;
        sargs_core::fsutil::sync_dir(&self.root).map_err(StoreError::io(&self.root))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_owner_at_a_time_until_released() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = Store::open(dir.path()).expect("first owner");
        match Store::lock(dir.path()) {
            Err(StoreError::Locked { path }) => assert_eq!(path, dir.path().join("LOCK")),
            Err(e) => panic!("expected Locked, got {e}"),
            Ok(_) => panic!("a second owner took the store"),
        }
        first.close().expect("close");
        let second = Store::lock(dir.path()).expect("free after close");
        assert!(!second.unclean(), "a clean stop is on record");
        assert!(matches!(
            Store::open(dir.path()),
            Err(StoreError::Locked { .. })
        ));
        drop(second);
        Store::open(dir.path()).expect("free after drop");
    }
}
