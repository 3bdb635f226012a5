//! `sargsctl`: the HQ/operator side.

mod export;
use sargs_hq::verbs;

use std::io::Write;

use sargs_core::keys::ExposeSecret;
use sargs_core::seal::open::{self, OpenError};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Error, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "sargsctl",
    version,
    about = "HQ/operator tool for sargs agents"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make HQ's age identity and command-signing key (keep both at HQ); print
    /// the recipient and the command key (both go in agent configs).
    Keygen {
        /// Where to write the age identity (mode 0600); refuses to overwrite.
        #[arg(long, default_value = "hq-identity.txt")]
        out: PathBuf,
        /// Where to write the Ed25519 command-signing key (mode 0600); refuses to overwrite.
        #[arg(long, default_value = "hq-signing.pk8")]
        signing_key: PathBuf,
    },
    #[command(flatten)]
    Verb(Box<verbs::Verb>),
    /// Show the fleet's status, events, responses (and, with --telemetry,
    /// telemetry) live, one line each.
    Watch {
        #[command(flatten)]
        broker: verbs::BrokerArgs,
        /// Only this agent.
        #[arg(long)]
        agent: Option<String>,
        /// Include periodic telemetry.
        #[arg(long)]
        telemetry: bool,
        /// Print each message as a JSON line: {"topic", "message"}.
        #[arg(long)]
        json: bool,
        /// Stop after this many seconds (default: until Ctrl-C).
        #[arg(long)]
        seconds: Option<u64>,
    },
    /// Verify a camera's chain as copied from an agent (signatures, sequence, hashes, gaps).
    Verify {
        /// The camera's directory (`<data_dir>/cameras/<camera>`).
        dir: PathBuf,
        /// The device's Ed25519 public key (Base64). Without it, the key named in
        /// the first record is trusted, and said so.
        #[arg(long)]
        device_key: Option<String>,
    },
    /// Read a gateway's evidence back from the S3-compatible evidence store into
    /// a folder laid out as its data directory: records, their sealed media and
    /// the deletion receipts (then `sargsctl verify OUT/cameras/CAMERA`).
    Fetch {
        /// The store, `https://HOST[:PORT]` (or `http://`).
        #[arg(long)]
        endpoint: String,
        #[arg(long)]
        region: String,
        #[arg(long)]
        bucket: String,
        /// A TOML file with `access_key_id` and `secret_access_key` of a key
        /// that may read the bucket; mode 0600 or refused.
        #[arg(long)]
        credentials: PathBuf,
        /// PEM CA certificate(s) of an `https://` store.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// The gateway (agent id) whose objects to fetch.
        #[arg(long)]
        agent: String,
        /// Only these cameras (repeatable); all by default. Receipts always.
        #[arg(long = "camera")]
        cameras: Vec<String>,
        /// The folder to write: must not exist, or be empty.
        #[arg(long)]
        out: PathBuf,
    },
    /// Release recordings to an entitled recipient: verified, decrypted, and
    /// named in an export record signed by HQ; restricted, deleted or altered
    /// segments are refused, each with its reason.
    Export(Box<export::ExportArgs>),
    /// Decrypt a sealed segment with HQ's identity.
    Decrypt {
        #[arg(long, short = 'i')]
        identity: PathBuf,
        /// The sealed segment (`….mp4.age`).
        input: PathBuf,
        #[arg(long, short = 'o')]
        output: PathBuf,
        /// For a segment cut short by a crash: write every whole chunk and report
        /// where the stream ends, instead of failing.
        #[arg(long)]
        salvage: bool,
    },
}

fn main() -> ExitCode {
    sargs_core::cli::output_may_be_cut();
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sargsctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

// The libraries' errors already name their cause, so they enter `anyhow` as
// messages (`Error::msg`): `{:#}` would otherwise print that cause twice.

fn run(cmd: Command) -> Result<()> {
    match cmd {
        Command::Verb(v) => verbs::run(*v),
        Command::Export(a) => export::run(*a),
        Command::Fetch {
            endpoint,
            region,
            bucket,
            credentials,
            ca_file,
            agent,
            cameras,
            out,
        } => {
            let endpoint = url::Url::parse(&endpoint)
                .map_err(|e| anyhow::anyhow!("--endpoint {endpoint:?}: {e}"))?;
            let key = sargs_core::config::credentials::Credentials::read(&credentials)
                .map_err(Error::msg)
                .context("--credentials")?;
            let src = sargs_hq::fetch::Source {
                endpoint,
                region,
                bucket,
                access_key_id: key.access_key_id,
                secret_access_key: key.secret_access_key,
                ca_file,
            };
            let done = sargs_hq::fetch::fetch(&src, &agent, &cameras, &out).map_err(Error::msg)?;
            println!(
                "{}: {} records, {} media, {} receipts, {} bytes from {} into {}",
                done.agent,
                done.records,
                done.media,
                done.receipts,
                done.bytes,
                done.store,
                out.display()
            );
            for key in &done.skipped {
                println!("  skipped (no record's or receipt's name): {key}");
            }
            Ok(())
        }
        Command::Watch {
            broker,
            agent,
            telemetry,
            json,
            seconds,
        } => watch(&broker, agent.as_deref(), telemetry, json, seconds),
        Command::Keygen { out, signing_key } => {
            for p in [&out, &signing_key] {
                if p.exists() {
                    bail!("{}: exists; refusing to overwrite a key", p.display());
                }
            }
            let signing_key = std::path::absolute(&signing_key)
                .with_context(|| signing_key.display().to_string())?;
            if let Some(dir) = out
                .parent()
                .filter(|d| !d.as_os_str().is_empty() && !d.exists())
            {
                sargs_core::fsutil::create_private_dir(dir)
                    .with_context(|| dir.display().to_string())?;
            }
            let (recipient, text) = sargs_core::keys::new_identity();
            let mut f = sargs_core::fsutil::create_new(&out, 0o600)
                .with_context(|| out.display().to_string())?;
            f.write_all(text.expose_secret().as_bytes())
                .and_then(|_| f.sync_all())
                .with_context(|| out.display().to_string())?;
            let key = sargs_core::seal::sign::DeviceKey::load_or_create(&signing_key)
                .map_err(Error::msg)?;
            println!("{recipient}");
            println!("command key: {}", key.public_key_b64());
            Ok(())
        }
        Command::Verify { dir, device_key } => {
            let key = match device_key {
                Some(k) => decode_key(&k)?,
                None => {
                    let first = dir.join(format!("{:010}.json", 1));
                    let bytes =
                        std::fs::read(&first).with_context(|| first.display().to_string())?;
                    let env: sargs_core::seal::sign::Envelope = serde_json::from_slice(&bytes)
                        .with_context(|| first.display().to_string())?;
                    eprintln!("trusting device key {} from the first record (pass --device-key to pin it)", env.key);
                    decode_key(&env.key)?
                }
            };
            // A copy read back from the evidence store holds the records
            // offloaded, not necessarily all: those it lacks are listed.
            let fetched = dir
                .parent()
                .and_then(Path::parent)
                .map(|d| d.join("fetched.json"))
                .filter(|f| f.is_file());
            let r = match &fetched {
                Some(f) => {
                    println!(
                        "a copy fetched from the evidence store ({}): records not in it are listed, not counted as problems",
                        f.display()
                    );
                    let none = std::collections::HashSet::<String>::new();
                    sargs_core::seal::verify::verify_camera_partial(&dir, &key, &none)
                }
                None => sargs_core::seal::verify::verify_camera(&dir, &key),
            }
            .with_context(|| dir.display().to_string())?;
            for (from, to) in &r.absent {
                println!("  not in this copy: records {from} to {to}");
            }
            println!(
                "{}: {} records ({} segments, {} truncated, {} gaps)",
                dir.display(),
                r.records,
                r.segments,
                r.truncated,
                r.gaps
            );
            for p in &r.problems {
                println!("  {p}");
            }
            if r.ok() {
                println!("verified");
                Ok(())
            } else {
                bail!("{} problem(s) found", r.problems.len())
            }
        }
        Command::Decrypt {
            identity,
            input,
            output,
            salvage,
        } => {
            let ids = sargs_core::seal::open::read_identities(&identity)
                .map_err(Error::msg)
                .with_context(|| identity.display().to_string())?;
            let file = std::fs::File::open(&input).with_context(|| input.display().to_string())?;
            let mut out =
                std::fs::File::create(&output).with_context(|| output.display().to_string())?;
            let opened = match open::decrypt_to(file, &ids, &mut out, salvage) {
                Ok(o) => o,
                Err(OpenError::Output(e)) => {
                    return Err(e).with_context(|| output.display().to_string())
                }
                Err(OpenError::Stream { after, reason }) => bail!(
                    "{}: {reason} after {after} bytes (try --salvage)",
                    input.display()
                ),
                Err(e) => {
                    return Err(Error::msg(e.to_string())).context(input.display().to_string())
                }
            };
            let total = opened.bytes;
            if let Some(e) = &opened.cut_short {
                eprintln!(
                    "stream ends early after {total} bytes ({e}); salvaged every whole chunk"
                );
            }
            out.sync_all()
                .with_context(|| output.display().to_string())?;
            println!("{total} bytes written to {}", output.display());
            Ok(())
        }
    }
}

fn watch(
    broker: &verbs::BrokerArgs,
    agent: Option<&str>,
    telemetry: bool,
    json: bool,
    seconds: Option<u64>,
) -> Result<()> {
    use std::time::{Duration, Instant};
    let url = broker.broker.as_deref().context("--broker is required")?;
    let who = agent.unwrap_or("+");
    let mut kinds = vec!["status", "events", "responses"];
    if telemetry {
        kinds.push("telemetry");
    }
    let topics: Vec<String> = kinds
        .iter()
        .map(|k| format!("{}/agents/{who}/{k}", broker.prefix))
        .collect();
    let id = format!("sargsctl-watch-{}", std::process::id());
    let client = sargs_hq::broker::HqClient::connect(
        &broker.options(url)?,
        &id,
        &topics,
        Duration::from_secs(10),
    )
    .map_err(Error::msg)?;
    let end = seconds.map(|s| Instant::now() + Duration::from_secs(s));
    loop {
        let left = match end {
            Some(e) => e.saturating_duration_since(Instant::now()),
            None => Duration::from_secs(3600),
        };
        if left.is_zero() {
            return Ok(());
        }
        if let Some((topic, v)) = client.next(left).map_err(Error::msg)? {
            if json {
                println!("{}", serde_json::json!({"topic": topic, "message": v}));
            } else {
                println!("{}", sargs_hq::broker::summary(&topic, &v));
            }
        }
    }
}

fn decode_key(b64: &str) -> Result<[u8; 32]> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()
        .and_then(|v| v.try_into().ok())
        .with_context(|| format!("not a Base64 Ed25519 public key: {b64}"))
}
