//! Taking one file off a camera: its bytes read once, hashed, and sealed
//! into the store's age writer exactly as they are (no remux); then the
//! sealed copy read back from the disk and its hash compared.
//!
//! Two threads share the work, because a dock has no cameras to serve: one
//! reads the original and hashes it (SHA-256 of the original, for the
//! manifest), the other encrypts and hashes the ciphertext (the age writer)
//! and writes it. They hand over 1 MiB blocks through a bounded channel
//! ([`IN_FLIGHT`] blocks; the reader waits when it is full), so at most
//! `IN_FLIGHT + 2` blocks of plaintext are in memory and none is written
//! anywhere but into the age stream.
//!
//! The copy fails — and nothing of it is committed — when the original cannot
//! be read to its end (camera pulled out: I/O error, vanished file), ends
//! before or after the size it had when opened (the file changed), or the
//! sealed copy cannot be written (disk full).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::mpsc;

use tokio_util::sync::CancellationToken;

use sargs_core::seal::age::{AgeWriter, SealSummary};

/// Bytes read from the camera at a time.
pub const BLOCK: usize = 1 << 20;
/// Blocks read ahead of the sealer.
pub const IN_FLIGHT: usize = 4;

/// Why a copy failed.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The camera's file could not be read to its end, or changed.
    #[error("{0}")]
    Source(String),
    /// The sealed copy could not be written (e.g. the disk is full).
    #[error("{0}")]
    Store(String),
    #[error("stopped")]
    Cancelled,
}

/// What was read off the camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    pub original_sha256: [u8; 32],
    pub bytes: u64,
}

enum Msg {
    Block(Vec<u8>),
    /// The reader's end: the original's hash and length, or why it failed.
    End(Result<Copied, String>),
}

/// Reads `src` (which had `expected` bytes when opened) to its end and seals
/// every byte into `writer`; `progress` hears of each block sealed.
pub fn seal_from(
    src: &File,
    expected: u64,
    writer: &mut AgeWriter<File>,
    cancel: &CancellationToken,
    progress: &dyn Fn(u64),
) -> Result<Copied, CopyError> {
    advise(src, libc::POSIX_FADV_SEQUENTIAL);
    let (tx, rx) = mpsc::sync_channel::<Msg>(IN_FLIGHT);
    let (back, spare) = mpsc::channel::<Vec<u8>>();
    // `move`: the receiver is dropped when the sealer returns, so a reader
    // blocked on a full channel wakes up and ends before the scope joins it.
    std::thread::scope(move |scope| {
        scope.spawn(move || read_and_hash(src, expected, &tx, &spare));
        loop {
            if cancel.is_cancelled() {
                return Err(CopyError::Cancelled);
            }
            match rx.recv() {
                Ok(Msg::Block(block)) => {
                    writer
                        .write_all(&block)
                        .map_err(|e| CopyError::Store(format!("writing the sealed copy: {e}")))?;
                    progress(block.len() as u64);
                    let _ = back.send(block);
                }
                Ok(Msg::End(end)) => return end.map_err(CopyError::Source),
                Err(_) => return Err(CopyError::Source("the reader stopped".into())),
            }
        }
    })
}

/// The reader thread: blocks of the original, hashed, to the sealer.
fn read_and_hash(
    mut src: &File,
    expected: u64,
    tx: &mpsc::SyncSender<Msg>,
    spare: &mpsc::Receiver<Vec<u8>>,
) {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut total: u64 = 0;
    let end = loop {
        let mut block = spare.try_recv().unwrap_or_else(|_| vec![0u8; BLOCK]);
        block.resize(BLOCK, 0);
        let n = match fill(&mut src, &mut block) {
            Ok(n) => n,
            Err(e) => {
                break Err(format!(
                    "reading the camera's file failed after {total} bytes: {e}"
                ))
            }
        };
        if n == 0 {
            break if total == expected {
                let mut sha = [0u8; 32];
                sha.copy_from_slice(ctx.finish().as_ref());
                Ok(Copied {
                    original_sha256: sha,
                    bytes: total,
                })
            } else {
                Err(format!(
                    "the camera's file ended after {total} of {expected} bytes (removed or changed while read)"
                ))
            };
        }
        total += n as u64;
        if total > expected {
            break Err(format!(
                "the camera's file grew past the {expected} bytes it had when opened"
            ));
        }
        block.truncate(n);
        ctx.update(&block);
        if tx.send(Msg::Block(block)).is_err() {
            return; // the sealer stopped
        }
    };
    let _ = tx.send(Msg::End(end));
}

/// Reads until `buf` is full or the file ends.
fn fill(src: &mut &File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match src.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Reads the sealed file at `path` back from the disk — its cached pages are
/// dropped first, so the bytes come from the medium, not memory — and checks
/// its length and SHA-256 against what the writer reported.
pub fn verify_on_disk(path: &Path, summary: &SealSummary) -> Result<(), String> {
    let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    advise(&file, libc::POSIX_FADV_DONTNEED);
    let read = hash_all(&file, None).map_err(|e| format!("re-reading {}: {e}", path.display()));
    advise(&file, libc::POSIX_FADV_DONTNEED);
    let read = read?;
    if read.bytes != summary.ciphertext_len || read.original_sha256 != summary.ciphertext_sha256 {
        return Err(format!(
            "{}: the sealed copy read back from the disk ({} bytes) does not match what was written ({} bytes)",
            path.display(),
            read.bytes,
            summary.ciphertext_len
        ));
    }
    Ok(())
}

/// SHA-256 and length of a file on the camera (to recognise one sealed before).
pub fn hash_original(path: &Path, cancel: &CancellationToken) -> Result<Copied, CopyError> {
    let file =
        File::open(path).map_err(|e| CopyError::Source(format!("{}: {e}", path.display())))?;
    hash_all(&file, Some(cancel)).map_err(|e| match e.kind() {
        io::ErrorKind::Interrupted => CopyError::Cancelled,
        _ => CopyError::Source(format!("reading {}: {e}", path.display())),
    })
}

/// SHA-256 and length of everything in `file`, read sequentially; a
/// cancelled token ends it with `Interrupted`.
fn hash_all(file: &File, cancel: Option<&CancellationToken>) -> io::Result<Copied> {
    advise(file, libc::POSIX_FADV_SEQUENTIAL);
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; BLOCK];
    let mut bytes: u64 = 0;
    let mut reader = file;
    loop {
        if cancel.is_some_and(|c| c.is_cancelled()) {
            return Err(io::ErrorKind::Interrupted.into());
        }
        let n = fill(&mut reader, &mut buf)?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
        bytes += n as u64;
    }
    let mut sha = [0u8; 32];
    sha.copy_from_slice(ctx.finish().as_ref());
    Ok(Copied {
        original_sha256: sha,
        bytes,
    })
}

/// `posix_fadvise` over the whole file; advice only, so a refusal is ignored.
fn advise(file: &File, advice: libc::c_int) {
    // SAFETY: an fd we own; the call reads no memory of ours.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), 0, 0, advice);
    }
}
