//! Taking one file off a camera: its bytes read once, hashed, and sealed
//! into the store's age writer exactly as they are (no remux), the sealed
//! copy fsynced and read back from the disk as it is written.
//!
//! Three threads share the work of one file, so that a dock uses the cores
//! it has (the read-back's own invariant, and why it is the least work that
//! proves the copy intact, is in [`super::readback`]):
//! - the reader reads the original once, in [`BLOCK`]s, and takes its
//!   SHA-256 (the evidence hash of the manifest);
//! - the sealer (the calling thread) encrypts the same bytes through the
//!   age writer (ChaCha20-Poly1305 and a CRC-32 of the ciphertext) and
//!   writes them with `O_DIRECT` ([`super::direct`]); at the end it
//!   finishes the stream and fsyncs the file;
//! - the follower reads the sealed copy back from the disk behind the
//!   sealer and takes the SHA-256 the manifest signs.
//!
//! So per byte: one read of the original, one SHA-256 of it, the AEAD, one
//! write and one read back, both past the page cache, and one SHA-256 of
//! the ciphertext; the CRC-32s are nearly free. Reader and sealer hand over blocks through a bounded channel
//! ([`IN_FLIGHT`] blocks; the reader waits when it is full), so at most
//! `IN_FLIGHT + 2` blocks of plaintext are in memory and none is written
//! anywhere but into the age stream.
//!
//! The copy fails — and nothing of it is committed — when the original cannot
//! be read to its end (camera pulled out: I/O error, vanished file), ends
//! before or after the size it had when opened (the file changed), the
//! sealed copy cannot be written or fsynced (disk full), or what is read back
//! is not what was written.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::mpsc;

use tokio_util::sync::CancellationToken;

use sargs_core::seal::age::{AgeWriter, SealSummary, Unhashed};

use super::direct::DirectWriter;
use super::readback::{self, Progress, StopOnDrop};

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

/// Reads `src` (which had `expected` bytes when opened) to its end, seals
/// every byte into `writer` (a `Check::Crc32` writer of the file at
/// `sealed`, written past the page cache: [`super::direct`]), finishes and
/// fsyncs it and reads it back; `progress` hears of
/// each block sealed. Gives what was read and the summary of what is on the
/// disk (its SHA-256 from the bytes read back).
pub fn seal_from(
    src: &File,
    expected: u64,
    writer: AgeWriter<DirectWriter>,
    sealed: &Path,
    cancel: &CancellationToken,
    progress: &dyn Fn(u64),
) -> Result<(Copied, SealSummary), CopyError> {
    advise(src, libc::POSIX_FADV_SEQUENTIAL);
    let (tx, rx) = mpsc::sync_channel::<Msg>(IN_FLIGHT);
    let (back, spare) = mpsc::channel::<Vec<u8>>();
    let state = Progress::default();
    let written = &state;
    // `move`: the receiver is dropped when the sealer returns, so a reader
    // blocked on a full channel wakes up and ends before the scope joins it.
    std::thread::scope(move |scope| {
        scope.spawn(move || read_and_hash(src, expected, &tx, &spare));
        let follower = scope.spawn(move || readback::follow(sealed, written));
        let stop = StopOnDrop(written);
        let sealed_now = seal_blocks(&rx, &back, writer, written, cancel, progress);
        drop(stop);
        let read = follower
            .join()
            .unwrap_or_else(|_| Err("the read-back thread failed".into()));
        let (copied, unhashed) = sealed_now?;
        match read {
            Ok(Some(r)) if r.bytes == unhashed.ciphertext_len && r.crc32 == unhashed.ciphertext_crc32 => {
                Ok((copied, unhashed.with_sha256(r.sha256)))
            }
            Ok(Some(r)) => Err(CopyError::Store(format!(
                "{}: the sealed copy read back from the disk ({} bytes) does not match what was written ({} bytes)",
                sealed.display(),
                r.bytes,
                unhashed.ciphertext_len
            ))),
            Ok(None) => Err(CopyError::Store("the read-back stopped".into())),
            Err(why) => Err(CopyError::Store(why)),
        }
    })
}

/// The sealer: every block into the age stream, then the stream finished
/// and fsynced.
fn seal_blocks(
    rx: &mpsc::Receiver<Msg>,
    back: &mpsc::Sender<Vec<u8>>,
    mut writer: AgeWriter<DirectWriter>,
    written: &Progress,
    cancel: &CancellationToken,
    progress: &dyn Fn(u64),
) -> Result<(Copied, Unhashed), CopyError> {
    let copied = loop {
        if cancel.is_cancelled() {
            return Err(CopyError::Cancelled);
        }
        match rx.recv() {
            Ok(Msg::Block(block)) => {
                writer
                    .write_all(&block)
                    .map_err(|e| CopyError::Store(format!("writing the sealed copy: {e}")))?;
                written.written(writer.get_ref().on_disk());
                progress(block.len() as u64);
                let _ = back.send(block);
            }
            Ok(Msg::End(end)) => break end.map_err(CopyError::Source)?,
            Err(_) => return Err(CopyError::Source("the reader stopped".into())),
        }
    };
    let (direct, unhashed) = writer
        .finish_unhashed()
        .map_err(|e| CopyError::Store(format!("sealing: {e}")))?;
    if direct.on_disk() != unhashed.ciphertext_len {
        return Err(CopyError::Store(format!(
            "the sealed copy's writer holds back {} of {} bytes",
            unhashed.ciphertext_len.saturating_sub(direct.on_disk()),
            unhashed.ciphertext_len
        )));
    }
    direct
        .file()
        .sync_all()
        .map_err(|e| CopyError::Store(format!("fsync of the sealed copy: {e}")))?;
    written.finished(unhashed.ciphertext_len);
    Ok((copied, unhashed))
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
