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
    },
    /// Check every camera's chain: signatures, sequence, hashes, gaps.
    Verify {
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
        Command::Demo { dir, seconds } => demo(&dir, seconds),
        Command::Verify { config } => load(&config).and_then(|c| verify(&c)),
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

/// Runs the agent until a signal (or `limit` elapses).
fn run(config: &Config, limit: Option<Duration>) -> Result<(), String> {
    let agent = sargs::agent::Agent::start(config).map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio: {e}"))?;
    let cancel = agent.cancel_token();
    rt.block_on(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| format!("installing SIGTERM handler: {e}"))?;
        let sleep = async {
            match limit {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = sleep => tracing::info!("demo time is up: stopping"),
            _ = cancel.cancelled() => {}
        }
        Ok::<(), String>(())
    })?;
    agent.stop().map_err(|e| e.to_string())
}

fn demo(dir: &std::path::Path, seconds: Option<u64>) -> Result<(), String> {
    let setup = sargs::demo::prepare(dir).map_err(|e| e.to_string())?;
    println!("{}", setup.banner());
    run(&setup.config, seconds.map(Duration::from_secs))?;
    println!("{}", setup.summary().map_err(|e| e.to_string())?);
    Ok(())
}

fn verify(config: &Config) -> Result<(), String> {
    let key = sargs::seal::sign::DeviceKey::load(&config.agent.signing_key)
        .map_err(|e| format!("device key: {e}"))?;
    let mut bad = 0;
    for cam in &config.cameras {
        let dir = config.agent.data_dir.join("cameras").join(&cam.id);
        if !dir.exists() {
            println!("{}: no recordings yet", cam.id);
            continue;
        }
        let r = sargs::seal::verify::verify_camera(&dir, &key.public_key())
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        println!(
            "{}: {} records ({} segments, {} truncated, {} gaps): {}",
            cam.id,
            r.records,
            r.segments,
            r.truncated,
            r.gaps,
            if r.ok() { "verified" } else { "PROBLEMS" }
        );
        for p in &r.problems {
            println!("  {p}");
        }
        bad += r.problems.len();
    }
    if bad == 0 {
        Ok(())
    } else {
        Err(format!("{bad} problem(s) found"))
    }
}
