//! Sealing throughput: `sargs_core::seal::age::AgeWriter` measured side by side with
//! its anchors, in the same process and the same rounds.
//!
//! ```text
//! cargo bench --bench seal              # both parts
//! cargo bench --bench seal -- mem       # in memory only
//! cargo bench --bench seal -- file      # disk to disk only (AgeWriter vs the age CLI)
//! ```
//!
//! Part 1, in memory (`SEAL_MEM_MIB`, default 256 MiB, `SEAL_MEM_ROUNDS`, default 7):
//! every variant processes the same buffer in 64 KiB chunks (age's STREAM chunk):
//!
//! - `ring AEAD`: ChaCha20-Poly1305 sealing each chunk in place (the anchor);
//! - `ring SHA-256`: SHA-256 over the same bytes, alone;
//! - `AEAD + SHA-256`: both on one thread, hashing each sealed chunk and its tag —
//!   the least work the format needs (the manifest carries the ciphertext's SHA-256);
//! - `AgeWriter<io::Sink>`: the agent's writer, fed 64 KiB writes;
//! - `AEAD ‖ SHA-256 (2nd thread)`: a prototype, here only, of hashing on a second
//!   thread (sealed chunks handed over through a bounded channel);
//! - `AgeWriter<io::Sink>` with `Check::Crc32`: the dock ingest's sealer, whose
//!   ciphertext SHA-256 is taken on another core from the bytes read back.
//!
//! Each round runs every variant once, starting with a different one each round.
//! Reported: best and median throughput, CPU seconds (process user+system time,
//! both threads for the threaded variant), and the ratio to the anchor —
//! best against best, and the median of the per-round ratios.
//!
//! Part 2, disk to disk (`SEAL_FILE_MIB`, default 1024 MiB, `SEAL_FILE_ROUNDS`,
//! default 5, in `SEAL_DIR`, default `target/tmp/seal-bench`): the same input file
//! sealed, in rotating order each round, by
//!
//! - `AgeWriter<File>`: read in 1 MiB pieces, written in 64 KiB chunks straight to
//!   the file as the agent does, SHA-256 of the ciphertext computed on the way;
//! - `age -r RECIPIENT -o OUT IN` (`SEAL_AGE_CLI`, default `/usr/bin/age`), which
//!   only encrypts;
//! - the same CLI run followed by ring's SHA-256 of its output read back: the work
//!   AgeWriter does, done with the CLI.
//!
//! The input is in the page cache for all. No writer fsyncs inside its own time;
//! the table shows that time and, separately, the time until the output was
//! fsynced by the bench (the same `fsync` on every output). Before each run the
//! previous output is deleted and the file system synced, outside the timing.
//! Finally AgeWriter's output is decrypted with `age -d` as a check.

// Test and measurement code: a panic here is a failed run with its reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::hint::black_box;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Instant;

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use ring::digest::{self, SHA256};
use sargs_core::seal::age::{AgeWriter, Check, CHUNK_SIZE};
use sargs_core::seal::Recipient;

mod common;
use common::{cpu_time, env_usize, machine, median};

const TAG_LEN: usize = 16;
const MIB: f64 = 1024.0 * 1024.0;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let wanted = |part: &str| {
        let parts: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
        parts.is_empty() || parts.iter().any(|a| a.as_str() == part)
    };
    println!("# sargs sealing benchmark\n");
    println!("{}\n", machine());
    if wanted("mem") {
        in_memory(
            env_usize("SEAL_MEM_MIB", 256),
            env_usize("SEAL_MEM_ROUNDS", 7),
        );
    }
    if wanted("file") {
        let dir = std::env::var_os("SEAL_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("seal-bench"));
        let cli = std::env::var_os("SEAL_AGE_CLI")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/age"));
        disk_to_disk(
            &dir,
            &cli,
            env_usize("SEAL_FILE_MIB", 1024),
            env_usize("SEAL_FILE_ROUNDS", 5),
        );
    }
}

/// Deterministic, incompressible-looking bytes (xorshift64).
fn test_data(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

fn payload_key() -> LessSafeKey {
    let key = [0x42u8; 32];
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &key).expect("ChaCha20-Poly1305 key"))
}

/// age's STREAM nonce: 11-byte big-endian counter, last-chunk flag.
fn nonce(counter: u64, last: bool) -> Nonce {
    let mut n = [0u8; aead::NONCE_LEN];
    n[3..11].copy_from_slice(&counter.to_be_bytes());
    n[11] = u8::from(last);
    Nonce::assume_unique_for_key(n)
}

fn recipient() -> (age::x25519::Identity, Recipient) {
    let id = age::x25519::Identity::generate();
    let r = id
        .to_public()
        .to_string()
        .parse()
        .expect("age crate recipients parse");
    (id, r)
}

// ---------------------------------------------------------------------------
// Part 1: in memory

type Variant = (&'static str, fn(&mut [u8], &[Recipient]));

fn in_memory(mib: usize, rounds: usize) {
    let (_, r) = recipient();
    let recipients = [r];
    let mut data = test_data(mib << 20);
    let variants: [Variant; 6] = [
        (
            "ring AEAD (ChaCha20-Poly1305, in place) — anchor",
            aead_only,
        ),
        ("ring SHA-256 alone", sha_only),
        (
            "ring AEAD + SHA-256 of ciphertext, one thread",
            aead_then_sha,
        ),
        ("`AgeWriter<io::Sink>`, 64 KiB writes", age_writer),
        (
            "ring AEAD ‖ SHA-256 on a 2nd thread (prototype)",
            aead_sha_threaded,
        ),
        (
            "`AgeWriter<io::Sink>`, `Check::Crc32` (the dock's sealer; SHA-256 on the read-back thread)",
            age_writer_crc,
        ),
    ];
    println!(
        "## In memory: {mib} MiB in 64 KiB chunks, {rounds} rounds (+1 warm-up)\n\n\
         Command: `cargo bench --bench seal -- mem` \
         (SEAL_MEM_MIB={mib} SEAL_MEM_ROUNDS={rounds})\n"
    );
    // wall[v][round], cpu[v][round]
    let mut wall = vec![Vec::new(); variants.len()];
    let mut cpu = vec![Vec::new(); variants.len()];
    for round in 0..=rounds {
        for k in 0..variants.len() {
            let v = (round + k) % variants.len();
            let (c0, t0) = (cpu_time(libc::RUSAGE_SELF), Instant::now());
            (variants[v].1)(&mut data, &recipients);
            let (t, c) = (t0.elapsed(), cpu_time(libc::RUSAGE_SELF) - c0);
            if round > 0 {
                wall[v].push(t.as_secs_f64());
                cpu[v].push(c.as_secs_f64());
            }
        }
    }
    let size = (mib << 20) as f64;
    println!(
        "| variant | best MiB/s | median MiB/s | CPU s per GiB (median) | vs anchor, best/best | vs anchor, median of per-round ratios |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (v, (name, _)) in variants.iter().enumerate() {
        let ratios: Vec<f64> = (0..rounds).map(|r| wall[0][r] / wall[v][r]).collect();
        println!(
            "| {name} | {:.0} | {:.0} | {:.3} | {:.2}× | {:.2}× |",
            size / MIB / min(&wall[v]),
            size / MIB / median(&wall[v]),
            median(&cpu[v]) * (1u64 << 30) as f64 / size,
            min(&wall[0]) / min(&wall[v]),
            median(&ratios),
        );
    }
    println!(
        "\nRatios are throughput relative to the anchor (> 1 is faster). \
         For reference, one 1080p camera at 4 Mbit/s is 0.48 MiB/s.\n"
    );
}

fn aead_only(data: &mut [u8], _: &[Recipient]) {
    let key = payload_key();
    let n = data.len().div_ceil(CHUNK_SIZE);
    for (i, chunk) in data.chunks_mut(CHUNK_SIZE).enumerate() {
        let tag = key
            .seal_in_place_separate_tag(nonce(i as u64, i + 1 == n), Aad::empty(), chunk)
            .expect("seal");
        let _ = black_box(tag);
    }
}

fn sha_only(data: &mut [u8], _: &[Recipient]) {
    let mut ctx = digest::Context::new(&SHA256);
    for chunk in data.chunks(CHUNK_SIZE) {
        ctx.update(chunk);
    }
    black_box(ctx.finish());
}

fn aead_then_sha(data: &mut [u8], _: &[Recipient]) {
    let key = payload_key();
    let mut ctx = digest::Context::new(&SHA256);
    let n = data.len().div_ceil(CHUNK_SIZE);
    for (i, chunk) in data.chunks_mut(CHUNK_SIZE).enumerate() {
        let tag = key
            .seal_in_place_separate_tag(nonce(i as u64, i + 1 == n), Aad::empty(), chunk)
            .expect("seal");
        ctx.update(chunk);
        ctx.update(tag.as_ref());
    }
    black_box(ctx.finish());
}

fn age_writer(data: &mut [u8], recipients: &[Recipient]) {
    let mut w = AgeWriter::new(io::sink(), recipients).expect("age header");
    for chunk in data.chunks(CHUNK_SIZE) {
        w.write_all(chunk).expect("write");
    }
    black_box(w.finish().expect("finish").1);
}

fn age_writer_crc(data: &mut [u8], recipients: &[Recipient]) {
    let mut w = AgeWriter::with_check(io::sink(), recipients, Check::Crc32).expect("age header");
    for chunk in data.chunks(CHUNK_SIZE) {
        w.write_all(chunk).expect("write");
    }
    black_box(w.finish_unhashed().expect("finish").1);
}

/// Seals on this thread; a second thread hashes the sealed chunks in order.
/// Ciphertext buffers circulate between the two (4 in flight at most).
fn aead_sha_threaded(data: &mut [u8], _: &[Recipient]) {
    const IN_FLIGHT: usize = 4;
    let key = payload_key();
    let (to_hasher, sealed) = mpsc::sync_channel::<Vec<u8>>(IN_FLIGHT);
    let (give_back, free) = mpsc::channel::<Vec<u8>>();
    for _ in 0..IN_FLIGHT {
        give_back
            .send(Vec::with_capacity(CHUNK_SIZE + TAG_LEN))
            .expect("pool");
    }
    let hasher = std::thread::spawn(move || {
        let mut ctx = digest::Context::new(&SHA256);
        for buf in sealed {
            ctx.update(&buf);
            let _ = give_back.send(buf);
        }
        ctx.finish()
    });
    let n = data.len().div_ceil(CHUNK_SIZE);
    for (i, chunk) in data.chunks(CHUNK_SIZE).enumerate() {
        let mut buf = free.recv().expect("a free buffer");
        buf.clear();
        buf.extend_from_slice(chunk);
        let tag = key
            .seal_in_place_separate_tag(nonce(i as u64, i + 1 == n), Aad::empty(), &mut buf)
            .expect("seal");
        buf.extend_from_slice(tag.as_ref());
        // (The agent would write `buf` to the file here, before handing it over.)
        to_hasher.send(buf).expect("hasher alive");
    }
    drop(to_hasher);
    black_box(hasher.join().expect("hasher thread"));
}

// ---------------------------------------------------------------------------
// Part 2: disk to disk, AgeWriter<File> vs the age CLI

struct Run {
    /// Until the writer returned (AgeWriter finished / the CLI exited / the hash
    /// was computed).
    wall: f64,
    /// Until the output was also fsynced.
    durable: f64,
    /// User + system CPU seconds, this process and the CLI together.
    cpu: f64,
}

const WRITERS: [&str; 3] = [
    "`AgeWriter<File>` (encrypt + SHA-256)",
    "`age` CLI (encrypt only)",
    "`age` CLI, then ring SHA-256 of its output (same work as AgeWriter)",
];

fn disk_to_disk(dir: &Path, cli: &Path, mib: usize, rounds: usize) {
    println!(
        "## Disk to disk: {mib} MiB file, {rounds} rounds (+1 warm-up), `AgeWriter<File>` vs `{}`\n\n\
         Command: `cargo bench --bench seal -- file` \
         (SEAL_FILE_MIB={mib} SEAL_FILE_ROUNDS={rounds}), files in `{}`\n",
        cli.display(),
        dir.display()
    );
    if !cli.exists() {
        println!(
            "SKIPPED: {} is missing (Debian package `age`).\n",
            cli.display()
        );
        return;
    }
    std::fs::create_dir_all(dir).expect("bench dir");
    let input = dir.join("in.bin");
    let size = (mib << 20) as u64;
    if std::fs::metadata(&input).map(|m| m.len()).ok() != Some(size) {
        let mut f = File::create(&input).expect("create input");
        let block = test_data(8 << 20);
        for _ in 0..(mib / 8).max(1) {
            f.write_all(&block).expect("write input");
        }
        f.set_len(size).expect("size input");
        f.sync_all().expect("fsync input");
    }
    // Into the page cache, for every writer alike.
    io::copy(
        &mut File::open(&input).expect("open input"),
        &mut io::sink(),
    )
    .expect("read input");

    let (identity, r) = recipient();
    let recipients = [r.clone()];
    let outputs: Vec<PathBuf> = (0..WRITERS.len())
        .map(|w| dir.join(format!("out-{w}.age")))
        .collect();
    let mut runs: Vec<Vec<Run>> = (0..WRITERS.len()).map(|_| Vec::new()).collect();
    for round in 0..=rounds {
        for k in 0..WRITERS.len() {
            let who = (round + k) % WRITERS.len();
            let out = &outputs[who];
            let _ = std::fs::remove_file(out);
            // SAFETY: sync(2) takes no arguments and cannot fail.
            unsafe { libc::sync() };
            let run = match who {
                0 => seal_with_agewriter(&input, out, &recipients),
                1 => seal_with_cli(cli, &r, &input, out, false),
                _ => seal_with_cli(cli, &r, &input, out, true),
            };
            if round > 0 {
                runs[who].push(run);
            }
        }
    }
    // The sealed outputs must be real age files of the same plaintext.
    let check = check_decrypts(cli, &identity, &outputs[0], dir, size);
    let lens: Vec<u64> = outputs
        .iter()
        .map(|o| std::fs::metadata(o).map_or(0, |m| m.len()))
        .collect();
    for o in &outputs {
        let _ = std::fs::remove_file(o);
    }

    let mb = size as f64 / MIB;
    let col = |who: usize, f: fn(&Run) -> f64| -> Vec<f64> { runs[who].iter().map(f).collect() };
    // Throughput of AgeWriter relative to `who`, per round (> 1: AgeWriter faster).
    let vs = |who: usize, f: fn(&Run) -> f64| -> (f64, f64) {
        let per_round: Vec<f64> = (0..rounds)
            .map(|i| f(&runs[who][i]) / f(&runs[0][i]))
            .collect();
        (min(&col(who, f)) / min(&col(0, f)), median(&per_round))
    };
    println!(
        "| writer | best MiB/s | median MiB/s | best MiB/s incl. fsync | median MiB/s incl. fsync | CPU s (median) | AgeWriter vs this: throughput best/best, median | incl. fsync | output bytes |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (who, name) in WRITERS.iter().enumerate() {
        let (wall, durable, cpu) = (
            col(who, |r| r.wall),
            col(who, |r| r.durable),
            col(who, |r| r.cpu),
        );
        let (b, m) = vs(who, |r| r.wall);
        let (bd, md) = vs(who, |r| r.durable);
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} | {b:.2}×, {m:.2}× | {bd:.2}×, {md:.2}× | {} |",
            mb / min(&wall),
            mb / median(&wall),
            mb / min(&durable),
            mb / median(&durable),
            median(&cpu),
            lens[who]
        );
    }
    println!(
        "\nNeither writer fsyncs inside its own time (\"MiB/s\"); \"incl. fsync\" adds the \
         bench's fsync of the output. CPU is user+system of the bench process and the CLI.\n"
    );
    println!("Check: {check}\n");
}

fn seal_with_agewriter(input: &Path, out: &Path, recipients: &[Recipient]) -> Run {
    let (c0, t0) = (cpu_time(libc::RUSAGE_SELF), Instant::now());
    let mut src = File::open(input).expect("open input");
    let dst = File::create(out).expect("create output");
    let mut w = AgeWriter::new(dst, recipients).expect("age header");
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = src.read(&mut buf).expect("read input");
        if n == 0 {
            break;
        }
        w.write_all(&buf[..n]).expect("seal");
    }
    let (file, summary) = w.finish().expect("finish");
    black_box(summary);
    let wall = t0.elapsed().as_secs_f64();
    file.sync_all().expect("fsync output");
    let durable = t0.elapsed().as_secs_f64();
    let cpu = (cpu_time(libc::RUSAGE_SELF) - c0).as_secs_f64();
    Run { wall, durable, cpu }
}

/// `age -r R -o OUT IN`, then (with `hash`) the SHA-256 of OUT read back.
fn seal_with_cli(cli: &Path, r: &Recipient, input: &Path, out: &Path, hash: bool) -> Run {
    let cpu_now = || cpu_time(libc::RUSAGE_CHILDREN) + cpu_time(libc::RUSAGE_SELF);
    let (c0, t0) = (cpu_now(), Instant::now());
    let status = Command::new(cli)
        .arg("-r")
        .arg(r.to_string())
        .arg("-o")
        .arg(out)
        .arg(input)
        .status()
        .expect("run the age CLI");
    assert!(status.success(), "age CLI failed: {status}");
    if hash {
        let mut f = File::open(out).expect("open CLI output");
        let mut ctx = digest::Context::new(&SHA256);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).expect("read CLI output");
            if n == 0 {
                break;
            }
            ctx.update(&buf[..n]);
        }
        black_box(ctx.finish());
    }
    let wall = t0.elapsed().as_secs_f64();
    File::open(out)
        .and_then(|f| f.sync_all())
        .expect("fsync output");
    let durable = t0.elapsed().as_secs_f64();
    let cpu = (cpu_now() - c0).as_secs_f64();
    Run { wall, durable, cpu }
}

/// Decrypts AgeWriter's output with the age CLI and counts the plaintext bytes.
fn check_decrypts(
    cli: &Path,
    identity: &age::x25519::Identity,
    sealed: &Path,
    dir: &Path,
    size: u64,
) -> String {
    let key = dir.join("identity.txt");
    let secret = age::secrecy::ExposeSecret::expose_secret(&identity.to_string()).to_string();
    std::fs::write(&key, secret + "\n").expect("write identity");
    let child = Command::new(cli)
        .arg("-d")
        .arg("-i")
        .arg(&key)
        .arg(sealed)
        .stdout(std::process::Stdio::piped())
        .spawn();
    let result = match child {
        Ok(mut child) => {
            let n = child
                .stdout
                .take()
                .map(|mut o| io::copy(&mut o, &mut io::sink()).unwrap_or(0))
                .unwrap_or(0);
            match child.wait() {
                Ok(s) if s.success() && n == size => {
                    format!("`age -d` decrypts AgeWriter's output to {n} bytes (as sealed)")
                }
                Ok(s) => format!("FAILED: `age -d` gave {n} bytes of {size}, {s}"),
                Err(e) => format!("FAILED: {e}"),
            }
        }
        Err(e) => format!("FAILED: cannot run {}: {e}", cli.display()),
    };
    let _ = std::fs::remove_file(&key);
    result
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}
