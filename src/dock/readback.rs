//! The sealed copy read back from the disk while it is being written, and
//! the digest the manifest signs taken from those bytes.
//!
//! # Invariant
//!
//! **The ciphertext SHA-256 a dock manifest signs is the SHA-256 of the
//! bytes read back from the disk, and it is given only if those bytes are,
//! to the last, the bytes the age writer wrote** (same length, same CRC-32
//! of the whole stream) and the file ends where the writer ended.
//!
//! Why this is the least work that proves the copy intact: the manifest must
//! sign the digest of exactly the bytes on disk, and the camera may be freed
//! only when those bytes are proven to be what was sealed. One SHA-256 pass
//! over the bytes read back gives the first; the second needs a comparison
//! with what was written, for which the writer's CRC-32 suffices (an
//! accidental corruption — a bad sector, a controller or page-cache fault —
//! changes the CRC-32 with probability 1 − 2⁻³², and nobody between the
//! writer and the disk is an adversary to forge one; an adversary who could
//! write to the disk could as well replace file and digest before signing).
//! Hashing the ciphertext as it is written *and* again as it is read (as
//! before) is a second SHA-256 pass that proves nothing more. CRC-32 costs
//! well under 0.1 CPU-s per GiB here (crc32fast, PCLMULQDQ).
//!
//! # Order, and the overlap
//!
//! The follower (this module, its own thread) walks the file behind the
//! writer in steps of [`STEP`] bytes, each a whole number of MiB:
//! `sync_file_range(WAIT_BEFORE | WRITE | WAIT_AFTER)` writes the step's
//! pages out and waits for them, `posix_fadvise(DONTNEED)` drops them from
//! the page cache (they are clean now, so they go, and a dock's memory is
//! not filled with ciphertext nobody reads), and the step is read back from
//! the medium and hashed. (The dock's sealer writes past the page cache,
//! [`super::direct`], so both calls usually find nothing to do; they keep
//! the order true for any writer.) So the read-back of the first part of a file runs
//! on one core while the reader and the sealer work on its later part on
//! the others. The last step comes after the writer finished and the whole
//! file was `fsync`ed (data and metadata durable); it drops the rest of the
//! file's pages and reads to end of file.
//!
//! # Reading from the medium
//!
//! The file is read back with `O_DIRECT`: the kernel writes out any dirty
//! page of the range and then reads the device into our buffer, past the
//! page cache, so what is hashed is what the device returns whatever is
//! cached — no page has to be dropped for the proof, and none is allocated,
//! filled and copied for the read (≈ 0.65 CPU-s per GiB less than a cached
//! read on the benchmark machine, `benches/dock.rs`). Reads are
//! [`READ`] bytes at offsets that are whole MiB, so offset, length and
//! buffer ([`DIRECT_ALIGN`]) meet any device's alignment; only the last
//! read of the file is short, and a short read is the end of the file.
//! Where the file system refuses `O_DIRECT` (`EINVAL` on open), the file is
//! read through the page cache instead, after the drop above; then a page
//! the kernel could not drop (it does not evict a page someone else has
//! locked) would be read from memory, and nothing in the agent holds them.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::{Condvar, Mutex};

/// Bytes the read-back trails the writer by, at most, before it starts a step.
pub const STEP: u64 = 16 << 20;
const ALIGN: u64 = 1 << 20;
/// Bytes read back at a time (a multiple of [`DIRECT_ALIGN`]).
const READ: usize = 1 << 20;
/// Alignment of the read-back buffer: a page, at least any device's
/// logical block.
const DIRECT_ALIGN: usize = 4096;

/// What the writer has done, shared with the follower.
#[derive(Default)]
struct State {
    /// Ciphertext bytes handed to the kernel so far.
    written: u64,
    /// The whole stream's length, once it is finished and fsynced.
    done: Option<u64>,
    /// The copy failed or was stopped: the follower ends.
    stop: bool,
}

/// The writer's side of the follower.
#[derive(Default)]
pub struct Progress {
    state: Mutex<State>,
    moved: Condvar,
}

impl Progress {
    fn update(&self, f: impl FnOnce(&mut State)) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut s);
        self.moved.notify_all();
    }

    /// `n` ciphertext bytes have been written in all.
    pub fn written(&self, n: u64) {
        self.update(|s| s.written = n);
    }

    /// The stream is finished at `len` bytes and fsynced.
    pub fn finished(&self, len: u64) {
        self.update(|s| {
            s.written = len;
            s.done = Some(len);
        });
    }

    /// The copy ends without a finished stream.
    pub fn stop(&self) {
        self.update(|s| s.stop = true);
    }

    /// Waits until there is a step to read: `(end, last)`, or `None` when stopped.
    fn next(&self, at: u64) -> Option<(u64, bool)> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            // A finished stream is read to its end, even if the copy is
            // stopped afterwards (see `StopOnDrop`).
            if let Some(len) = s.done {
                return Some((len, true));
            }
            if s.stop {
                return None;
            }
            let aligned = s.written / ALIGN * ALIGN;
            if aligned >= at + STEP {
                return Some((aligned, false));
            }
            s = self.moved.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Stops the follower when dropped, so that it ends however the writer's
/// side ends (an error, or a panic unwinding into the thread scope that
/// waits for the follower).
pub struct StopOnDrop<'a>(pub &'a Progress);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// What was read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadBack {
    pub bytes: u64,
    pub sha256: [u8; 32],
    pub crc32: u32,
}

/// How the sealed file is read back (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `O_DIRECT`, or the page cache where the file system refuses it.
    Direct,
    /// Through the page cache, after its pages are dropped.
    Cached,
}

/// Reads the sealed file at `path` back behind its writer (see the module
/// doc) until the writer reports it finished; `Ok(None)` if it stopped.
pub fn follow(path: &Path, progress: &Progress) -> Result<Option<ReadBack>, String> {
    follow_with(path, progress, Mode::Direct)
}

/// [`follow`], reading as `mode` says.
pub fn follow_with(
    path: &Path,
    progress: &Progress,
    mode: Mode,
) -> Result<Option<ReadBack>, String> {
    let what = |e: std::io::Error| format!("re-reading {}: {e}", path.display());
    let (file, direct) = open(path, mode).map_err(what)?;
    let mut sha = ring::digest::Context::new(&ring::digest::SHA256);
    let mut crc = crc32fast::Hasher::new();
    let mut space = vec![0u8; READ + DIRECT_ALIGN];
    let skip = space.as_ptr().align_offset(DIRECT_ALIGN).min(DIRECT_ALIGN);
    let buf = &mut space[skip..skip + READ];
    let mut at: u64 = 0;
    loop {
        let Some((end, last)) = progress.next(at) else {
            return Ok(None);
        };
        if !last {
            sync_range(&file, at, end - at).map_err(what)?;
        }
        // The last step drops to end of file (length 0), the partial last page included.
        advise(&file, at, if last { 0 } else { end - at });
        // Whole `READ`s from a whole MiB; the last step reads on to the
        // file's end, which the first short read marks.
        while last || at < end {
            let want = if last {
                READ
            } else {
                (end - at).min(READ as u64) as usize
            };
            let n = read_at(&file, &mut buf[..want], at, direct).map_err(what)?;
            sha.update(&buf[..n]);
            crc.update(&buf[..n]);
            at += n as u64;
            if n < want {
                break;
            }
        }
        if at < end {
            return Err(format!(
                "{}: the sealed copy read back from the disk ends after {at} of {end} bytes",
                path.display()
            ));
        }
        if last {
            if at > end {
                return Err(format!(
                    "{}: the sealed copy on the disk is longer than the {end} bytes written",
                    path.display()
                ));
            }
            let mut sha256 = [0u8; 32];
            sha256.copy_from_slice(sha.finish().as_ref());
            return Ok(Some(ReadBack {
                bytes: at,
                sha256,
                crc32: crc.finalize(),
            }));
        }
    }
}

/// `path` opened for reading as `mode` says, and whether it is `O_DIRECT`.
fn open(path: &Path, mode: Mode) -> std::io::Result<(File, bool)> {
    if mode == Mode::Direct {
        match File::options()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
        {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            opened => return opened.map(|f| (f, true)),
        }
    }
    File::open(path).map(|f| (f, false))
}

/// Reads at `offset` until `buf` is full or the file ends. A `direct` read
/// short of `buf` is the file's end: reading on from there would be at an
/// offset `O_DIRECT` may refuse.
fn read_at(file: &File, buf: &mut [u8], offset: u64, direct: bool) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], offset + n as u64) {
            Ok(0) => break,
            Ok(k) if direct => return Ok(n + k),
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Writes `[offset, offset + len)` out to the device and waits for it.
fn sync_range(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    let (Ok(off), Ok(n)) = (i64::try_from(offset), i64::try_from(len)) else {
        return Err(std::io::ErrorKind::InvalidInput.into());
    };
    // SAFETY: an fd we own; the call reads no memory of ours.
    let rc = unsafe { libc::sync_file_range(file.as_raw_fd(), off, n, flags) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Drops `[offset, offset + len)` (len 0: to end of file) from the page
/// cache; advice only, so a refusal is ignored.
fn advise(file: &File, offset: u64, len: u64) {
    let (Ok(off), Ok(n)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // The 64-bit call: `posix_fadvise` takes a 32-bit `off_t` on armv7,
    // which would leave the pages of a file past 2 GiB in the cache.
    // SAFETY: an fd we own; the call reads no memory of ours.
    unsafe {
        libc::posix_fadvise64(file.as_raw_fd(), off, n, libc::POSIX_FADV_DONTNEED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Writes `data` to a new file in pieces, reporting progress to a
    /// follower, and ends by reporting `len` as the finished length.
    fn follow_writing(data: &[u8], len: u64, mode: Mode) -> Result<Option<ReadBack>, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sealed");
        let mut file = File::create(&path).expect("create");
        let progress = Progress::default();
        std::thread::scope(|scope| {
            let follower = scope.spawn(|| follow_with(&path, &progress, mode));
            let mut total = 0;
            for piece in data.chunks(3 << 20) {
                file.write_all(piece).expect("write");
                total += piece.len() as u64;
                progress.written(total);
            }
            file.sync_all().expect("fsync");
            progress.finished(len);
            follower.join().expect("follower")
        })
    }

    #[test]
    fn the_digest_is_of_the_bytes_on_disk_and_a_length_that_differs_fails() {
        // Two steps and a partial last page; a file ending on a whole read;
        // a file of one byte.
        let all: Vec<u8> = (0..STEP + 2 * READ as u64)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        for len in [STEP + READ as u64 + 12_345, STEP + READ as u64, 1] {
            let data = &all[..len as usize];
            for mode in [Mode::Direct, Mode::Cached] {
                let r = follow_writing(data, len, mode)
                    .expect("read back")
                    .expect("finished");
                assert_eq!(r.bytes, len, "{mode:?}");
                assert_eq!(r.crc32, crc32fast::hash(data), "{mode:?}");
                assert_eq!(
                    r.sha256[..],
                    *ring::digest::digest(&ring::digest::SHA256, data).as_ref(),
                    "{mode:?}"
                );
                let short = follow_writing(data, len + 1, mode).expect_err("the file is shorter");
                assert!(short.contains("ends after"), "{mode:?}: {short}");
                let long = follow_writing(data, len - 1, mode).expect_err("the file is longer");
                assert!(long.contains("longer than"), "{mode:?}: {long}");
            }
        }
    }

    #[test]
    fn a_stopped_copy_ends_the_follower_without_a_digest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sealed");
        std::fs::write(&path, b"partial").expect("write");
        let progress = Progress::default();
        std::thread::scope(|scope| {
            let follower = scope.spawn(|| follow(&path, &progress));
            progress.written(7);
            progress.stop();
            assert_eq!(follower.join().expect("follower"), Ok(None));
        });
    }
}
