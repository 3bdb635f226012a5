//! The kernel's part of each I/O step of a dock ingest, per GiB, on a file
//! in `DOCK_DIR` (so on the disk the ingest writes to): user and system time
//! of the thread that makes the calls (`RUSAGE_THREAD`) and its wall time.
//! The steps are those of `src/dock/copy.rs` and `src/dock/readback.rs`,
//! in their order, with the sizes they use; the read-back is measured both
//! through the page cache (after its pages are dropped, as before) and with
//! `O_DIRECT` (as now), and the write both into the page cache (as before)
//! and with `O_DIRECT` (as now, `src/dock/direct.rs`).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::Instant;

/// User and system seconds of the calling thread.
fn thread_cpu() -> (f64, f64) {
    // SAFETY: getrusage fills the struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (tv(ru.ru_utime), tv(ru.ru_stime))
}

/// Prints one row: the step's user and system seconds per GiB and MiB/s.
fn row(name: &str, gib: f64, f: impl FnOnce()) {
    let (u0, s0) = thread_cpu();
    let t = Instant::now();
    f();
    let wall = t.elapsed().as_secs_f64();
    let (u1, s1) = thread_cpu();
    println!(
        "| {name} | {:.3} | {:.3} | {:.0} |",
        (u1 - u0) / gib,
        (s1 - s0) / gib,
        gib * 1024.0 / wall
    );
}

fn drop_pages(file: &File) {
    // SAFETY: an fd we own; the call reads no memory of ours.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
}

/// Reads `file` to its end in `buf`-sized `pread`s.
fn read_all(file: &File, buf: &mut [u8]) {
    let mut at = 0u64;
    loop {
        let n = file.read_at(buf, at).expect("read back");
        if n == 0 {
            break;
        }
        at += n as u64;
    }
}

pub fn passes(dir: &Path, mib: usize) {
    let gib = mib as f64 / 1024.0;
    std::fs::create_dir_all(dir).expect("DOCK_DIR");
    let original = dir.join("pass-original");
    let sealed = dir.join("pass-sealed");
    let _ = std::fs::remove_file(&sealed);
    let block: Vec<u8> = (0..1usize << 20).map(|i| (i * 7 % 251) as u8).collect();
    {
        let mut f = File::create(&original).expect("original");
        for _ in 0..mib {
            f.write_all(&block).expect("original");
        }
        f.sync_all().expect("original");
    }
    let mut buf = vec![0u8; 2 << 20];
    let skip = buf.as_ptr().align_offset(4096);
    let aligned = &mut buf[skip..skip + (1 << 20)];
    let mut read_original = || {
        let mut f = File::open(&original).expect("original");
        while f.read(aligned).expect("original") > 0 {}
    };
    read_original(); // into the page cache, as the bench's recordings are

    println!("\n| kernel step ({mib} MiB on the ingest's disk) | user s per GiB | system s per GiB | MiB/s |");
    println!("|---|---:|---:|---:|");
    row(
        "read the original from the page cache, 1 MiB `read`",
        gib,
        read_original,
    );
    let _ = std::fs::remove_file(&original); // room on the disk for the copies
    let mut chunk = vec![0x33u8; sargs_core::seal::age::CHUNK_SIZE + 16];
    row(
        "copy 1 MiB blocks into the age writer (`memcpy`)",
        gib,
        || {
            for _ in 0..mib {
                for piece in block.chunks(chunk.len() - 16) {
                    chunk[..piece.len()].copy_from_slice(piece);
                    std::hint::black_box(&chunk);
                }
            }
        },
    );
    let file = std::cell::OnceCell::new();
    row(
        "write the ciphertext into the page cache, 64 KiB + 16 `write`s",
        gib,
        || {
            let mut f = File::options()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&sealed)
                .expect("sealed");
            for _ in 0..mib * 16 {
                f.write_all(&chunk).expect("sealed");
            }
            let _ = file.set(f);
        },
    );
    let file = file.get().expect("sealed");
    let len = file.metadata().expect("sealed").len();
    row(
        "write it out, `sync_file_range` in 16 MiB steps",
        gib,
        || {
            let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
                | libc::SYNC_FILE_RANGE_WRITE
                | libc::SYNC_FILE_RANGE_WAIT_AFTER;
            let mut at = 0;
            while at < len {
                let n = (16u64 << 20).min(len - at);
                // SAFETY: an fd we own; the call reads no memory of ours.
                unsafe { libc::sync_file_range(file.as_raw_fd(), at as i64, n as i64, flags) };
                at += n;
            }
            file.sync_all().expect("fsync");
        },
    );
    row("drop its clean pages, `fadvise(DONTNEED)`", gib, || {
        drop_pages(file)
    });
    row(
        "read it back through the page cache, 1 MiB `pread`",
        gib,
        || read_all(file, aligned),
    );
    row("drop the pages read back", gib, || drop_pages(file));
    let direct = File::options()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(&sealed)
        .expect("O_DIRECT");
    row("read it back with `O_DIRECT`, 1 MiB `pread`", gib, || {
        read_all(&direct, aligned)
    });
    let _ = std::fs::remove_file(&sealed);
    let space = vec![0x33u8; (4 << 20) + 4096];
    let skip = space.as_ptr().align_offset(4096);
    let whole = &space[skip..skip + (4 << 20)];
    row(
        "write the ciphertext with `O_DIRECT`, 4 MiB `write`s, `fsync`",
        gib,
        || {
            let mut f = File::options()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_DIRECT)
                .open(&sealed)
                .expect("O_DIRECT");
            for _ in 0..mib / 4 {
                f.write_all(whole).expect("sealed");
            }
            f.sync_all().expect("fsync");
        },
    );
    drop(space);
    let _ = std::fs::remove_file(&sealed);
}
