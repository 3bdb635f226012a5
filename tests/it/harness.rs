//! Shared test plumbing: a temporary agent home with a real HQ identity, the
//! shipped policy, and helpers to decrypt and probe sealed segments without
//! ever writing plaintext to disk (decrypted bytes go through pipes).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use std::sync::Arc;

use sargs::config::Config;
use sargs::store::{CameraLog, MediaFacts, SealContext, SegmentInfo};
use sargs_core::seal::manifest::Manifest;
use sargs_core::seal::sign::DeviceKey;

/// A temporary agent home.
pub struct Home {
    pub dir: tempfile::TempDir,
    pub identity: age::x25519::Identity,
}

impl Home {
    pub fn new() -> Home {
        let dir = tempfile::Builder::new()
            .prefix("sargs-test-")
            .tempdir_in(test_root())
            .expect("tempdir");
        let identity = age::x25519::Identity::generate();
        std::fs::write(dir.path().join("policy.toml"), sargs::demo::POLICY_PRESET).expect("policy");
        let id_text = age::secrecy::ExposeSecret::expose_secret(&identity.to_string()).to_string();
        std::fs::write(dir.path().join("hq-identity.txt"), format!("{id_text}\n"))
            .expect("identity");
        Home { dir, identity }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn recipient(&self) -> String {
        self.identity.to_public().to_string()
    }

    /// Writes `sargs.toml` with `cameras` (TOML `[[camera]]` blocks) and loads it.
    pub fn config(&self, segment_seconds: u32, cameras: &str) -> Config {
        self.config_with(segment_seconds, "", cameras)
    }

    /// Like [`Home::config`], with extra `[agent]` keys.
    pub fn config_with(&self, segment_seconds: u32, agent_extra: &str, cameras: &str) -> Config {
        let text = format!(
            "[agent]\nid = \"test-gw\"\ndata_dir = \"data\"\npolicy = \"policy.toml\"\nsegment_seconds = {segment_seconds}\n{agent_extra}\n\n[seal]\nrecipients = [\"{}\"]\n\n[supervision]\nbackoff_initial_ms = 200\nbackoff_max_ms = 1000\n\n{cameras}",
            self.recipient()
        );
        let path = self.path().join("sargs.toml");
        std::fs::write(&path, text).expect("write config");
        Config::load(&path).expect("test config loads")
    }

    pub fn config_path(&self) -> PathBuf {
        self.path().join("sargs.toml")
    }

    pub fn camera_dir(&self, camera: &str) -> PathBuf {
        self.path().join("data/cameras").join(camera)
    }

    /// The device public key the agent created.
    pub fn device_key(&self) -> [u8; 32] {
        let key =
            sargs_core::seal::sign::DeviceKey::load(&self.path().join("data/device/signing.pk8"))
                .expect("device key");
        key.public_key()
    }

    /// Decrypts a sealed file with the `age` crate, in memory.
    pub fn decrypt(&self, path: &Path) -> Vec<u8> {
        let file = std::fs::File::open(path).expect("open sealed file");
        let dec = age::Decryptor::new(std::io::BufReader::new(file)).expect("age header");
        let mut reader = dec
            .decrypt(std::iter::once(&self.identity as &dyn age::Identity))
            .expect("our identity opens it");
        let mut out = Vec::new();
        reader
            .read_to_end(&mut out)
            .expect("whole age stream decrypts");
        out
    }

    /// Decrypts every whole chunk of a possibly truncated stream; returns the
    /// bytes and whether the stream was complete (a stream cut inside its
    /// header salvages nothing).
    pub fn salvage(&self, path: &Path) -> (Vec<u8>, bool) {
        let file = std::fs::File::open(path).expect("open sealed file");
        let Ok(dec) = age::Decryptor::new(std::io::BufReader::new(file)) else {
            return (Vec::new(), false);
        };
        let mut reader = dec
            .decrypt(std::iter::once(&self.identity as &dyn age::Identity))
            .expect("our identity opens it");
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65536];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => return (out, true),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(_) => return (out, false),
            }
        }
    }
}

/// Where test homes live: a directory of the build, not /tmp, so the
/// "no plaintext under /tmp" check sees only what the agent writes there.
pub fn test_root() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("homes");
    std::fs::create_dir_all(&root).expect("test root");
    root
}

/// A camera block with a test source.
pub fn test_camera(id: &str, class: &str, extra: &str) -> String {
    let purpose = if class == "cctv" {
        "property-protection"
    } else {
        "public-order"
    };
    format!(
        "[[camera]]\nid = \"{id}\"\nkind = \"stationary\"\npurpose = \"{purpose}\"\nclass = \"{class}\"\n{extra}\n[camera.source]\ntype = \"test\"\npattern = \"smpte\"\nwidth = 320\nheight = 240\nfps = 25\nbitrate_kbps = 400\n\n"
    )
}

/// How long a test waits for recording to reach a point (real-time video,
/// on a loaded machine or under an emulator).
pub const RECORDING: Duration = Duration::from_secs(60);

/// Records with an in-process agent until `done` holds (polled every
/// 100 ms, for at most `limit`), then stops cleanly; fails naming `what`
/// if it never held. Returns how long the agent ran, from its start to the
/// stop.
pub fn record_until(
    config: &Config,
    limit: Duration,
    what: &str,
    done: impl FnMut() -> bool,
) -> Duration {
    let started = std::time::Instant::now();
    let agent = sargs::agent::Agent::start(config).expect("agent starts");
    let reached = wait_until(limit, done);
    let ran = started.elapsed();
    agent.stop().expect("clean stop");
    assert!(reached, "not within {limit:?}: {what}");
    ran
}

/// Records with an in-process agent until each of `cameras` has sealed
/// `sealed` segments, then stops cleanly. The stop seals the segment open by
/// then as well (the next one opens before one is sealed), so each camera
/// ends with `sealed + 1` segments at least, of which the first `sealed` are
/// whole.
pub fn record_sealed(config: &Config, cameras: &[&str], sealed: usize) {
    let dirs: Vec<PathBuf> = cameras
        .iter()
        .map(|c| config.agent.data_dir.join("cameras").join(c))
        .collect();
    record_until(
        config,
        RECORDING,
        &format!("{sealed} sealed segment(s) of {cameras:?}"),
        || dirs.iter().all(|d| sealed_count(d) >= sealed),
    );
}

/// Sealed media files of a camera, in sequence order.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("camera dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".mp4.age"))
        .collect();
    v.sort();
    v
}

/// How many sealed media files a camera has (0 before its folder exists).
pub fn sealed_count(dir: &Path) -> usize {
    if dir.is_dir() {
        segments(dir).len()
    } else {
        0
    }
}

/// How many records (manifests: segments and gaps) a camera has committed.
pub fn record_count(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                .count()
        })
        .unwrap_or(0)
}

/// Bytes in the camera's open (partial) segments: more than one age chunk
/// (64 KiB) means video of the open segment has reached the disk.
pub fn open_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
                .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

/// The manifests of a camera, verified against `key`, in order.
pub fn manifests(dir: &Path, key: &[u8; 32]) -> Vec<Manifest> {
    let r = sargs_core::seal::verify::verify_camera(dir, key).expect("readable");
    assert!(r.ok(), "chain verifies: {:#?}", r.problems);
    r.manifests
}

/// What ffprobe says about a media byte stream fed through a pipe.
#[derive(Debug)]
pub struct Probe {
    pub codec: String,
    pub width: u64,
    pub height: u64,
    pub frames: u64,
    pub tags: serde_json::Value,
}

/// Runs `ffprobe` on `media` via stdin (nothing is written to disk).
pub fn probe(media: &[u8]) -> Probe {
    let out = piped(
        Command::new("ffprobe").args([
            "-v",
            "error",
            "-count_frames",
            "-show_entries",
            "stream=codec_name,width,height,nb_read_frames:format_tags",
            "-of",
            "json",
            "-i",
            "pipe:0",
        ]),
        "ffprobe is installed (scripts/install-deps --test)",
        media,
    );
    let v: serde_json::Value = serde_json::from_slice(&out).expect("ffprobe json");
    let s = &v["streams"][0];
    Probe {
        codec: s["codec_name"].as_str().unwrap_or_default().to_owned(),
        width: s["width"].as_u64().unwrap_or_default(),
        height: s["height"].as_u64().unwrap_or_default(),
        frames: s["nb_read_frames"]
            .as_str()
            .and_then(|f| f.parse().ok())
            .unwrap_or_default(),
        tags: v["format"]["tags"].clone(),
    }
}

/// Decodes the first frame of `media` to 8-bit grey pixels with ffmpeg (via pipes).
pub fn first_frame_grey(media: &[u8]) -> Vec<u8> {
    piped(
        Command::new("ffmpeg").args([
            "-v",
            "error",
            "-i",
            "pipe:0",
            "-frames:v",
            "1",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "gray",
            "pipe:1",
        ]),
        "ffmpeg is installed",
        media,
    )
}

/// Runs `cmd` with `input` on its standard input and returns its standard
/// output, through pipes only (nothing is written to disk); fails with its
/// standard error if it fails, and with `installed` if it cannot start.
pub fn piped(cmd: &mut Command, installed: &str, input: &[u8]) -> Vec<u8> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect(installed);
    let mut stdin = child.stdin.take().expect("stdin");
    let data = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().expect("the child runs");
    let _ = writer.join();
    assert!(
        out.status.success(),
        "{:?} failed: {}",
        cmd.get_program(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Polls `cond` every 100 ms for up to `limit`.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let until = std::time::Instant::now() + limit;
    while std::time::Instant::now() < until {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    cond()
}

/// Checks a 320×240 grey frame of SMPTE bars whose top-left quarter is masked:
/// black inside the mask, the bright bars outside it.
pub fn assert_top_left_quarter_masked(grey: &[u8]) {
    assert_eq!(grey.len(), 320 * 240);
    let px = |x: usize, y: usize| grey[y * 320 + x];
    for (x, y) in [(5, 5), (80, 60), (150, 110)] {
        assert!(px(x, y) < 40, "masked pixel {x},{y} is {}", px(x, y));
    }
    // The second SMPTE bar (yellow-ish) is bright outside the mask.
    assert!(px(200, 60) > 100, "unmasked pixel is {}", px(200, 60));
}

/// A command that starts one of this crate's binaries: directly, or through
/// the runner in `SARGS_TEST_RUNNER` when the suite was built for another
/// architecture (`cross/test aarch64` sets it to `cross/run aarch64`, which
/// runs the binary under qemu-user). The runner `exec`s, so the child's id is
/// the binary's and signals reach it.
pub fn bin_command(bin: &str) -> Command {
    let runner = std::env::var("SARGS_TEST_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    match words.next() {
        Some(program) => {
            let mut c = Command::new(program);
            c.args(words).arg(bin);
            c
        }
        None => Command::new(bin),
    }
}

/// Runs a binary of this crate in `cwd`: (success, stdout, stderr).
pub fn run_in(bin: &str, args: &[&str], cwd: &Path) -> (bool, String, String) {
    let out = bin_command(bin)
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `sargs ARGS` in `cwd`.
pub fn sargs_in(args: &[&str], cwd: &Path) -> (bool, String, String) {
    run_in(env!("CARGO_BIN_EXE_sargs"), args, cwd)
}

/// The `sargsctl` binary of this build. It belongs to the `sargs-hq`
/// package of the workspace, so Cargo gives this package no
/// `CARGO_BIN_EXE_sargsctl`; it is built beside `sargs` whenever the
/// workspace's tests are (`scripts/test`, `cargo test` at the top level),
/// because `sargs-hq`'s own integration tests need it.
pub fn sargsctl_bin() -> String {
    let sargs = Path::new(env!("CARGO_BIN_EXE_sargs"));
    let ctl = sargs.with_file_name("sargsctl");
    assert!(
        ctl.is_file(),
        "{} is missing: run the workspace's tests (scripts/test, or cargo test at the top level), which build it",
        ctl.display()
    );
    ctl.to_string_lossy().into_owned()
}

/// `sargsctl ARGS` in `cwd`.
pub fn sargsctl_in(args: &[&str], cwd: &Path) -> (bool, String, String) {
    run_in(&sargsctl_bin(), args, cwd)
}

/// `sargs` in the current directory.
pub fn sargs(args: &[&str]) -> (bool, String, String) {
    sargs_in(args, Path::new("."))
}

/// `sargsctl` in the current directory.
pub fn sargsctl(args: &[&str]) -> (bool, String, String) {
    sargsctl_in(args, Path::new("."))
}

/// A `sargs run` child process that is killed if the test fails before
/// stopping it, so no agent outlives its test.
pub struct Spawned(pub Child);

impl std::ops::Deref for Spawned {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Spawned {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts `sargs run` on the home's config as a separate process, logging
/// beside the home (`<home>.log`).
pub fn spawn_agent(home: &Home) -> Spawned {
    spawn_agent_with(home, |_| {})
}

/// The agent's log beside its home (`HOME.log`), opened to append.
pub fn log_file(home: &Home) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(home.path().with_extension("log"))
        .expect("log file")
}

/// [`spawn_agent`], with `setup` given the command before it starts (an
/// environment to run in).
pub fn spawn_agent_with(home: &Home, setup: impl FnOnce(&mut Command)) -> Spawned {
    let mut cmd = bin_command(env!("CARGO_BIN_EXE_sargs"));
    cmd.args(["run", "--config"])
        .arg(home.config_path())
        .env("SARGS_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log_file(home));
    setup(&mut cmd);
    Spawned(cmd.spawn().expect("sargs binary"))
}

/// Seals `n` one-minute segments of `camera` starting `days_ago`, in process,
/// as an agent would have recorded them back then.
pub fn old_segments(home: &Home, camera: &str, n: usize, days_ago: i64) {
    let config = sargs::config::Config::load(&home.config_path()).expect("config");
    let key = DeviceKey::load_or_create(&config.agent.signing_key).expect("device key");
    let ctx = Arc::new(SealContext {
        agent_id: config.agent.id.clone(),
        key: Arc::new(key),
        recipients: config.recipients.clone(),
        policy: config.policy.clone(),
        observer: None,
    });
    let cam = config
        .cameras
        .iter()
        .find(|c| c.id == camera)
        .expect("camera")
        .clone();
    let mut log = CameraLog::open(home.camera_dir(camera), cam, ctx, false).expect("log");
    let t0 = chrono::Utc::now() - chrono::Duration::days(days_ago);
    for i in 0..n {
        let start = t0 + chrono::Duration::minutes(i as i64);
        let mut seg = log.begin_segment(start, 0).expect("begin");
        std::io::Write::write_all(seg.writer().expect("writer"), &[1u8; 4096]).expect("write");
        let info = SegmentInfo {
            start,
            end: start + chrono::Duration::minutes(1),
            media: MediaFacts {
                codec: "h264".into(),
                width: None,
                height: None,
                encoding: "encoded",
            },
        };
        log.commit_segment(&mut seg, &info, false).expect("commit");
    }
}

/// `sargsctl keygen` in `dir`, keys in `dir/hq/` (`identity.txt`,
/// `signing.pk8`); returns the command key it prints.
pub fn hq_keygen(dir: &Path) -> String {
    let args = [
        "keygen",
        "--out",
        "hq/identity.txt",
        "--signing-key",
        "hq/signing.pk8",
    ];
    let (ok, out, err) = sargsctl_in(&args, dir);
    assert!(ok, "keygen: {err}");
    let mut lines = out.lines();
    assert!(lines.next().is_some_and(|l| l.starts_with("age1")), "{out}");
    lines
        .next()
        .and_then(|l| l.strip_prefix("command key: "))
        .expect("command key line")
        .to_owned()
}

/// True if `bytes` look like plaintext media: an MP4 box (`ftyp`, `moov`,
/// `moof`, `mdat` with a size that fits the bytes, or 0 or 1 as MP4 allows),
/// or the x264 encoder's SEI banner that every H.264 stream it makes
/// carries. The size rule keeps ciphertext and signatures, where any four
/// letters turn up by chance (once in a few hundred MB), from looking like
/// media.
pub fn looks_like_media(bytes: &[u8]) -> bool {
    if bytes.windows(11).any(|w| w == b"x264 - core") {
        return true;
    }
    (4..bytes.len().saturating_sub(3)).any(|i| {
        matches!(&bytes[i..i + 4], b"ftyp" | b"moov" | b"moof" | b"mdat") && {
            let size = u32::from_be_bytes([bytes[i - 4], bytes[i - 3], bytes[i - 2], bytes[i - 1]]);
            size <= 1 || (size >= 8 && size as usize <= bytes.len() - (i - 4))
        }
    })
}

/// The first file under `root` written since `since` that holds plaintext
/// media. The build tree is left out (it may sit under /tmp, and holds the
/// tests' own logs) unless `root` is inside it: an agent's home there is
/// scanned on its own.
pub fn plaintext_under(root: &Path, since: std::time::SystemTime) -> Option<PathBuf> {
    let build_tree = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if dir.starts_with(build_tree) && !root.starts_with(build_tree) {
            continue;
        }
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                stack.push(p);
            } else if meta.is_file() && meta.modified().map(|m| m >= since).unwrap_or(true) {
                let Ok(bytes) = std::fs::read(&p) else {
                    continue;
                };
                if looks_like_media(&bytes) {
                    return Some(p);
                }
            }
        }
    }
    None
}

/// Fails naming the file if [`plaintext_under`] finds one.
pub fn assert_no_plaintext_under(root: &Path, since: std::time::SystemTime) {
    if let Some(p) = plaintext_under(root, since) {
        panic!("plaintext media in {}", p.display());
    }
}
