//! `sargs`: the edge agent's command line.

mod demo_hq;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Error, Result};
use clap::{Parser, Subcommand};
use sargs::clock::Clock;
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
        /// Run the retention clock FACTOR times faster (43200: 30 days pass
        /// in a minute): watch CCTV segments deleted with receipts while the
        /// police camera's are kept. Recording itself runs in real time.
        #[arg(long, value_name = "FACTOR",
              value_parser = clap::value_parser!(u32).range(1..=100_000_000))]
        accelerate: Option<u32>,
        /// Also place a legal hold on the CCTV camera's first SECONDS
        /// (default 60) through the signed-command path HQ uses: those
        /// segments outlive their deadline.
        #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "60")]
        hold: Option<u64>,
        /// Run HQ's side too: a Mosquitto on 127.0.0.1 (unless --mqtt), the
        /// HQ service sargs-hq with its ledger and API, the demo agent
        /// enrolled; print HQ's compliance report at the end.
        #[arg(long)]
        hq: bool,
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
    /// Take the recordings off a body camera's storage by hand: seal each,
    /// then remove it from the camera (see `[dock]`); the agent's dock mode
    /// does the same for cameras docked at `dock.paths`.
    Ingest {
        #[arg(long, default_value = "/etc/sargs/sargs.toml")]
        config: PathBuf,
        /// The camera's storage (e.g. /media/bodycam/SERIAL).
        #[arg(long)]
        from: PathBuf,
        /// The body camera's id (a [[dock.camera]]).
        #[arg(long)]
        camera: String,
        /// Leave the originals on the camera (overrides dock.keep_originals).
        #[arg(long)]
        keep: bool,
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
    if !matches!(cli.command, Command::Run { .. }) {
        sargs_core::cli::output_may_be_cut();
    }
    let result = match cli.command {
        Command::Run { config } => load(&config).and_then(|c| run(&c, None, Clock::system(), None)),
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
        Command::Demo {
            dir,
            seconds,
            mqtt,
            accelerate,
            hold,
            hq,
        } => demo(&dir, seconds, mqtt.as_deref(), accelerate, hold, hq),
        Command::Verify { config } => load(&config).and_then(|c| verify(&c)),
        Command::Status { config, json } => load(&config).and_then(|c| status(&c, json)),
        Command::Apply { config, file } => load(&config).and_then(|c| apply(&c, &file)),
        Command::Reindex { config } => load(&config).and_then(|c| reindex(&c)),
        Command::Ingest {
            config,
            from,
            camera,
            keep,
        } => load(&config).and_then(|c| ingest(&c, &from, &camera, keep)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sargs: {e:#}");
            ExitCode::FAILURE
        }
    }
}

// The library's errors already name their cause, so they enter `anyhow` as
// messages (`Error::msg`): `{:#}` would otherwise print that cause twice.

fn load(path: &std::path::Path) -> Result<Config> {
    Config::load(path).map_err(Error::msg)
}

/// Something to do every so often while the agent runs.
type Every<'a> = (Duration, &'a mut dyn FnMut(&sargs::agent::Agent));

/// Runs the agent (retention on `clock`) until a signal or `limit`, calling
/// `every` at its period.
fn run(
    config: &Config,
    limit: Option<Duration>,
    clock: Clock,
    every: Option<Every<'_>>,
) -> Result<()> {
    let agent = sargs::agent::Agent::start_with(config, clock).map_err(Error::msg)?;
    run_agent(agent, &config.agent.data_dir, limit, every)
}

/// Runs a started agent until a signal (or `limit` elapses), telling a
/// service manager (systemd `Type=notify`) when it is ready, that it is
/// alive, and when it stops.
fn run_agent(
    agent: sargs::agent::Agent,
    data_dir: &std::path::Path,
    limit: Option<Duration>,
    every: Option<Every<'_>>,
) -> Result<()> {
    let service = sargs::service::ServiceManager::from_env();
    let status = format!(
        "recording {} camera(s) into {}",
        agent.cameras(),
        data_dir.display()
    );
    service.ready(&status);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio")?;
    let cancel = agent.cancel_token();
    let liveness = agent.liveness().clone();
    let (period, mut tick) = match every {
        Some((p, f)) => (p, Some(f)),
        None => (Duration::from_secs(3600), None),
    };
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing SIGTERM handler")?;
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
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            let feed = async {
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
                _ = feed => { service.feed(&liveness, &status); }
                _ = ticks.tick(), if tick.is_some() => {
                    if let Some(f) = tick.as_mut() {
                        f(&agent);
                    }
                }
            }
        }
        anyhow::Ok(())
    })?;
    service.stopping();
    agent.stop().map_err(Error::msg)
}

fn demo(
    dir: &std::path::Path,
    seconds: Option<u64>,
    mqtt: Option<&str>,
    accelerate: Option<u32>,
    hold: Option<u64>,
    hq: bool,
) -> Result<()> {
    // With --hq and no --mqtt: a broker of the demo's own.
    let broker = match (hq, mqtt) {
        (true, None) => Some(demo_hq::DemoBroker::start(&dir.join("broker"))?),
        _ => None,
    };
    let mqtt = mqtt.or(broker.as_ref().map(demo_hq::DemoBroker::url));
    let setup = sargs::demo::prepare(dir, mqtt).map_err(Error::msg)?;
    let hq = match (hq, mqtt) {
        (true, Some(url)) => Some(demo_hq::DemoHq::start(&setup, url, accelerate)?),
        _ => None,
    };
    println!("{}", setup.banner());
    if let Some(hq) = &hq {
        println!("{}", hq.banner());
    }
    let clock = accelerate.map_or_else(Clock::system, Clock::accelerated);
    let started = clock.wall();
    if accelerate.is_some() {
        println!(
            "  retention clock runs {}x faster: 30 days pass in {:.0} s",
            clock.factor(),
            30.0 * 86_400.0 / f64::from(clock.factor())
        );
    }
    let agent = sargs::agent::Agent::start_with(&setup.config, clock).map_err(Error::msg)?;
    if let Some(secs) = hold {
        // Signed as HQ signs it and handed to the running agent like `sargs apply`.
        let (id, bytes) = setup
            .hold_command(&clock, sargs::clock::now(), secs)
            .map_err(Error::msg)?;
        let r = sargs::retention::inbox::submit(
            &setup.config.agent.data_dir,
            &bytes,
            Duration::from_secs(30),
        )
        .map_err(Error::msg)?;
        if !r.applied() {
            let why = r.reason.unwrap_or_default();
            let _ = agent.stop();
            bail!("the demo's hold was refused: {why}");
        }
        println!(
            "  legal hold {id} placed on {}'s first {secs} s (signed command, applied by the agent)",
            sargs::demo::CCTV_CAMERA
        );
    }
    let mut show = |agent: &sargs::agent::Agent| match agent.retention().status(clock.wall()) {
        Ok(st) => println!("{}", setup.progress(&clock, started, &st)),
        Err(e) => eprintln!("sargs: status: {e}"),
    };
    let every: Option<Every<'_>> = accelerate.map(|_| (Duration::from_secs(5), &mut show as _));
    run_agent(
        agent,
        &setup.config.agent.data_dir,
        seconds.map(Duration::from_secs),
        every,
    )?;
    println!("{}", setup.summary().map_err(Error::msg)?);
    if let Some(hq) = hq {
        println!("{}", hq.finish()?);
    }
    Ok(())
}

fn verify(config: &Config) -> Result<()> {
    let key = sargs_core::seal::sign::DeviceKey::load(&config.agent.signing_key)
        .map_err(Error::msg)
        .context("device key")?;
    let data_dir = &config.agent.data_dir;
    let audit = sargs::retention::audit::audit(data_dir, &config.agent.id, &key.public_key())
        .map_err(Error::msg)
        .with_context(|| data_dir.display().to_string())?;
    let mut bad = audit.problems.len();
    for (cam, r) in &audit.cameras {
        let ingested = if r.ingested > 0 {
            format!(", {} ingested from the dock", r.ingested)
        } else {
            String::new()
        };
        println!(
            "{cam}: {} records ({} segments{ingested}, {} deleted with receipts, {} truncated, {} gaps): {}",
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
        bail!("{bad} problem(s) found")
    }
}

fn status(config: &Config, json: bool) -> Result<()> {
    let path = config.agent.data_dir.join(sargs_core::layout::INDEX_FILE);
    if !path.exists() {
        bail!(
            "{}: no index yet (the agent has not run on this data directory)",
            path.display()
        );
    }
    let index = sargs_core::retention::index::Index::open_read_only(&path)
        .map_err(Error::msg)
        .with_context(|| path.display().to_string())?;
    let st = sargs::retention::status::status(&index, &config.policy, sargs::clock::now())
        .map_err(Error::msg)
        .with_context(|| path.display().to_string())?;
    if json {
        println!("{}", serde_json::to_string_pretty(&st)?);
    } else {
        print!("{st}");
    }
    Ok(())
}

fn apply(config: &Config, file: &std::path::Path) -> Result<()> {
    use sargs::store::{Store, StoreError};
    let bytes = std::fs::read(file).with_context(|| file.display().to_string())?;
    let data_dir = &config.agent.data_dir;
    let response = match Store::lock(data_dir) {
        Ok(store) => {
            let key = sargs_core::seal::sign::DeviceKey::load_or_create(&config.agent.signing_key)
                .map_err(Error::msg)
                .context("device key")?;
            let (retention, _) = sargs::wiring::open_retention(config, std::sync::Arc::new(key))
                .map_err(Error::msg)?;
            let r = retention
                .apply(&bytes, sargs::clock::now())
                .map_err(Error::msg)?;
            drop(retention);
            store.close().map_err(Error::msg)?;
            r
        }
        Err(StoreError::Locked { .. }) => {
            sargs::retention::inbox::submit(data_dir, &bytes, Duration::from_secs(30))
                .map_err(Error::msg)?
        }
        Err(e) => return Err(Error::msg(e)),
    };
    println!("{}", serde_json::to_string_pretty(&response)?);
    if response.applied() {
        Ok(())
    } else {
        bail!(
            "{}: {} ({})",
            file.display(),
            response.reason.as_deref().unwrap_or("rejected"),
            response.code.as_deref().unwrap_or("")
        )
    }
}

fn ingest(config: &Config, from: &std::path::Path, camera: &str, keep: bool) -> Result<()> {
    let f = sargs::dock::manual::ingest(config, from, camera, keep.then_some(true))
        .map_err(Error::msg)?;
    println!(
        "{camera}: {} sealed, {} already sealed, {} of {} left on the camera; {:.1} MiB in {:.1} s ({:.1} MiB/s)",
        f.sealed,
        f.already_sealed,
        f.failed,
        f.files_total,
        f.bytes as f64 / 1048576.0,
        f.seconds,
        f.rate_bytes_s as f64 / 1048576.0
    );
    match (f.complete, f.reason) {
        (true, _) => Ok(()),
        (false, Some(reason)) => bail!("ingest incomplete: {reason}"),
        (false, None) => bail!("ingest incomplete"),
    }
}

fn reindex(config: &Config) -> Result<()> {
    use sargs::store::{Store, StoreError};
    let data_dir = &config.agent.data_dir;
    let store = Store::lock(data_dir).map_err(|e| match e {
        StoreError::Locked { path } => anyhow::anyhow!(
            "{}: the agent is running; stop it before rebuilding the index",
            path.display()
        ),
        e => Error::msg(e),
    })?;
    let key = sargs_core::seal::sign::DeviceKey::load(&config.agent.signing_key)
        .map_err(Error::msg)
        .context("device key")?;
    let (events, _) = sargs::wiring::event_sink(config).map_err(Error::msg)?;
    let setup = sargs::wiring::retention_setup(config, std::sync::Arc::new(key), events);
    let st = sargs::retention::Retention::reindex(setup).map_err(Error::msg)?;
    store.close().map_err(Error::msg)?;
    println!("index rebuilt");
    print!("{st}");
    Ok(())
}
