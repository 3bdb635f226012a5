//! A docked body camera for tests: the camera's storage (a real directory
//! of real files) served through a FUSE mount at the dock path, as a USB
//! mass-storage camera appears to the gateway — read-only except that files
//! can be removed.
//!
//! The test can do to it what happens to a real dock:
//! - [`Camera::hold_at`]: the next read reaching a byte offset waits until
//!   [`Camera::release`] — "mid-copy", deterministically;
//! - [`Camera::unplug`]: every operation fails with EIO from then on, held
//!   reads included (the camera pulled out), and [`Camera::undock`] then
//!   unmounts it and removes the mount point (the dock directory vanishes);
//! - [`Camera::dock`] mounts it again (the camera put back), with its files
//!   as the real directory holds them.
//!
//! - [`Camera::on_unlink`]: a check run at the instant the gateway removes
//!   a file from the camera (while its `unlink` waits), e.g. that the seal
//!   is durable by then, or to kill the gateway right there.
//!
//! Mounting needs root and `/dev/fuse` (CI runs as root).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, Generation, INodeNo, LockOwner, OpenFlags,
    ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, Request,
};

const TTL: Duration = Duration::from_millis(200);

#[derive(Default)]
struct State {
    /// Reads reaching this offset wait (until released).
    hold_at: Option<u64>,
    /// A read is waiting at the hold.
    held: bool,
    unplugged: bool,
}

/// Decides an `unlink` of the camera file at a path (relative to the
/// storage): true lets it happen, false fails it with EIO.
pub type UnlinkHook = Box<dyn Fn(&Path) -> bool + Send + Sync>;

#[derive(Default)]
struct Control {
    state: Mutex<State>,
    changed: Condvar,
    on_unlink: Mutex<Option<UnlinkHook>>,
}

/// The FUSE file system: a pass-through view of `backing`.
struct CamFs {
    backing: PathBuf,
    control: Arc<Control>,
    /// inode → path relative to `backing` ("" is the root, inode 1).
    inodes: Mutex<HashMap<u64, PathBuf>>,
}

impl CamFs {
    fn path_of(&self, ino: INodeNo) -> Option<PathBuf> {
        let map = self.inodes.lock().ok()?;
        map.get(&u64::from(ino)).map(|rel| self.backing.join(rel))
    }

    fn rel_of(&self, ino: INodeNo) -> Option<PathBuf> {
        self.inodes.lock().ok()?.get(&u64::from(ino)).cloned()
    }

    /// The inode of `rel`: the backing file's own inode number (never 1).
    fn attr(&self, rel: &Path) -> Result<FileAttr, Errno> {
        let meta = std::fs::symlink_metadata(self.backing.join(rel)).map_err(|_| Errno::ENOENT)?;
        let ino = if rel.as_os_str().is_empty() {
            1
        } else {
            meta.ino().max(2)
        };
        if let Ok(mut map) = self.inodes.lock() {
            map.insert(ino, rel.to_owned());
        }
        let time = |t: std::io::Result<std::time::SystemTime>| t.unwrap_or(UNIX_EPOCH);
        Ok(FileAttr {
            ino: INodeNo(ino),
            size: meta.len(),
            blocks: meta.len().div_ceil(512),
            atime: time(meta.accessed()),
            mtime: time(meta.modified()),
            ctime: time(meta.modified()),
            crtime: time(meta.modified()),
            kind: if meta.is_dir() {
                FileType::Directory
            } else {
                FileType::RegularFile
            },
            perm: if meta.is_dir() { 0o755 } else { 0o644 },
            nlink: 1,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    fn unplugged(&self) -> bool {
        self.control
            .state
            .lock()
            .map(|s| s.unplugged)
            .unwrap_or(true)
    }

    /// Waits while a hold covers `[offset, offset+size)`; false if unplugged.
    fn pass_hold(&self, offset: u64, size: u64) -> bool {
        let Ok(mut s) = self.control.state.lock() else {
            return false;
        };
        while let Some(at) = s.hold_at {
            if offset + size <= at || s.unplugged {
                break;
            }
            s.held = true;
            self.control.changed.notify_all();
            s = match self.control.changed.wait(s) {
                Ok(s) => s,
                Err(_) => return false,
            };
        }
        !s.unplugged
    }
}

impl Filesystem for CamFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if self.unplugged() {
            return reply.error(Errno::EIO);
        }
        let Some(rel) = self.rel_of(parent) else {
            return reply.error(Errno::ENOENT);
        };
        match self.attr(&rel.join(name)) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        if self.unplugged() {
            return reply.error(Errno::EIO);
        }
        match self.rel_of(ino).map(|rel| self.attr(&rel)) {
            Some(Ok(a)) => reply.attr(&TTL, &a),
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if !self.pass_hold(offset, u64::from(size)) {
            return reply.error(Errno::EIO);
        }
        let Some(path) = self.path_of(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let Ok(f) = std::fs::File::open(path) else {
            return reply.error(Errno::EIO);
        };
        let mut buf = vec![0u8; size as usize];
        let mut n = 0;
        while n < buf.len() {
            match f.read_at(&mut buf[n..], offset + n as u64) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(_) => return reply.error(Errno::EIO),
            }
        }
        reply.data(&buf[..n]);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if self.unplugged() {
            return reply.error(Errno::EIO);
        }
        let Some(rel) = self.rel_of(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let Ok(rd) = std::fs::read_dir(self.backing.join(&rel)) else {
            return reply.error(Errno::EIO);
        };
        let mut names: Vec<_> = rd.flatten().map(|e| e.file_name()).collect();
        names.sort();
        for (i, name) in names.iter().enumerate().skip(offset as usize) {
            let Ok(a) = self.attr(&rel.join(name)) else {
                continue;
            };
            if reply.add(a.ino, i as u64 + 1, a.kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if self.unplugged() {
            return reply.error(Errno::EIO);
        }
        let Some(rel) = self.rel_of(parent) else {
            return reply.error(Errno::ENOENT);
        };
        let allowed = match self.control.on_unlink.lock() {
            Ok(hook) => hook.as_ref().is_none_or(|f| f(&rel.join(name))),
            Err(_) => false,
        };
        if !allowed {
            return reply.error(Errno::EIO);
        }
        match self.path_of(parent) {
            Some(dir) => match std::fs::remove_file(dir.join(name)) {
                Ok(()) => reply.ok(),
                Err(_) => reply.error(Errno::ENOENT),
            },
            None => reply.error(Errno::ENOENT),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        if self.unplugged() {
            reply.error(Errno::EIO)
        } else {
            reply.ok()
        }
    }
}

/// A simulated body camera: its storage, and its mount at the dock while docked.
pub struct Camera {
    /// The camera's storage (what it keeps while away from the dock).
    pub storage: PathBuf,
    /// Where it appears when docked (`<dock path>/<serial>`).
    pub mount: PathBuf,
    control: Arc<Control>,
    session: Option<fuser::BackgroundSession>,
    /// The FUSE connection's number (the mount's minor device number).
    connection: Option<u32>,
}

impl Camera {
    /// A camera whose storage is `storage`, to be docked at `mount`.
    pub fn new(storage: &Path, mount: &Path) -> Camera {
        std::fs::create_dir_all(storage).expect("camera storage");
        Camera {
            storage: storage.to_owned(),
            mount: mount.to_owned(),
            control: Arc::new(Control::default()),
            session: None,
            connection: None,
        }
    }

    /// Mounts the storage at the dock path (the camera is docked).
    pub fn dock(&mut self) {
        assert!(self.session.is_none(), "already docked");
        if let Ok(mut s) = self.control.state.lock() {
            s.unplugged = false;
        }
        std::fs::create_dir_all(&self.mount).expect("mount point");
        let fs = CamFs {
            backing: self.storage.clone(),
            control: self.control.clone(),
            inodes: Mutex::new(HashMap::from([(1, PathBuf::new())])),
        };
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::FSName("bodycam".into()),
            fuser::MountOption::DefaultPermissions,
        ];
        // One thread: requests are answered in order, and a held read holds
        // the camera as a stalled USB read would.
        let session = fuser::spawn_mount(fs, &self.mount, &config)
            .expect("FUSE mount of the simulated camera (needs root and /dev/fuse)");
        self.session = Some(session);
        let dev = std::fs::metadata(&self.mount)
            .expect("mounted camera")
            .dev();
        self.connection = Some(libc::minor(dev));
    }

    /// Runs `hook` at each removal of a file from the camera (see [`UnlinkHook`]).
    pub fn on_unlink(&self, hook: impl Fn(&Path) -> bool + Send + Sync + 'static) {
        if let Ok(mut h) = self.control.on_unlink.lock() {
            *h = Some(Box::new(hook));
        }
    }

    /// The next read that reaches `offset` waits until [`Camera::release`].
    pub fn hold_at(&self, offset: u64) {
        if let Ok(mut s) = self.control.state.lock() {
            s.hold_at = Some(offset);
            s.held = false;
        }
    }

    /// Waits until a read is waiting at the hold.
    pub fn wait_held(&self, limit: Duration) -> bool {
        let Ok(s) = self.control.state.lock() else {
            return false;
        };
        let r = self
            .control
            .changed
            .wait_timeout_while(s, limit, |s| !s.held);
        r.map(|(s, _)| s.held).unwrap_or(false)
    }

    /// Lets held reads go on.
    pub fn release(&self) {
        if let Ok(mut s) = self.control.state.lock() {
            s.hold_at = None;
        }
        self.control.changed.notify_all();
    }

    /// The camera is pulled out: every operation fails with EIO.
    pub fn unplug(&self) {
        if let Ok(mut s) = self.control.state.lock() {
            s.unplugged = true;
        }
        self.control.changed.notify_all();
    }

    /// Unmounts and removes the mount point: the dock directory vanishes.
    /// Call it after [`Camera::unplug`] once the gateway has given up on its
    /// reads: a read still in flight when the mount goes away would never
    /// be answered.
    pub fn undock(&mut self) {
        self.unplug();
        let Some(session) = self.session.take() else {
            return;
        };
        super::faultfs::unmount(&self.mount, session);
        let _ = std::fs::remove_dir(&self.mount);
    }
}

/// Fails every request of FUSE connection `c`, now and later (fusectl).
fn abort_connection(c: u32) {
    let ctl = Path::new("/sys/fs/fuse/connections");
    if !ctl.join(c.to_string()).exists() {
        let _ = std::process::Command::new("mount")
            .args(["-t", "fusectl", "none"])
            .arg(ctl)
            .status();
    }
    let _ = std::fs::write(ctl.join(c.to_string()).join("abort"), "1");
}

impl Drop for Camera {
    /// A test that fails may leave the gateway with a file open on the
    /// mount; the connection is aborted so that nothing waits on it.
    fn drop(&mut self) {
        self.release();
        if let Some(c) = self.connection.take() {
            self.unplug();
            abort_connection(c);
        }
        self.undock();
    }
}
