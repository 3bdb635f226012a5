//! A real Garage object store (<https://garagehq.deuxfleurs.fr>, the
//! version `scripts/install-garage` installs) as a single node on free
//! 127.0.0.1 ports, in a fresh directory under the build's temporary
//! folder, stopped when dropped.
//!
//! Start-up is what an operator does by hand: a `garage.toml` (SQLite
//! metadata, replication factor 1, RPC and S3 API on 127.0.0.1), the
//! server started, `garage layout assign` and `garage layout apply`, then
//! buckets and keys made through the `garage` CLI (`bucket create`,
//! `json-api CreateKey`, `bucket allow`). The server logs to `garage.log` in
//! its directory, quoted in every panic. Without the binary the test fails
//! saying how to install it: a missing tool is never a silent skip.
//!
//! [`Garage::stop`] and [`Garage::restart`] take the store down and bring it
//! back on the same ports with the same data, for tests of a store that is
//! down for a while.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::mosquitto::free_port;

/// The S3 region the store answers for.
pub const REGION: &str = "garage";

/// How long the server may take to answer the CLI.
const READY: Duration = Duration::from_secs(60);

/// An S3 access key.
#[derive(Clone, Debug)]
pub struct Key {
    pub id: String,
    pub secret: String,
}

/// A running single-node Garage.
pub struct Garage {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub s3_port: u16,
    rpc_port: u16,
}

/// The `garage` binary: `$SARGS_GARAGE`, else `${CARGO_HOME:-~/.cargo}/bin/garage`.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("SARGS_GARAGE") {
        return PathBuf::from(p);
    }
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .expect("CARGO_HOME or HOME is set");
    let bin = cargo_home.join("bin").join("garage");
    assert!(
        bin.is_file(),
        "{}: no garage binary; run scripts/install-garage (scripts/test does)",
        bin.display()
    );
    bin
}

impl Garage {
    /// Starts a new store in a fresh directory under the build's temporary
    /// folder, with its layout applied: ready for buckets and keys.
    pub fn start() -> Garage {
        let parent = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("garage");
        std::fs::create_dir_all(&parent).expect("garage parent folder");
        let dir = tempfile::Builder::new()
            .prefix("sargs-garage-")
            .tempdir_in(&parent)
            .expect("temporary directory for Garage");
        let mut g = Garage {
            child: None,
            dir,
            s3_port: 0,
            rpc_port: 0,
        };
        // A port free when asked may be taken before garage binds it: then
        // other ports are tried.
        let mut last = String::new();
        for _ in 0..5 {
            g.s3_port = free_port();
            g.rpc_port = free_port();
            g.write_config();
            match g.spawn_and_wait() {
                Ok(()) => {
                    g.layout();
                    return g;
                }
                Err(e) => last = e,
            }
        }
        panic!("garage did not start: {last}");
    }

    /// The directory the store keeps its configuration, data and log in.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `http://127.0.0.1:<s3 port>`: the S3 endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("garage.toml")
    }

    fn write_config(&self) {
        let d = self.dir.path();
        // The RPC secret only binds this node to itself; fixed per store.
        let secret: String = (0..32)
            .map(|i| format!("{:02x}", (i * 37 + self.rpc_port as usize) % 256))
            .collect();
        let text = format!(
            r#"metadata_dir = "{meta}"
data_dir = "{data}"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{secret}"

[s3_api]
s3_region = "{REGION}"
api_bind_addr = "127.0.0.1:{s3}"
root_domain = ".s3.garage.localhost"
"#,
            meta = d.join("meta").display(),
            data = d.join("data").display(),
            rpc = self.rpc_port,
            s3 = self.s3_port,
        );
        std::fs::write(self.config(), text).expect("garage.toml");
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("garage.log"))
            .expect("garage.log");
        let err = log.try_clone().expect("garage.log");
        // Ready once this run says it listens on its S3 port: a port found
        // free may be taken by another test's server before garage binds
        // it, and then that server would answer the probes below.
        let listening = format!("server listening on http://127.0.0.1:{}", self.s3_port);
        let before = self.log().matches(&listening).count();
        let child = Command::new(binary())
            .arg("-c")
            .arg(self.config())
            .arg("server")
            .env("RUST_LOG", "garage=info")
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("{}: {e}", binary().display()))?;
        self.child = Some(child);
        let start = Instant::now();
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return Err(format!("garage exited ({status}):\n{}", self.log()));
            }
            if self.log().matches(&listening).count() > before
                && std::net::TcpStream::connect(("127.0.0.1", self.s3_port)).is_ok()
                && self.cli(&["status"]).status.success()
            {
                return Ok(());
            }
            if start.elapsed() > READY {
                self.stop();
                return Err(format!("garage did not answer:\n{}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The layout of a fresh single node: one zone, 1 GB, applied.
    fn layout(&self) {
        let id = self.ok(&["node", "id", "-q"]);
        let id = id.trim();
        let short = id.split('@').next().unwrap_or(id);
        self.ok(&["layout", "assign", "-z", "dc1", "-c", "1G", short]);
        self.ok(&["layout", "apply", "--version", "1"]);
    }

    /// Runs the CLI against this store.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(binary())
            .arg("-c")
            .arg(self.config())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("garage CLI")
    }

    /// Runs the CLI and returns its standard output; panics with both
    /// outputs and the server's log if it fails.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "garage {args:?} failed:\n{}{}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8(out.stdout).expect("garage CLI output is UTF-8")
    }

    /// Creates a bucket.
    pub fn bucket(&self, name: &str) {
        self.ok(&["bucket", "create", name]);
    }

    /// Creates an access key named `name`.
    pub fn key(&self, name: &str) -> Key {
        let body = serde_json::json!({ "name": name }).to_string();
        let out = self.ok(&["json-api", "CreateKey", &body]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("CreateKey answers JSON");
        Key {
            id: v["accessKeyId"].as_str().expect("accessKeyId").to_owned(),
            secret: v["secretAccessKey"]
                .as_str()
                .expect("secretAccessKey")
                .to_owned(),
        }
    }

    /// Lets `key` read and write (not own) `bucket`.
    pub fn allow(&self, bucket: &str, key: &Key) {
        self.ok(&[
            "bucket", "allow", "--read", "--write", bucket, "--key", &key.id,
        ]);
    }

    /// A bucket and a key that may read and write it.
    pub fn bucket_with_key(&self, bucket: &str) -> Key {
        self.bucket(bucket);
        let key = self.key(&format!("{bucket}-key"));
        self.allow(bucket, &key);
        key
    }

    /// The agent's `[offload]` settings for this store, `key` and `bucket`
    /// (path addressing, parts of `part_mb` MiB, no cap, local copies kept).
    pub fn settings(
        &self,
        key: &Key,
        bucket: &str,
        part_mb: u64,
    ) -> sargs::config::offload::OffloadSettings {
        use sargs::config::offload::{Addressing, Allow, Credentials, OffloadSettings};
        OffloadSettings {
            endpoint: self.endpoint().parse().expect("endpoint"),
            region: REGION.into(),
            bucket: bucket.into(),
            addressing: Addressing::Path,
            credentials: Credentials {
                access_key_id: key.id.clone(),
                secret_access_key: key.secret.clone(),
            },
            ca_file: None,
            allow: Allow {
                endpoints: vec![self.endpoint()],
                regions: vec![REGION.into()],
            },
            part_size: part_mb << 20,
            free_local: false,
            max_bytes_s: None,
            when: Default::default(),
        }
    }

    /// Stops the server (its data stays for [`Garage::restart`]).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the stopped server again, on the same ports with the same data.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(e) = self.spawn_and_wait() {
            panic!("garage did not restart on port {}: {e}", self.s3_port);
        }
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("garage.log")).unwrap_or_default()
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.stop();
    }
}
