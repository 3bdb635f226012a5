//! Helpers shared by the benchmarks: knobs from the environment, the
//! machine line of a report, CPU time, medians.
//!
//! The benchmarks have mains of their own rather than `criterion`'s: each
//! figure is a ratio to an anchor measured in the same run — often another
//! program (the `age` CLI, `cp` + `sync`, ffmpeg, `mosquitto_sub`) — with
//! the variants rotated round by round so a noisy, shared machine slows
//! them alike, and with CPU seconds (user + system, all threads) beside wall
//! time. criterion times one closure at a time, in wall time only, and has
//! no notion of an external anchor or of rotation; it would measure
//! something else than `docs/BENCHMARKS.md` reports.

use std::time::Duration;

pub fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a number")),
        Err(_) => default,
    }
}

/// nproc, CPU model and date, for the report.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|r| r.trim_start_matches([' ', '\t', ':']))
        })
        .unwrap_or("unknown");
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "Machine: {cpus} CPUs, {model}; {}; {}",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        std::env::consts::ARCH
    )
}

/// User + system CPU time of this process (all threads), or of its waited-for children.
pub fn cpu_time(who: libc::c_int) -> Duration {
    // SAFETY: getrusage fills the struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(who, &mut ru) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}
