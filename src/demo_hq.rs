//! `sargs demo --hq`: the demo with HQ's side running beside it — a
//! Mosquitto on a free port of 127.0.0.1 (unless `--mqtt` names a broker),
//! the HQ service `sargs-hq` with its SQLite ledger and API, and the demo
//! agent enrolled with its device key — so that what the demo records,
//! deletes and reports can be followed at HQ. Its `hq.toml` is written
//! beside the agent's config; `sargs-hq report --config DIR/hq.toml` keeps
//! working on the ledger after the demo ends.
//!
//! Every process it starts is stopped when the demo ends (or fails): the
//! children are owned by [`DemoHq`] and killed on drop.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use sargs::demo::DemoSetup;

/// A process of the demo's HQ side, killed when dropped.
struct Owned(Child);

impl Drop for Owned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The broker the demo starts, if it starts one.
pub struct DemoBroker {
    url: String,
    _child: Owned,
}

impl DemoBroker {
    /// Starts Mosquitto on a free port of 127.0.0.1, without persistence,
    /// its config and log in `dir`.
    pub fn start(dir: &Path) -> Result<DemoBroker> {
        std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
        let port = free_port()?;
        let conf = dir.join("mosquitto.conf");
        let mut text =
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n");
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            // As root, mosquitto drops to its own user unless told to stay.
            text += "user root\n";
        }
        std::fs::write(&conf, text).with_context(|| conf.display().to_string())?;
        let log = std::fs::File::create(dir.join("mosquitto.log"))?;
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting mosquitto (Debian: apt-get install mosquitto; scripts/demo --hq installs it)")?;
        let child = Owned(child);
        wait_port(port, "mosquitto")?;
        Ok(DemoBroker {
            url: format!("mqtt://127.0.0.1:{port}"),
            _child: child,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

/// The HQ service of the demo.
pub struct DemoHq {
    bin: PathBuf,
    config: PathBuf,
    api: u16,
    token: String,
    child: Owned,
}

impl DemoHq {
    /// Writes `hq.toml` beside the agent's config, enrols the demo agent and
    /// starts `sargs-hq run`.
    pub fn start(setup: &DemoSetup, broker: &str, accelerate: Option<u32>) -> Result<DemoHq> {
        let bin = std::env::current_exe()?.with_file_name("sargs-hq");
        if !bin.is_file() {
            bail!(
                "{} is missing: build it (cargo build --release --bin sargs-hq; scripts/demo --hq does)",
                bin.display()
            );
        }
        let hq_key = sargs_core::seal::sign::DeviceKey::load(&setup.signing_key)
            .map_err(anyhow::Error::msg)?;
        // The agent's device key, made now so that it can be enrolled
        // before the agent first reports.
        let device =
            sargs_core::seal::sign::DeviceKey::load_or_create(&setup.config.agent.signing_key)
                .map_err(anyhow::Error::msg)?;
        let api = free_port()?;
        // With an accelerated retention clock, deletions run ahead of the
        // recording clock the deadlines come from: the ledger compares them
        // with a bound as long as the acceleration makes necessary.
        let bound = match accelerate {
            Some(_) => "\n# The demo's retention clock runs ahead of its recording clock, so\n# deletions are compared with its deadlines over ten years.\ndeletion_bound_s = 315360000".to_owned(),
            None => String::new(),
        };
        let config = setup.dir.join("hq.toml");
        let text = format!(
            "# HQ's service for the demo (sargs demo --hq); see docs/hq-service.md.\n\
             [broker]\nurl = \"{broker}\"\nclient_id = \"sargs-hq-demo\"\n\n\
             [database]\nurl = \"sqlite://hq.db\"\n\n\
             [commands]\ntrusted_keys = [\"{}\"]\nkey_file = \"{}\"\n\n\
             [api]\nlisten = \"127.0.0.1:{api}\"\n\n\
             [ledger]\ncheck_interval_s = 5{bound}\n",
            hq_key.public_key_b64(),
            setup.signing_key.display(),
        );
        std::fs::write(&config, text).with_context(|| config.display().to_string())?;
        let agent = &setup.config.agent.id;
        run(
            &bin,
            &config,
            &[
                "agent",
                "add",
                agent,
                "--device-key",
                &device.public_key_b64(),
                "--description",
                "sargs demo",
            ],
        )?;
        let token = run(
            &bin,
            &config,
            &["token", "add", "--owner", "demo", "--role", "auditor"],
        )?
        .trim()
        .to_owned();
        let log = std::fs::File::create(setup.dir.join("hq.log"))?;
        let child = Owned(
            Command::new(&bin)
                .arg("run")
                .arg("--config")
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .with_context(|| bin.display().to_string())?,
        );
        wait_port(api, "sargs-hq's API")?;
        Ok(DemoHq {
            bin,
            config,
            api,
            token,
            child,
        })
    }

    /// What to print at the start.
    pub fn banner(&self) -> String {
        format!(
            "  HQ service: sargs-hq run --config {} (log: hq.log beside it)\n  HQ API: http://127.0.0.1:{}/api/v1/fleet (Authorization: Bearer {})",
            self.config.display(),
            self.api,
            self.token
        )
    }

    /// Lets the service take in the last reports, prints the compliance
    /// report and how to read the API, and stops the service cleanly.
    pub fn finish(mut self) -> Result<String> {
        std::thread::sleep(Duration::from_secs(2));
        let report = run(&self.bin, &self.config, &["report"])?;
        // SAFETY: SIGTERM to our own child: a clean stop.
        unsafe { libc::kill(self.child.0.id() as i32, libc::SIGTERM) };
        let _ = self.child.0.wait();
        Ok(format!(
            "{report}\nHQ's ledger: sargs-hq report --config {} [--format json]\n\
             HQ API (while sargs-hq runs): curl -H 'Authorization: Bearer {}' http://127.0.0.1:{}/api/v1/fleet",
            self.config.display(),
            self.token,
            self.api
        ))
    }
}

/// `sargs-hq ARGS --config CONFIG`: its output, or its error.
fn run(bin: &Path, config: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(bin)
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .with_context(|| bin.display().to_string())?;
    if !out.status.success() {
        bail!(
            "sargs-hq {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until something listens on 127.0.0.1:`port` (at most 15 s).
fn wait_port(port: u16, what: &str) -> Result<()> {
    let until = Instant::now() + Duration::from_secs(15);
    while Instant::now() < until {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{what} did not listen on 127.0.0.1:{port} within 15 s")
}
