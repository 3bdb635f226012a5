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
//! In power-loss mode ([`Disk::mount_power`], see `power`) no fault is
//! injected: the disk keeps what fsync made durable beside the view, and a
//! power cut ([`Disk::cut`], [`Disk::restore`]) rewrites the backing
//! directory to that.
//!
//! Mounting needs root and `/dev/fuse` (CI runs as root).

mod fault;
mod fs;
mod power;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use fault::Control;
pub use fault::Fault;
use fs::FaultFs;
pub use power::Lost;
use power::Power;

/// The fault-injecting disk: `backing` mounted at `mount`.
pub struct Disk {
    pub backing: PathBuf,
    pub mount: PathBuf,
    control: Arc<Control>,
    power: Option<Arc<Power>>,
    session: Option<fuser::BackgroundSession>,
}

impl Disk {
    /// Mounts `backing` (created if missing) at `mount`, with no fault.
    pub fn mount(backing: &Path, mount: &Path) -> Disk {
        Disk::mount_with(backing, mount, None)
    }

    /// Mounts `backing` (created if missing) at `mount` in power-loss
    /// mode: what it holds now is durable, and then what fsync makes so.
    pub fn mount_power(backing: &Path, mount: &Path) -> Disk {
        std::fs::create_dir_all(backing).expect("backing directory");
        let power = Power::snapshot(backing)
            .unwrap_or_else(|e| panic!("reading {} for its durable state: {e}", backing.display()));
        Disk::mount_with(backing, mount, Some(Arc::new(power)))
    }

    fn mount_with(backing: &Path, mount: &Path, power: Option<Arc<Power>>) -> Disk {
        std::fs::create_dir_all(backing).expect("backing directory");
        std::fs::create_dir_all(mount).expect("mount point");
        let control = Arc::new(Control::default());
        let fs = FaultFs {
            backing: backing.to_owned(),
            control: control.clone(),
            power: power.clone(),
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
            power,
            session: Some(session),
        }
    }

    /// The power fails now: no sync after this instant is durable (the
    /// test kills what runs on the disk right after). A disk mounted
    /// with [`Disk::mount_power`] only.
    pub fn cut(&self) {
        self.power
            .as_ref()
            .expect("a power cut of a disk mounted with Disk::mount_power")
            .cut();
    }

    /// After [`Disk::cut`] (and once nothing runs on the disk): unmounts
    /// it and rewrites the backing directory to its durable state. Returns
    /// what the cut took away.
    pub fn restore(mut self) -> std::io::Result<Lost> {
        let power = self
            .power
            .take()
            .expect("a restore of a disk mounted with Disk::mount_power");
        power.cut();
        self.unmount();
        power.restore(&self.backing)
    }

    fn unmount(&mut self) {
        if let Some(session) = self.session.take() {
            unmount(&self.mount, session);
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
        self.unmount();
    }
}

/// Unmounts the FUSE file system `session` serves at `mount` and waits
/// for its threads. Lazily: a process of a failed test may still hold a
/// file open on it (the threads then end once it is closed).
pub fn unmount(mount: &Path, session: fuser::BackgroundSession) {
    let target = std::ffi::CString::new(mount.as_os_str().as_encoded_bytes()).expect("mount path");
    // SAFETY: a NUL-terminated path we own.
    unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    let _ = session.join();
}
