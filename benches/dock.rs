//! Dock ingest throughput: `sargs ingest` of a docked camera's recordings
//! measured side by side with `cp` + `sync` of the same files to the same
//! disk, in the same rounds.
//!
//! ```text
//! cargo bench --bench dock                 # 4 GiB: 16 recordings of 256 MiB
//! DOCK_GIB=1 DOCK_ROUNDS=3 cargo bench --bench dock
//! ```
//!
//! The recordings are one real H.264 MP4 made by GStreamer (`DOCK_FILE_MIB`,
//! default 256 MiB, x264 at a high bitrate) copied `DOCK_GIB × 1024 /
//! DOCK_FILE_MIB` times, each copy made distinct by a trailing MP4 `free` box
//! (so none is recognised as sealed before). They live in `DOCK_DIR`
//! (default `target/tmp/dock-bench`), on the same file system as every
//! output. Each round runs, in rotating order:
//!
//! - `cp -r CAMERA/. OUT && sync OUT/*/*` — the anchor: a plain copy made durable;
//! - `sargs ingest`: the library call behind `sargs ingest --keep` (the
//!   originals are kept so every round ingests the same files): per file two
//!   threads (read + SHA-256 of the original ‖ age sealing + SHA-256 of the
//!   ciphertext), fsync, the sealed copy read back from the disk (its cached
//!   pages dropped first) and hashed, container probe, signed manifest, index row;
//! - the copy engine alone with two threads (`sargs::dock::copy::seal_from`
//!   + fsync + `verify_on_disk`), and
//! - the same on one thread (read, hash, seal in one loop; bench only) — the
//!   difference is what the second core buys.
//!
//! Before each run the previous output is deleted and the file system
//! synced, outside the timing; the recordings are in the page cache for
//! every run (they were just read). Reported: MiB/s per run (best, median),
//! CPU seconds, and the ratio to `cp` + `sync` of the same round.

// Test and measurement code: a panic here is a failed run with its reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sargs_core::seal::age::AgeWriter;
use tokio_util::sync::CancellationToken;

mod common;
use common::{cpu_time, env_usize, machine, median};

const CAMERA: &str = "bodycam-bench";

fn main() {
    let gib = env_usize("DOCK_GIB", 4);
    let file_mib = env_usize("DOCK_FILE_MIB", 256);
    let rounds = env_usize("DOCK_ROUNDS", 2);
    let dir = std::env::var_os("DOCK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("dock-bench"));
    println!("# sargs dock ingest benchmark\n\n{}\n", machine());
    let camera = dir.join("camera");
    let files = (gib * 1024).div_ceil(file_mib);
    recordings(&camera, file_mib, files);
    let total: u64 = std::fs::read_dir(camera.join("DCIM"))
        .expect("recordings")
        .flatten()
        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .sum();
    let mib = total as f64 / (1 << 20) as f64;
    println!("{files} recordings, {mib:.0} MiB in {}\n", camera.display());
    let config = config(&dir);

    let names = [
        "cp + sync",
        "sargs ingest",
        "copy engine, 2 threads",
        "copy engine, 1 thread",
    ];
    let mut secs: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    for round in 0..rounds {
        for k in 0..names.len() {
            let v = (k + round) % names.len();
            let out = dir.join("out");
            let _ = std::fs::remove_dir_all(&out);
            let _ = std::fs::remove_dir_all(config.agent.data_dir.clone());
            std::fs::create_dir_all(&out).expect("out");
            sync(&dir);
            warm(&camera);
            let (c0, c1) = (cpu_time(libc::RUSAGE_SELF), cpu_time(libc::RUSAGE_CHILDREN));
            let t = Instant::now();
            match v {
                0 => cp_sync(&camera, &out),
                1 => ingest(&config, &camera),
                2 => engine(&camera, &out, &config, true),
                _ => engine(&camera, &out, &config, false),
            }
            let s = t.elapsed().as_secs_f64();
            let c = (cpu_time(libc::RUSAGE_SELF) - c0) + (cpu_time(libc::RUSAGE_CHILDREN) - c1);
            println!(
                "round {round}: {:<24} {:7.2} s {:7.0} MiB/s  CPU {:.2} s",
                names[v],
                s,
                mib / s,
                c.as_secs_f64()
            );
            secs[v].push(s);
            cpu[v].push(c.as_secs_f64());
        }
    }
    println!("\n| run | best MiB/s | median MiB/s | CPU s (median) | vs cp + sync: best/best | median of per-round ratios |");
    println!("|---|---:|---:|---:|---:|---:|");
    let best = |v: &[f64]| v.iter().cloned().fold(f64::MAX, f64::min);
    for (i, name) in names.iter().enumerate() {
        let ratios: Vec<f64> = secs[0].iter().zip(&secs[i]).map(|(a, b)| a / b).collect();
        println!(
            "| {name} | {:.0} | {:.0} | {:.2} | {:.2}× | {:.2}× |",
            mib / best(&secs[i]),
            mib / median(&secs[i]),
            median(&cpu[i]),
            best(&secs[0]) / best(&secs[i]),
            median(&ratios)
        );
    }
}

/// One real MP4 of about `mib` MiB, copied `n` times into `camera/DCIM`,
/// each copy ending in a distinct `free` box.
fn recordings(camera: &Path, mib: usize, n: usize) {
    let dcim = camera.join("DCIM");
    let last = dcim.join(format!("VID{:05}.MP4", n - 1));
    if last.exists() && std::fs::read_dir(&dcim).map(|d| d.count()).unwrap_or(0) == n {
        return;
    }
    let _ = std::fs::remove_dir_all(camera);
    std::fs::create_dir_all(&dcim).expect("camera");
    let seed = camera.join("seed.mp4");
    // ~60 Mbit/s of noise: 256 MiB is about 36 s of video.
    let frames = (mib as u64 * 8 * 1024 * 1024 / 60_000_000 * 25).max(25);
    eprintln!("encoding a {mib} MiB test recording ({frames} frames)…");
    let ok = Command::new("gst-launch-1.0")
        .args([
            "-q",
            "videotestsrc",
            &format!("num-buffers={frames}"),
            "pattern=snow",
            "!",
        ])
        .args([
            "video/x-raw,format=I420,width=640,height=480,framerate=25/1",
            "!",
        ])
        .args([
            "x264enc",
            "speed-preset=ultrafast",
            "bitrate=60000",
            "!",
            "h264parse",
            "!",
        ])
        .args([
            "mp4mux",
            "!",
            "filesink",
            &format!("location={}", seed.display()),
        ])
        .status()
        .expect("gst-launch-1.0 (gstreamer1.0-tools)");
    assert!(ok.success(), "encoding the test recording failed");
    let body = std::fs::read(&seed).expect("seed");
    for i in 0..n {
        let mut f = std::fs::File::create(dcim.join(format!("VID{i:05}.MP4"))).expect("copy");
        f.write_all(&body).expect("write");
        // An MP4 `free` box: size, type, payload (the copy's number).
        f.write_all(&16u32.to_be_bytes()).expect("box");
        f.write_all(b"free").expect("box");
        f.write_all(&(i as u64).to_be_bytes()).expect("box");
    }
    std::fs::remove_file(&seed).expect("seed");
    sync(camera);
}

/// The agent config the ingest runs under (data directory `dir/data`).
fn config(dir: &Path) -> sargs::config::Config {
    let id = age::x25519::Identity::generate();
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, sargs::demo::POLICY_PRESET).expect("policy");
    let text = format!(
        "[agent]\nid = \"bench-gw\"\ndata_dir = \"data\"\npolicy = \"policy.toml\"\nmin_free_mb = 1\n\n\
         [seal]\nrecipients = [\"{}\"]\n\n[dock]\npurpose = \"public-order-threats\"\n\n\
         [[dock.camera]]\nserial = \"BENCH\"\nid = \"{CAMERA}\"\nofficer = \"P-0001\"\n",
        id.to_public()
    );
    let path = dir.join("sargs.toml");
    std::fs::write(&path, text).expect("config");
    sargs::config::Config::load(&path).expect("bench config")
}

fn cp_sync(camera: &Path, out: &Path) {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(r#"cp -r "$1/." "$2" && sync "$2"/*/*"#)
        .args([
            "sh",
            &camera.display().to_string(),
            &out.display().to_string(),
        ])
        .status()
        .expect("cp");
    assert!(ok.success());
}

fn ingest(config: &sargs::config::Config, camera: &Path) {
    let f = sargs::dock::manual::ingest(config, camera, CAMERA, Some(true)).expect("ingest");
    assert!(f.complete && f.failed == 0, "{f:?}");
}

/// The copy engine on every recording: seal, fsync, read back; with two
/// threads (the library) or one (here).
fn engine(camera: &Path, out: &Path, config: &sargs::config::Config, threaded: bool) {
    let cancel = CancellationToken::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(camera.join("DCIM"))
        .expect("recordings")
        .flatten()
        .map(|e| e.path())
        .collect();
    paths.sort();
    for (i, p) in paths.iter().enumerate() {
        let src = std::fs::File::open(p).expect("open");
        let len = src.metadata().expect("meta").len();
        let dst = out.join(format!("{i:010}.mp4.age"));
        let file = std::fs::File::create(&dst).expect("create");
        let mut w = AgeWriter::new(file, &config.recipients).expect("age");
        if threaded {
            sargs::dock::copy::seal_from(&src, len, &mut w, &cancel, &|_| {}).expect("seal");
        } else {
            one_thread(&src, &mut w);
        }
        let (file, summary) = w.finish().expect("finish");
        file.sync_all().expect("fsync");
        sargs::dock::copy::verify_on_disk(&dst, &summary).expect("read back");
    }
}

/// Read, SHA-256 of the original and sealing in one loop on this thread.
fn one_thread(mut src: &std::fs::File, w: &mut AgeWriter<std::fs::File>) {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; sargs::dock::copy::BLOCK];
    loop {
        let n = src.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
        w.write_all(&buf[..n]).expect("seal");
    }
    std::hint::black_box(ctx.finish());
}

/// Reads every recording once, so that all runs start from the page cache.
fn warm(camera: &Path) {
    let mut buf = vec![0u8; 1 << 20];
    for e in std::fs::read_dir(camera.join("DCIM"))
        .expect("recordings")
        .flatten()
    {
        let mut f = std::fs::File::open(e.path()).expect("open");
        while f.read(&mut buf).expect("read") > 0 {}
    }
}

fn sync(dir: &Path) {
    let _ = Command::new("sync").arg("-f").arg(dir).status();
    std::thread::sleep(Duration::from_millis(200));
}
