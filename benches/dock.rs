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
//!   originals are kept so every round ingests the same files), on every
//!   core this process may use: per file the reader (read + SHA-256 of the
//!   original) ‖ the sealer (ChaCha20-Poly1305 + CRC-32, write, fsync) ‖ the
//!   follower (`sync_file_range`, page cache dropped, read back, SHA-256 +
//!   CRC-32), container probe, signed manifest, index row;
//! - the `sargs ingest --keep` binary under `taskset -c 0` (one core) and
//!   `taskset -c 0,1` (two cores);
//! - the same guarantees with standard tools, one file after another:
//!   `sha256sum` of the original, `age -r` (the age CLI), `sha256sum` of the
//!   output, `sync` of it, its cached pages dropped (`dd iflag=nocache
//!   count=0`), and a read-back `sha256sum` compared with the first.
//!
//! Before each run the previous output is deleted and the file system
//! synced, outside the timing; the recordings are in the page cache for
//! every run (they were just read). Reported: MiB/s per run (best, median),
//! CPU seconds per GiB, and the ratios to `cp` + `sync` and to the standard
//! tools of the same round. Then the cost of each pass per GiB on this CPU,
//! in memory on one core (`DOCK_PASS_MIB`, default 1024): SHA-256 by ring
//! and by RustCrypto's `sha2`, ChaCha20-Poly1305, CRC-32; and the kernel's
//! part of each I/O step the ingest makes, on a file of that size in
//! `DOCK_DIR` (user and system time of the thread). `DOCK_GIB=0` runs only
//! the passes.

// Test and measurement code: a panic here is a failed run with its reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::{cpu_time, env_usize, machine, median};
#[path = "dock/kernel.rs"]
mod kernel;

const CAMERA: &str = "bodycam-bench";

fn main() {
    let gib = env_usize("DOCK_GIB", 4);
    let file_mib = env_usize("DOCK_FILE_MIB", 256);
    let rounds = env_usize("DOCK_ROUNDS", 2);
    let dir = std::env::var_os("DOCK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("dock-bench"));
    println!("# sargs dock ingest benchmark\n\n{}\n", machine());
    if gib > 0 {
        runs(&dir, gib, file_mib, rounds);
    }
    let pass_mib = env_usize("DOCK_PASS_MIB", 1024);
    passes(pass_mib);
    kernel::passes(&dir, pass_mib);
}

/// The ingest, its anchor and the standard tools, `rounds` times each.
fn runs(dir: &Path, gib: usize, file_mib: usize, rounds: usize) {
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
    let (config, recipient, config_path) = config(dir);
    let bin = env!("CARGO_BIN_EXE_sargs");

    let names = [
        "cp + sync",
        "sargs ingest",
        "sargs ingest, taskset 1 core",
        "sargs ingest, taskset 2 cores",
        "standard tools",
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
            sync(dir);
            warm(&camera);
            let (c0, c1) = (cpu_time(libc::RUSAGE_SELF), cpu_time(libc::RUSAGE_CHILDREN));
            let t = Instant::now();
            match v {
                0 => cp_sync(&camera, &out),
                1 => ingest(&config, &camera),
                2 => ingest_cli(bin, &config_path, &camera, "0"),
                3 => ingest_cli(bin, &config_path, &camera, "0,1"),
                _ => standard_tools(&recipient, &camera, &out),
            }
            let s = t.elapsed().as_secs_f64();
            let c = (cpu_time(libc::RUSAGE_SELF) - c0) + (cpu_time(libc::RUSAGE_CHILDREN) - c1);
            println!(
                "round {round}: {:<30} {:7.2} s {:7.0} MiB/s  CPU {:.2} s  load {}",
                names[v],
                s,
                mib / s,
                c.as_secs_f64(),
                load()
            );
            secs[v].push(s);
            cpu[v].push(c.as_secs_f64());
        }
    }
    let gib_total = mib / 1024.0;
    println!("\n| run | best MiB/s | median MiB/s | CPU s per GiB (median) | vs cp + sync: best/best | median of per-round ratios | vs standard tools: median of per-round ratios | CPU per GiB vs standard tools |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let best = |v: &[f64]| v.iter().cloned().fold(f64::MAX, f64::min);
    let tools = names.len() - 1;
    for (i, name) in names.iter().enumerate() {
        let ratios: Vec<f64> = secs[0].iter().zip(&secs[i]).map(|(a, b)| a / b).collect();
        let vs_tools: Vec<f64> = secs[tools]
            .iter()
            .zip(&secs[i])
            .map(|(a, b)| a / b)
            .collect();
        println!(
            "| {name} | {:.0} | {:.0} | {:.2} | {:.2}× | {:.2}× | {:.2}× | {:.2}× |",
            mib / best(&secs[i]),
            mib / median(&secs[i]),
            median(&cpu[i]) / gib_total,
            best(&secs[0]) / best(&secs[i]),
            median(&ratios),
            median(&vs_tools),
            median(&cpu[i]) / median(&cpu[tools]),
        );
    }
}

/// The 1-minute load average, for the record.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_default()
}

/// CPU seconds per GiB of each pass the ingest makes, in memory, one core.
fn passes(mib: usize) {
    let block = vec![0x5au8; 1 << 20];
    let gib = mib as f64 / 1024.0;
    let time = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        f();
        t.elapsed().as_secs_f64() / gib
    };
    let sha = time(&mut || {
        let mut c = ring::digest::Context::new(&ring::digest::SHA256);
        for _ in 0..mib {
            c.update(&block);
        }
        std::hint::black_box(c.finish());
    });
    let rustcrypto = time(&mut || {
        use sha2::Digest as _;
        let mut c = sha2::Sha256::new();
        for _ in 0..mib {
            c.update(&block);
        }
        std::hint::black_box(c.finalize());
    });
    let key = ring::aead::LessSafeKey::new(
        ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, &[7u8; 32]).expect("key"),
    );
    let mut chunk = vec![0u8; sargs_core::seal::age::CHUNK_SIZE];
    let aead = time(&mut || {
        for i in 0..(mib as u64 * 16) {
            let mut n = [0u8; 12];
            n[3..11].copy_from_slice(&i.to_be_bytes());
            let tag = key
                .seal_in_place_separate_tag(
                    ring::aead::Nonce::assume_unique_for_key(n),
                    ring::aead::Aad::empty(),
                    &mut chunk,
                )
                .expect("seal");
            let _ = std::hint::black_box(tag);
        }
    });
    let crc = time(&mut || {
        let mut h = crc32fast::Hasher::new();
        for _ in 0..mib {
            h.update(&block);
        }
        std::hint::black_box(h.finalize());
    });
    println!(
        "\n| pass (ring unless named, crc32fast; one core, in memory, {mib} MiB) | CPU s per GiB | MiB/s |"
    );
    println!("|---|---:|---:|");
    for (name, s) in [
        ("SHA-256", sha),
        ("SHA-256 (sha2 0.11)", rustcrypto),
        ("ChaCha20-Poly1305", aead),
        ("CRC-32", crc),
    ] {
        println!("| {name} | {s:.3} | {:.0} |", 1024.0 / s);
    }
    // Three threads: reader (SHA-256), sealer (AEAD + CRC), follower (SHA-256 + CRC).
    let per_gib = 2.0 * sha + aead + 2.0 * crc;
    let stage = (sha + crc).max(aead + crc);
    println!(
        "\ncompute per GiB (2 × SHA-256 + AEAD + 2 × CRC-32): {per_gib:.2} CPU s; \
         compute-bound ceiling on 1 core {:.0} MiB/s, on 2 cores {:.0} MiB/s (slowest thread: {stage:.2} s per GiB)",
        1024.0 / per_gib,
        1024.0 / (per_gib / 2.0).max(stage)
    );
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

/// The agent config the ingest runs under (data directory `dir/data`), its
/// HQ recipient and its path.
fn config(dir: &Path) -> (sargs::config::Config, String, PathBuf) {
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
    let config = sargs::config::Config::load(&path).expect("bench config");
    (config, id.to_public().to_string(), path)
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

/// The `sargs ingest --keep` binary pinned to `cpus` with `taskset`.
fn ingest_cli(bin: &str, config: &Path, camera: &Path, cpus: &str) {
    let out = Command::new("taskset")
        .args(["-c", cpus, bin, "ingest", "--keep", "--camera", CAMERA])
        .arg("--config")
        .arg(config)
        .arg("--from")
        .arg(camera)
        .output()
        .expect("taskset (util-linux)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The same guarantees with standard tools, one file after another.
fn standard_tools(recipient: &str, camera: &Path, out: &Path) {
    let script = r#"set -e
r="$1"; cam="$2"; out="$3"
for f in "$cam"/DCIM/*; do
  o="$out/$(basename "$f").age"
  sha256sum "$f" > "$o.sha256"
  age -r "$r" -o "$o" "$f"
  w=$(sha256sum < "$o")
  sync "$o"
  dd if="$o" iflag=nocache count=0 status=none
  b=$(sha256sum < "$o")
  [ "$w" = "$b" ] || { echo "read-back mismatch: $o" >&2; exit 1; }
done
"#;
    let ok = Command::new("sh")
        .arg("-c")
        .arg(script)
        .args([
            "sh",
            recipient,
            &camera.display().to_string(),
            &out.display().to_string(),
        ])
        .status()
        .expect("sh, sha256sum, age, dd");
    assert!(ok.success());
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
