//! The sealed copy of a docked file written past the page cache.
//!
//! # Invariant
//!
//! **Every byte the age writer hands to a [`DirectWriter`] is in the file,
//! at the offset the writer gave it, once [`Write::flush`] returned; and
//! [`DirectWriter::on_disk`] never counts a byte that has not been handed
//! to the kernel.** The read-back follower ([`super::readback`]) reads only
//! up to `on_disk`, so it never reads a byte still in our buffer.
//!
//! Bytes are gathered in a buffer of [`BUF`] bytes aligned to a page and
//! written with `O_DIRECT` a whole buffer at a time, at offsets that are
//! whole buffers: the device takes them from our memory, and no page of the
//! page cache is allocated, filled, written back and dropped for them (that
//! is ≈ 0.6 CPU-s per GiB on the benchmark machine, `benches/dock.rs`,
//! against ≈ 0.1 for the direct writes). `flush` — which the age writer
//! calls once, when it finishes the stream — turns `O_DIRECT` off and
//! writes the tail, which is not a whole block, through the page cache; the
//! caller's `fsync` then makes it durable with the rest. Where the file
//! system refuses `O_DIRECT`, every write goes straight through the page
//! cache, unbuffered, as before.
//!
//! Only dock ingest writes this way: its sealed copy is committed only once
//! it is finished, fsynced and read back, so holding up to [`BUF`] bytes of
//! ciphertext in memory loses nothing a crash could have kept (the original
//! stays on the camera). Live recording keeps the age writer's own
//! chunk-by-chunk writes, for its crash salvage.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;

/// Bytes written at a time with `O_DIRECT`.
pub const BUF: usize = 4 << 20;
/// Alignment of the buffer: a page, at least any device's logical block.
const ALIGN: usize = 4096;

/// A file written with `O_DIRECT` in whole buffers, its tail through the
/// page cache (see the module doc).
pub struct DirectWriter {
    file: File,
    space: Vec<u8>,
    /// Where the aligned buffer starts in `space`.
    skip: usize,
    filled: usize,
    /// Bytes handed to the kernel.
    on_disk: u64,
    direct: bool,
}

impl DirectWriter {
    /// Writes to `file` (new and empty) with `O_DIRECT` if its file system
    /// takes it, else straight through the page cache.
    pub fn new(file: File) -> DirectWriter {
        let direct = set_direct(&file, true).is_ok();
        Self::with(file, direct)
    }

    /// Writes to `file` with `O_DIRECT` only if `direct` (it is set already).
    fn with(file: File, direct: bool) -> DirectWriter {
        let space = if direct {
            vec![0u8; BUF + ALIGN]
        } else {
            Vec::new()
        };
        let skip = space.as_ptr().align_offset(ALIGN).min(ALIGN);
        DirectWriter {
            file,
            space,
            skip,
            filled: 0,
            on_disk: 0,
            direct,
        }
    }

    /// Bytes handed to the kernel so far.
    pub fn on_disk(&self) -> u64 {
        self.on_disk
    }

    /// Whether whole buffers are still written with `O_DIRECT`.
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// The file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Writes the buffer's `filled` bytes at the file's position.
    fn write_out(&mut self) -> io::Result<()> {
        let bytes = &self.space[self.skip..self.skip + self.filled];
        (&self.file).write_all(bytes)?;
        self.on_disk += self.filled as u64;
        self.filled = 0;
        Ok(())
    }
}

impl Write for DirectWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if !self.direct {
            let n = (&self.file).write(data)?;
            self.on_disk += n as u64;
            return Ok(n);
        }
        let n = data.len().min(BUF - self.filled);
        let at = self.skip + self.filled;
        self.space[at..at + n].copy_from_slice(&data[..n]);
        self.filled += n;
        if self.filled == BUF {
            self.write_out()?;
        }
        Ok(n)
    }

    /// Ends the direct writes: the tail (less than a buffer) is written
    /// through the page cache, and so is anything written after.
    fn flush(&mut self) -> io::Result<()> {
        if self.direct {
            set_direct(&self.file, false)?;
            self.direct = false;
            self.write_out()?;
            self.space = Vec::new();
        }
        Ok(())
    }
}

/// Turns `O_DIRECT` on or off for `file`.
fn set_direct(file: &File, on: bool) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on an fd we own; it reads no memory of ours.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let flags = if on {
        flags | libc::O_DIRECT
    } else {
        flags & !libc::O_DIRECT
    };
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pieces of uneven sizes across several buffers and a tail, as the
    /// age writer hands them over: the file holds exactly those bytes, and
    /// `on_disk` only ever counts bytes in the file.
    #[test]
    fn the_file_holds_every_byte_in_order_and_on_disk_never_runs_ahead() {
        let data: Vec<u8> = (0..(2 * BUF + 123_457))
            .map(|i| (i * 13 % 251) as u8)
            .collect();
        // O_DIRECT where the file system takes it, and the page cache.
        for cached in [false, true] {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("sealed");
            let file = File::create(&path).expect("create");
            let w = if cached {
                DirectWriter::with(file, false)
            } else {
                DirectWriter::new(file)
            };
            writes_every_byte(w, &path, &data);
        }
    }

    fn writes_every_byte(mut w: DirectWriter, path: &std::path::Path, data: &[u8]) {
        let mut at = 0;
        for size in [200, 65_552, 1 << 20, 7].iter().cycle() {
            if at == data.len() {
                break;
            }
            let end = (at + size).min(data.len());
            w.write_all(&data[at..end]).expect("write");
            at = end;
            let len = std::fs::metadata(path).expect("stat").len();
            assert!(w.on_disk() <= len, "{} > {len}", w.on_disk());
            assert!(w.on_disk() <= at as u64);
        }
        w.flush().expect("flush");
        assert!(!w.is_direct());
        w.file().sync_all().expect("fsync");
        assert_eq!(w.on_disk(), data.len() as u64);
        assert_eq!(std::fs::read(path).expect("read"), data);
    }
}
