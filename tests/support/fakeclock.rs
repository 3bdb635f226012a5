//! A wall clock the test steps under a real process: Debian's libfaketime
//! preloaded into it, with the offset (and rate) read from a file the test
//! rewrites while the process runs, and the kernel's NTP discipline state
//! (what `adjtimex` answers) read from another file through a small
//! preloaded library built from `ntpstate.c` beside this file.
//!
//! Only the wall clock is faked (`FAKETIME_DONT_FAKE_MONOTONIC`): the
//! monotonic clock GStreamer, tokio and the agent's step detection run on
//! stays real, as on a board whose wall clock is stepped. libfaketime
//! re-reads the offset file at most once a second
//! (`FAKETIME_CACHE_DURATION=1`), so a change takes effect within a
//! second; [`FakeClock::settled`] waits that out.
//!
//! Both libraries are required: a missing one is a failure naming the
//! package to install (`scripts/install-deps --test` installs `faketime`
//! and the C compiler), never a skipped test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// Debian's `libfaketime` preload library for multi-threaded programs (its
/// state behind locks), as the agent is: `/usr/lib/<triplet>/faketime/`.
pub fn libfaketime() -> Option<PathBuf> {
    std::fs::read_dir("/usr/lib")
        .ok()?
        .flatten()
        .map(|e| e.path().join("faketime/libfaketimeMT.so.1"))
        .find(|p| p.is_file())
}

/// How long a change of the offset file may take to reach the process.
pub const CACHE: Duration = Duration::from_millis(1500);

/// The NTP-state library, built once per test process into the build's
/// scratch directory (it outlives every home that uses it).
fn ntpstate_lib() -> PathBuf {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fakeclock");
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/ntpstate.c");
        std::fs::create_dir_all(&out_dir).expect("build dir");
        let lib = out_dir.join(format!("libntpstate-{}.so", std::process::id()));
        let out = Command::new("cc")
            .args(["-shared", "-fPIC", "-O2", "-o"])
            .arg(&lib)
            .arg(&src)
            .arg("-ldl")
            .output()
            .expect("cc, the C compiler, is installed (scripts/install-deps: build-essential)");
        assert!(
            out.status.success(),
            "building {}: {}",
            src.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        lib
    })
    .clone()
}

/// A faked wall clock and NTP state, controlled through files in `dir`.
pub struct FakeClock {
    faketime: PathBuf,
    offset_file: PathBuf,
    ntp_file: PathBuf,
    lib: PathBuf,
}

impl FakeClock {
    /// A clock at the real time, synchronised, its files in `dir`.
    pub fn new(dir: &Path) -> FakeClock {
        let faketime = libfaketime().expect(
            "libfaketimeMT.so.1 is missing: install Debian's faketime (scripts/install-deps --test)",
        );
        let lib = ntpstate_lib();
        let c = FakeClock {
            faketime,
            offset_file: dir.join("faketime"),
            ntp_file: dir.join("ntp-state"),
            lib,
        };
        c.set(0, None);
        c.ntp(true);
        c
    }

    /// The wall clock `offset_s` seconds from the real time, running at
    /// `rate` times the real rate (from the process's start) if given.
    pub fn set(&self, offset_s: i64, rate: Option<f64>) {
        let spec = match rate {
            Some(r) => format!("{offset_s:+} x{r}"),
            None => format!("{offset_s:+}"),
        };
        write_atomic(&self.offset_file, &spec);
    }

    /// What the kernel says of the clock's discipline: synchronised (a time
    /// daemon disciplines it) or not.
    pub fn ntp(&self, synchronised: bool) {
        let s = if synchronised {
            "synchronised"
        } else {
            "unsynchronised"
        };
        write_atomic(&self.ntp_file, s);
    }

    /// Waits until a change has reached every process using the clock.
    pub fn settled(&self) {
        std::thread::sleep(CACHE);
    }

    /// Makes `cmd` run on this clock.
    pub fn apply(&self, cmd: &mut Command) {
        cmd.env(
            "LD_PRELOAD",
            format!("{}:{}", self.faketime.display(), self.lib.display()),
        )
        .env("FAKETIME_TIMESTAMP_FILE", &self.offset_file)
        .env("FAKETIME_CACHE_DURATION", "1")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .env("SARGS_NTP_STATE_FILE", &self.ntp_file);
    }
}

/// Replaces `path` whole (the preloaded libraries read it at any instant).
fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, format!("{text}\n")).expect("clock file");
    std::fs::rename(&tmp, path).expect("clock file");
}
