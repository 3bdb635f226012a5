//! Durable file-system steps shared by the store and the key files.
//!
//! Invariant: a file written through [`write_atomic`] is either absent or whole
//! and fsynced under its final name, and its directory entry is fsynced before
//! the function returns; a directory made by [`create_private_dir`] has its
//! entry (and those of the parents it made) fsynced before it returns. An fsync failure is returned, never ignored: the
//! caller must treat it as fatal for the write (the page cache may have dropped
//! the data).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Fsyncs a directory so that entries created, renamed or removed in it persist.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` and its parents with mode 0700 where they are missing,
/// durably: the parent of each directory created is fsynced, so that a
/// power cut cannot take away a new directory (and every file later made
/// durable in it) whose own entry was never synced.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    // The missing components, innermost first.
    let mut missing = Vec::new();
    let mut at = dir;
    while !at.as_os_str().is_empty() && std::fs::metadata(at).is_err() {
        missing.push(at);
        match at.parent() {
            Some(p) => at = p,
            None => break,
        }
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    // Outermost first: an entry is synced once the one above it is.
    for created in missing.iter().rev() {
        match created.parent() {
            Some(p) if p.as_os_str().is_empty() => sync_dir(Path::new("."))?,
            Some(p) => sync_dir(p)?,
            None => {}
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically and durably: a temporary sibling is
/// written and fsynced, renamed over `path`, then the directory is fsynced.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = write_atomic_nosync_dir(path, bytes, mode)?;
    sync_dir(&dir)
}

/// [`write_atomic`] without the final directory fsync, for a batch of files
/// in one directory: the caller fsyncs the directory (returned) once after
/// the last file, and relies on none of them before that.
pub fn write_atomic_nosync_dir(path: &Path, bytes: &[u8], mode: u32) -> io::Result<PathBuf> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no directory"))?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let mut tmp_name = name.to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    Ok(dir.to_owned())
}

/// Creates a new file that must not exist yet (`O_EXCL`), with `mode`.
pub fn create_new(path: &Path, mode: u32) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
}

/// Bytes available to this process on the file system holding `path`.
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    space(path).map(|s| s.available)
}

/// Size and free space of one file system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    pub total: u64,
    /// Bytes available to this (unprivileged) process.
    pub available: u64,
}

/// The size and free space of the file system holding `path`: one
/// `statvfs(2)` of that path, so no other mount is ever touched (a hung
/// network or FUSE mount elsewhere cannot block the caller).
pub fn space(path: &Path) -> io::Result<Space> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    // SAFETY: statvfs fills the struct we own from a NUL-terminated path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let frsize = st.f_frsize as u64;
    Ok(Space {
        total: st.f_blocks as u64 * frsize,
        available: st.f_bavail as u64 * frsize,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn space_is_that_of_the_path_and_a_missing_path_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = space(dir.path()).expect("statvfs");
        assert!(s.total > 0 && s.available <= s.total, "{s:?}");
        assert_eq!(
            free_bytes(dir.path()).expect("free") / 4096 > 0,
            s.available / 4096 > 0
        );
        let err = space(&dir.path().join("missing")).expect_err("no such path");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
