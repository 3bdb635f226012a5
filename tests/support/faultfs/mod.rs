//! A disk that fails on request: a pass-through FUSE view of a real
//! directory (`backing`) mounted where the agent keeps its data directory,
//! with one fault at a time switched on and off by the test while the agent
//! runs ([`Disk::inject`], [`Disk::clear`]):
//! - [`Fault::WriteEio`] / [`Fault::ReadEio`]: writes (and fsyncs) or reads
//!   of files whose path matches fail with EIO, as a failing flash card's do;
//! - [`Fault::NoSpace`]: writes go on until `budget` more bytes are written
//!   (a short write at the boundary), then fail with ENOSPC, as do new files
//!   and directories;
//! - [`Fault::Stall`]: every write and fsync of a matching file waits until
//!   the fault is cleared, as a card whose controller stalls does;
//! - [`Fault::ReadOnly`]: every change (open for writing, write, fsync,
//!   create, rename, unlink, mkdir, chmod, truncate) fails with EROFS, as
//!   after the kernel remounted a failing file system read-only
//!   (`errors=remount-ro`). A real `mount -o remount,ro` is refused (EBUSY)
//!   while the agent holds files open for writing, so it is simulated here.
//!
//! A fault's `pattern` is matched as a substring of the path relative to
//! the mount ("" matches every file). Every faulted operation is counted
//! with its path ([`Disk::hits`]): a scenario states what its fault hit.
//!
//! Invariant: with no fault, the mount is the backing directory — every
//! operation is passed through to it, byte for byte; a fault changes the
//! answer of an operation, never the backing directory's contents (a write
//! that fails writes nothing, a short write writes its prefix).
//!
//! Mounting needs root and `/dev/fuse` (CI runs as root).

mod fault;
mod fs;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use fault::Control;
pub use fault::Fault;
use fs::FaultFs;

/// The fault-injecting disk: `backing` mounted at `mount`.
pub struct Disk {
    pub backing: PathBuf,
    pub mount: PathBuf,
    control: Arc<Control>,
    session: Option<fuser::BackgroundSession>,
}

impl Disk {
    /// Mounts `backing` (created if missing) at `mount`, with no fault.
    pub fn mount(backing: &Path, mount: &Path) -> Disk {
        std::fs::create_dir_all(backing).expect("backing directory");
        std::fs::create_dir_all(mount).expect("mount point");
        let control = Arc::new(Control::default());
        let fs = FaultFs {
            backing: backing.to_owned(),
            control: control.clone(),
            inodes: Mutex::new(HashMap::from([(1, PathBuf::new())])),
            open: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
        };
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::FSName("faultfs".into()),
            fuser::MountOption::DefaultPermissions,
        ];
        // Several threads: a stalled write holds one of them, as a stalled
        // request holds one queue slot of a card, not the whole system.
        config.n_threads = Some(4);
        let session = fuser::spawn_mount(fs, mount, &config)
            .expect("FUSE mount of the fault-injecting disk (needs root and /dev/fuse)");
        Disk {
            backing: backing.to_owned(),
            mount: mount.to_owned(),
            control,
            session: Some(session),
        }
    }

    /// Starts `fault` (replacing any other), with its hit counts reset.
    pub fn inject(&self, fault: Fault) {
        if let Ok(mut h) = self.control.hits.lock() {
            h.clear();
        }
        if let Ok(mut f) = self.control.fault.lock() {
            *f = Some(fault);
        }
        self.control.cleared.notify_all();
    }

    /// Ends the fault: held operations go on, everything passes through.
    pub fn clear(&self) {
        if let Ok(mut f) = self.control.fault.lock() {
            *f = None;
        }
        self.control.cleared.notify_all();
    }

    /// The operations the current (or last) fault failed or held, as
    /// "op path" → count.
    pub fn hits(&self) -> BTreeMap<String, u64> {
        self.control
            .hits
            .lock()
            .map(|h| h.clone())
            .unwrap_or_default()
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        self.clear();
        let Some(session) = self.session.take() else {
            return;
        };
        let target =
            std::ffi::CString::new(self.mount.as_os_str().as_encoded_bytes()).expect("mount path");
        // SAFETY: a NUL-terminated path we own. Lazily: a process of a
        // failed test may still hold a file open on it.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        let _ = session.join();
    }
}
