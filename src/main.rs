//! `sargs`: the edge agent's command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use sargs::config::Config;

#[derive(Parser)]
#[command(
    name = "sargs",
    version,
    about = "Edge video-camera agent: records cameras into sealed, signed segments"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Record every configured camera until SIGTERM or SIGINT.
    Run {
        #[arg(long, default_value = "/etc/sargs/sargs.toml")]
        config: PathBuf,
    },
    /// Validate a configuration (and its policy file) without running.
    CheckConfig {
        #[arg(long, default_value = "/etc/sargs/sargs.toml")]
        config: PathBuf,
    },
    /// Record two test cameras with a throwaway HQ key, to see sargs work.
    Demo {
        /// Folder for the demo's config, keys and recordings (reused if present).
        #[arg(long, default_value = "./sargs-demo")]
        dir: PathBuf,
        /// Stop after this many seconds (default: run until Ctrl-C).
        #[arg(long)]
        seconds: Option<u64>,
        /// Connect the demo agent to an MQTT broker (mqtt://HOST:PORT) and
        /// print the sargsctl commands that hold, release and watch it.
        #[arg(long)]
        mqtt: Option<String>,
    },
    /// Check chains, deletion receipts and the index against each other.
    Verify {
        #[arg(long, default_value = "/etc/sargs/sargs.toml")]
        config: PathBuf,
    },
    /// Retention status: segments per class against their limits, deletions,
    /// holds, requests, the next deletion.
    Status {
        #[arg(long, default_value = "/etc/sargs/sargs.toml")]
        config: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Apply a signed command file from HQ (hold, release, request, erase…):
    /// durable before this returns; to the running agent if there is one.
    Apply {
        #[arg(long, default_value = "/etc/sargs/sargs.toml")]
        config: PathBuf,
        /// The signed command (as written by `sargsctl … --out FILE`).
        file: PathBuf,
    },
    /// Rebuild the index from the chains, receipts and command journal
    /// (stop the agent first).
    Reindex {
        #[arg(long, default_value = "/etc/sargs/sargs.toml")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SARGS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => load(&config).and_then(|c| run(&c, None)),
        Command::CheckConfig { config } => load(&config).map(|c| {
            println!(
                "{}: OK — agent {}, {} camera(s) ({} enabled), policy {} ({})",
                config.display(),
                c.agent.id,
                c.cameras.len(),
                c.cameras.iter().filter(|c| c.enabled).count(),
                c.policy.id,
                c.agent.policy_file.display()
            );
        }),
        Command::Demo { dir, seconds, mqtt } => demo(&dir, seconds, mqtt.as_deref()),
        Command::Verify { config } => load(&config).and_then(|c| verify(&c)),
        Command::Status { config, json } => load(&config).and_then(|c| status(&c, json)),
        Command::Apply { config, file } => load(&config).and_then(|c| apply(&c, &file)),
        Command::Reindex { config } => load(&config).and_then(|c| reindex(&c)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sargs: {e}");
            ExitCode::FAILURE
        }
    }
}

fn load(path: &std::path::Path) -> Result<Config, String> {
    Config::load(path).map_err(|e| e.to_string())
}

/// Runs the agent until a signal (or `limit` elapses), telling a service
/// manager (systemd `Type=notify`) when it is ready, that it is alive, and
/// when it stops.
fn run(config: &Config, limit: Option<Duration>) -> Result<(), String> {
    let service = sargs::service::ServiceManager::from_env();
    let agent = sargs::agent::Agent::start(config).map_err(|e| e.to_string())?;
    let status = format!(
        "recording {} camera(s) into {}",
        agent.cameras(),
        config.agent.data_dir.display()
    );
    service.ready(&status);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio: {e}"))?;
    let cancel = agent.cancel_token();
    let liveness = agent.liveness().clone();
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| format!("installing SIGTERM handler: {e}"))?;
        let sleep = async {
            match limit {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(sleep);
        let mut watchdog = service.watchdog_period().map(|p| {
            let mut i = tokio::time::interval(p);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
        loop {
            let tick = async {
                match watchdog.as_mut() {
                    Some(i) => i.tick().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => { tracing::info!("SIGINT: stopping"); break }
                _ = term.recv() => { tracing::info!("SIGTERM: stopping"); break }
                _ = &mut sleep => { tracing::info!("demo time is up: stopping"); break }
                _ = cancel.cancelled() => break,
                _ = tick => { service.feed(&liveness, &status); }
            }
        }
        Ok::<(), String>(())
    })?;
    service.stopping();
    agent.stop().map_err(|e| e.to_string())
}

fn demo(dir: &std::path::Path, seconds: Option<u64>, mqtt: Option<&str>) -> Result<(), String> {
    let setup = sargs::demo::prepare(dir, mqtt).map_err(|e| e.to_string())?;
    println!("{}", setup.banner());
    run(&setup.config, seconds.map(Duration::from_secs))?;
    println!("{}", setup.summary().map_err(|e| e.to_string())?);
    Ok(())
}

fn verify(config: &Config) -> Result<(), String> {
    let key = sargs::seal::sign::DeviceKey::load(&config.agent.signing_key)
        .map_err(|e| format!("device key: {e}"))?;
    let data_dir = &config.agent.data_dir;
    let audit = sargs::retention::audit::audit(data_dir, &config.agent.id, &key.public_key())
        .map_err(|e| format!("{}: {e}", data_dir.display()))?;
    let mut bad = audit.problems.len();
    for (cam, r) in &audit.cameras {
        println!(
            "{cam}: {} records ({} segments, {} deleted with receipts, {} truncated, {} gaps): {}",
            r.records,
            r.segments,
            r.deleted,
            r.truncated,
            r.gaps,
            if r.ok() { "verified" } else { "PROBLEMS" }
        );
        for p in &r.problems {
            println!("  {p}");
        }
        bad += r.problems.len();
    }
    for cam in &config.cameras {
        if !audit.cameras.iter().any(|(c, _)| *c == cam.id) {
            println!("{}: no recordings yet", cam.id);
        }
    }
    println!(
        "receipts: {}; index: {}",
        audit.receipts,
        if audit.indexed { "checked" } else { "none yet" }
    );
    for p in &audit.problems {
        println!("  {p}");
    }
    if bad == 0 {
        println!("verified");
        Ok(())
    } else {
        Err(format!("{bad} problem(s) found"))
    }
}

fn status(config: &Config, json: bool) -> Result<(), String> {
    let path = config.agent.data_dir.join(sargs::retention::INDEX_FILE);
    if !path.exists() {
        return Err(format!(
            "{}: no index yet (the agent has not run on this data directory)",
            path.display()
        ));
    }
    let index = sargs::retention::index::Index::open_read_only(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let st = sargs::retention::status::status(&index, &config.policy, sargs::clock::now())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&st).map_err(|e| e.to_string())?
        );
    } else {
        print!("{st}");
    }
    Ok(())
}

fn apply(config: &Config, file: &std::path::Path) -> Result<(), String> {
    use sargs::store::{Store, StoreError};
    let bytes = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let data_dir = &config.agent.data_dir;
    let response = match Store::lock(data_dir) {
        Ok(store) => {
            let key = sargs::seal::sign::DeviceKey::load_or_create(&config.agent.signing_key)
                .map_err(|e| format!("device key: {e}"))?;
            let retention = sargs::agent::open_retention(config, std::sync::Arc::new(key))
                .map_err(|e| e.to_string())?;
            let r = retention
                .apply(&bytes, sargs::clock::now())
                .map_err(|e| e.to_string())?;
            drop(retention);
            store.close().map_err(|e| e.to_string())?;
            r
        }
        Err(StoreError::Locked { .. }) => {
            sargs::retention::inbox::submit(data_dir, &bytes, Duration::from_secs(30))?
        }
        Err(e) => return Err(e.to_string()),
    };
    println!(
        "{}",
        serde_json::to_string_pretty(&response).map_err(|e| e.to_string())?
    );
    if response.applied() {
        Ok(())
    } else {
        Err(format!(
            "{}: {} ({})",
            file.display(),
            response.reason.as_deref().unwrap_or("rejected"),
            response.code.as_deref().unwrap_or("")
        ))
    }
}

fn reindex(config: &Config) -> Result<(), String> {
    use sargs::store::{Store, StoreError};
    let data_dir = &config.agent.data_dir;
    let store = Store::lock(data_dir).map_err(|e| match e {
        StoreError::Locked { path } => format!(
            "{}: the agent is running; stop it before rebuilding the index",
            path.display()
        ),
        e => e.to_string(),
    })?;
    let key = sargs::seal::sign::DeviceKey::load(&config.agent.signing_key)
        .map_err(|e| format!("device key: {e}"))?;
    let (events, _) = sargs::agent::event_sink(config).map_err(|e| e.to_string())?;
    let setup = sargs::agent::retention_setup(config, std::sync::Arc::new(key), events);
    let st = sargs::retention::Retention::reindex(setup).map_err(|e| e.to_string())?;
    store.close().map_err(|e| e.to_string())?;
    println!("index rebuilt");
    print!("{st}");
    Ok(())
}
