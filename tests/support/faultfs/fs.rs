//! The pass-through FUSE file system: each operation on the backing
//! directory, unless the control's fault answers it first.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use super::fault::Control;
use super::power::Power;

const TTL: Duration = Duration::from_millis(500);

/// An open file: the backing file and its path (for matching faults).
pub(super) struct Open {
    file: File,
    rel: PathBuf,
}

pub(super) struct FaultFs {
    pub(super) backing: PathBuf,
    pub(super) control: Arc<Control>,
    /// In power-loss mode: the durable state, told of every sync.
    pub(super) power: Option<Arc<Power>>,
    /// inode → path relative to `backing` ("" is the root, inode 1).
    pub(super) inodes: Mutex<HashMap<u64, PathBuf>>,
    pub(super) open: Mutex<HashMap<u64, Arc<Open>>>,
    pub(super) next_fh: AtomicU64,
}

fn errno(e: std::io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

impl FaultFs {
    fn rel_of(&self, ino: INodeNo) -> Result<PathBuf, Errno> {
        let map = self.inodes.lock().map_err(|_| Errno::EIO)?;
        map.get(&u64::from(ino)).cloned().ok_or(Errno::ENOENT)
    }

    fn child(&self, parent: INodeNo, name: &OsStr) -> Result<PathBuf, Errno> {
        Ok(self.rel_of(parent)?.join(name))
    }

    /// The attributes of `rel`, remembering its inode (the backing file's).
    fn attr(&self, rel: &Path) -> Result<FileAttr, Errno> {
        let meta = std::fs::symlink_metadata(self.backing.join(rel)).map_err(errno)?;
        let ino = if rel.as_os_str().is_empty() {
            1
        } else {
            meta.ino().max(2)
        };
        if let Ok(mut map) = self.inodes.lock() {
            map.insert(ino, rel.to_owned());
        }
        let t = |s: i64, ns: i64| UNIX_EPOCH + Duration::new(s.max(0) as u64, ns.max(0) as u32);
        Ok(FileAttr {
            ino: INodeNo(ino),
            size: meta.len(),
            blocks: meta.blocks(),
            atime: t(meta.atime(), meta.atime_nsec()),
            mtime: t(meta.mtime(), meta.mtime_nsec()),
            ctime: t(meta.ctime(), meta.ctime_nsec()),
            crtime: t(meta.mtime(), meta.mtime_nsec()),
            kind: if meta.is_dir() {
                FileType::Directory
            } else if meta.file_type().is_symlink() {
                FileType::Symlink
            } else {
                FileType::RegularFile
            },
            perm: (meta.mode() & 0o7777) as u16,
            nlink: meta.nlink() as u32,
            uid: meta.uid(),
            gid: meta.gid(),
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    /// `unlink` or `rmdir` of `name` in `parent` with `remove`.
    fn remove(
        &self,
        op: &str,
        parent: INodeNo,
        name: &OsStr,
        reply: ReplyEmpty,
        remove: impl FnOnce(&Path) -> std::io::Result<()>,
    ) {
        let run = || -> Result<(), Errno> {
            let rel = self.child(parent, name)?;
            if let Some(e) = self.control.refuse_change(op, &rel, false) {
                return Err(e);
            }
            remove(&self.backing.join(&rel)).map_err(errno)
        };
        match run() {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn keep(&self, file: File, rel: PathBuf) -> FileHandle {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = self.open.lock() {
            m.insert(fh, Arc::new(Open { file, rel }));
        }
        FileHandle(fh)
    }

    fn handle(&self, fh: FileHandle) -> Result<Arc<Open>, Errno> {
        let m = self.open.lock().map_err(|_| Errno::EIO)?;
        m.get(&u64::from(fh)).cloned().ok_or(Errno::EBADF)
    }

    /// Tells the power-loss model (if any) of a sync of `file` or of the
    /// directory `dir`.
    fn synced(&self, file: Option<&File>, dir: Option<&Path>) -> Result<(), Errno> {
        let Some(power) = &self.power else {
            return Ok(());
        };
        if let Some(f) = file {
            power.sync_file(f).map_err(errno)?;
        }
        if let Some(d) = dir {
            power.sync_dir(d).map_err(errno)?;
        }
        Ok(())
    }

    /// Runs `make`, which creates `rel`, telling the power-loss model (if
    /// any) of the new inode.
    fn made<T>(&self, rel: &Path, make: impl FnOnce() -> Result<T, Errno>) -> Result<T, Errno> {
        let Some(power) = &self.power else {
            return make();
        };
        power.born(|| {
            let t = make()?;
            let meta = std::fs::symlink_metadata(self.backing.join(rel)).map_err(errno)?;
            Ok((t, meta.ino()))
        })
    }

    fn open_backing(&self, rel: &Path, flags: i32, mode: Option<u32>) -> Result<File, Errno> {
        let acc = flags & libc::O_ACCMODE;
        let mut o = OpenOptions::new();
        o.read(acc == libc::O_RDONLY || acc == libc::O_RDWR)
            .write(acc == libc::O_WRONLY || acc == libc::O_RDWR)
            .custom_flags(flags & !(libc::O_ACCMODE | libc::O_CREAT | libc::O_EXCL));
        if let Some(mode) = mode {
            o.create_new(true).mode(mode);
        }
        o.open(self.backing.join(rel)).map_err(errno)
    }
}

impl Filesystem for FaultFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.child(parent, name).and_then(|rel| self.attr(&rel)) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.rel_of(ino).and_then(|rel| self.attr(&rel)) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let run = || -> Result<FileAttr, Errno> {
            let rel = self.rel_of(ino)?;
            let path = self.backing.join(&rel);
            if mode.is_some() || size.is_some() {
                if let Some(e) = self.control.refuse_change("setattr", &rel, false) {
                    return Err(e);
                }
            }
            if let Some(m) = mode {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(m & 0o7777))
                    .map_err(errno)?;
            }
            if let Some(s) = size {
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_len(s))
                    .map_err(errno)?;
            }
            self.attr(&rel)
        };
        match run() {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let run = || -> Result<FileAttr, Errno> {
            let rel = self.child(parent, name)?;
            if let Some(e) = self.control.refuse_change("mkdir", &rel, true) {
                return Err(e);
            }
            let path = self.backing.join(&rel);
            self.made(&rel, || {
                std::fs::create_dir(&path).map_err(errno)?;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o7777))
                    .map_err(errno)
            })?;
            self.attr(&rel)
        };
        match run() {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove("unlink", parent, name, reply, |p| std::fs::remove_file(p));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove("rmdir", parent, name, reply, |p| std::fs::remove_dir(p));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let run = || -> Result<(), Errno> {
            if !flags.is_empty() {
                return Err(Errno::EINVAL);
            }
            let from = self.child(parent, name)?;
            let to = self.child(newparent, newname)?;
            if let Some(e) = self.control.refuse_change("rename", &from, false) {
                return Err(e);
            }
            std::fs::rename(self.backing.join(&from), self.backing.join(&to)).map_err(errno)?;
            // The inode keeps its number under its new name.
            self.attr(&to).map(|_| ())
        };
        match run() {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let run = || -> Result<FileHandle, Errno> {
            let rel = self.rel_of(ino)?;
            if flags.0 & libc::O_ACCMODE != libc::O_RDONLY || flags.0 & libc::O_TRUNC != 0 {
                if let Some(e) = self.control.refuse_change("open", &rel, false) {
                    return Err(e);
                }
            }
            let file = self.open_backing(&rel, flags.0, None)?;
            Ok(self.keep(file, rel))
        };
        match run() {
            Ok(fh) => reply.opened(fh, FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let run = || -> Result<(FileAttr, FileHandle), Errno> {
            let rel = self.child(parent, name)?;
            if let Some(e) = self.control.refuse_change("create", &rel, true) {
                return Err(e);
            }
            let (file, attr) = self.made(&rel, || {
                let file = self.open_backing(&rel, flags, Some(mode & 0o7777))?;
                Ok((file, self.attr(&rel)?))
            })?;
            Ok((attr, self.keep(file, rel)))
        };
        match run() {
            Ok((a, fh)) => reply.created(&TTL, &a, Generation(0), fh, FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let run = || -> Result<Vec<u8>, Errno> {
            let open = self.handle(fh)?;
            self.control.on_read(&open.rel)?;
            let mut buf = vec![0u8; size as usize];
            let mut n = 0;
            while n < buf.len() {
                match open.file.read_at(&mut buf[n..], offset + n as u64) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) => return Err(errno(e)),
                }
            }
            buf.truncate(n);
            Ok(buf)
        };
        match run() {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let run = || -> Result<u32, Errno> {
            let open = self.handle(fh)?;
            let n = self.control.on_write(&open.rel, data.len())?;
            open.file.write_all_at(&data[..n], offset).map_err(errno)?;
            // O_SYNC includes O_DSYNC's bit: each write is synced.
            if flags.0 & libc::O_DSYNC != 0 {
                self.synced(Some(&open.file), None)?;
            }
            Ok(n as u32)
        };
        match run() {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if let Ok(mut m) = self.open.lock() {
            m.remove(&u64::from(fh));
        }
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let run = || -> Result<(), Errno> {
            let open = self.handle(fh)?;
            self.control.on_sync(&open.rel)?;
            if datasync {
                open.file.sync_data().map_err(errno)?;
            } else {
                open.file.sync_all().map_err(errno)?;
            }
            self.synced(Some(&open.file), None)
        };
        match run() {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let rel = match self.rel_of(ino) {
            Ok(r) => r,
            Err(e) => return reply.error(e),
        };
        let rd = match std::fs::read_dir(self.backing.join(&rel)) {
            Ok(rd) => rd,
            Err(e) => return reply.error(errno(e)),
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

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let run = || -> Result<(), Errno> {
            let rel = self.rel_of(ino)?;
            self.control.on_sync(&rel)?;
            let dir = self.backing.join(&rel);
            File::open(&dir).and_then(|d| d.sync_all()).map_err(errno)?;
            self.synced(None, Some(&dir))
        };
        match run() {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    /// The backing file system's figures: the agent's free-space floor
    /// reads the real disk.
    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match nix_statvfs(&self.backing) {
            Some(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                255,
                s.f_frsize as u32,
            ),
            None => reply.error(Errno::EIO),
        }
    }
}

fn nix_statvfs(path: &Path) -> Option<libc::statvfs> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    let mut s = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: a NUL-terminated path and a buffer of the right type.
    let rc = unsafe { libc::statvfs(c.as_ptr(), s.as_mut_ptr()) };
    // SAFETY: statvfs filled it when it returned 0.
    (rc == 0).then(|| unsafe { s.assume_init() })
}
