//! The upload bandwidth cap (`[offload] max_kib_s`): one sealed-sized file
//! uploaded by the agent's own S3 client (`sargs::offload::s3::Store`) to a
//! real Garage on 127.0.0.1, without a cap (the anchor: what the loopback
//! link and Garage take) and under two caps, in the same rounds.
//!
//! ```text
//! cargo bench --bench offload
//! OFFLOAD_MIB=32 OFFLOAD_ROUNDS=3 OFFLOAD_CAPS_KIB=4096,1024 cargo bench --bench offload
//! ```
//!
//! Reported per run: MiB/s (median of the rounds, and the slowest and
//! fastest round), the ratio to its cap, and the CPU time of this process
//! (the client: signing, reading, sending; Garage is another process) per
//! GiB sent. The cap holds if that ratio is
//! at most 1.0 (plus one tenth of a second's slice over the whole upload)
//! and is met closely if it is near 1.0. Each upload is a multipart upload
//! in 8 MiB parts, as the agent sends a segment larger than its part size;
//! the time is from the first request to the completed upload.

// Test and measurement code: a panic here is a failed run with its reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

mod common;
use common::{cpu_time, env_usize, machine, median};

#[path = "../tests/support/garage.rs"]
#[allow(dead_code)]
mod garage;

/// What `garage` needs of the tests' Mosquitto support.
mod mosquitto {
    /// A port free on 127.0.0.1 at the time of asking.
    pub fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port")
    }
}

use garage::{Garage, Key};

const BUCKET: &str = "evidence";

fn store(g: &Garage, key: &Key, cap_kib: Option<u64>) -> sargs::offload::s3::Store {
    let mut settings = g.settings(key, BUCKET, 8);
    settings.max_bytes_s = cap_kib.map(|k| k << 10);
    sargs::offload::s3::Store::new(&settings).expect("client")
}

fn main() {
    let mib = env_usize("OFFLOAD_MIB", 16);
    let rounds = env_usize("OFFLOAD_ROUNDS", 3);
    let caps: Vec<u64> = std::env::var("OFFLOAD_CAPS_KIB")
        .unwrap_or_else(|_| "4096,1024".into())
        .split(',')
        .map(|c| {
            c.trim()
                .parse()
                .expect("OFFLOAD_CAPS_KIB: KiB/s, comma-separated")
        })
        .collect();
    println!("# sargs offload bandwidth cap\n\n{}\n", machine());
    let g = Garage::start();
    let key = g.bucket_with_key(BUCKET);
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("dir");
    let file = dir.path().join("0000000001.mp4.age");
    // Bytes that do not compress (a sealed segment does not either).
    let bytes: Vec<u8> = (0..(mib as u32) << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&file, &bytes).expect("file");
    let runs: Vec<Option<u64>> = std::iter::once(None)
        .chain(caps.iter().copied().map(Some))
        .collect();
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); runs.len()];
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); runs.len()];
    for round in 0..rounds {
        for (i, cap) in runs.iter().enumerate() {
            let s = store(&g, &key, *cap);
            let key = format!("bench/{round}/{i}.mp4.age");
            let start = Instant::now();
            let cpu0 = cpu_time(libc::RUSAGE_SELF);
            s.put_file(&key, &file, None).expect("upload");
            let secs = start.elapsed().as_secs_f64();
            let cpu_s = (cpu_time(libc::RUSAGE_SELF) - cpu0).as_secs_f64();
            cpu[i].push(cpu_s * 1024.0 / mib as f64);
            let got = s.get_sha256(&key).expect("GET").expect("object");
            assert_eq!(got.1, bytes.len() as u64, "{key} whole in the store");
            results[i].push(mib as f64 / secs);
        }
    }
    println!("{mib} MiB, {rounds} rounds, 8 MiB parts\n");
    println!(
        "| run | median MiB/s | slowest | fastest | median / cap | client CPU s per GiB (median) |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for ((cap, r), c) in runs.iter().zip(&results).zip(&cpu) {
        let lo = r.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = r.iter().copied().fold(0.0, f64::max);
        let med = median(r);
        let (name, ratio) = match cap {
            None => ("no cap (anchor)".to_owned(), "—".to_owned()),
            Some(k) => (
                format!("`max_kib_s = {k}`"),
                format!("{:.3}×", med * 1024.0 / *k as f64),
            ),
        };
        let c = median(c);
        println!("| {name} | {med:.2} | {lo:.2} | {hi:.2} | {ratio} | {c:.2} |");
    }
}
