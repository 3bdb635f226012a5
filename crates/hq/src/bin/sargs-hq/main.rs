//! `sargs-hq`: HQ's long-running service and its operator commands
//! (`docs/hq-service.md`).

use std::path::PathBuf;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand, ValueEnum};

use sargs_hq::service::{
    agents, alarms, check, commands, config::HqConfig, db::Db, ingest, report, tokens,
};

#[derive(Parser)]
#[command(
    name = "sargs-hq",
    version,
    about = "HQ service: keeps what the fleet reports and proves its retention"
)]
struct Cli {
    /// The service's configuration.
    #[arg(long, global = true, default_value = "/etc/sargs-hq/hq.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service: collect the fleet's messages into the database.
    Run,
    /// Check the configuration and the database, then exit.
    CheckConfig,
    /// Enrolled and pending gateways.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// API tokens: make one (shown once), list, revoke.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Alarms: open ones, or all with --all.
    Alarms {
        #[arg(long)]
        all: bool,
        /// Clear the alarm with this key (an operator has seen to it).
        #[arg(long, value_name = "KEY")]
        clear: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Commands and where they stand with each agent (--pending: those an
    /// agent has not answered yet).
    Commands {
        #[arg(long)]
        pending: bool,
        #[arg(long)]
        json: bool,
    },
    /// Command verbs, with sargsctl's flags: signed with `commands.key_file`,
    /// recorded in the ledger, published to the config's broker.
    #[command(flatten)]
    Verb(Box<sargs_hq::verbs::Verb>),
    /// Messages that were not trusted, with the reason.
    Quarantine {
        #[arg(long)]
        json: bool,
    },
    /// The compliance report for a time range.
    Report {
        /// Records that started at or after (RFC 3339); default: the beginning.
        #[arg(long)]
        from: Option<DateTime<Utc>>,
        /// Records that started before (RFC 3339); default: now.
        #[arg(long)]
        to: Option<DateTime<Utc>>,
        #[arg(long)]
        agent: Option<String>,
        /// The instant the records' states are judged at (RFC 3339; default
        /// now): what was overdue, protected or present then.
        #[arg(long)]
        at: Option<DateTime<Utc>>,
        #[arg(long, value_enum, default_value_t = Format::Md)]
        format: Format,
    },
}

#[derive(Subcommand)]
enum AgentCommand {
    /// Enrol a gateway with its device key (`sargs keys` on the gateway prints it).
    Add {
        id: String,
        #[arg(long)]
        device_key: String,
        #[arg(long, default_value = "")]
        site: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Approve a gateway that announced itself, with the key it announced.
    Approve { id: String },
    /// List gateways.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Make a token for OWNER with ROLE; prints it once.
    Add {
        #[arg(long)]
        owner: String,
        #[arg(long, value_enum)]
        role: tokens::Role,
    },
    /// List tokens (never their secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by its id.
    Revoke { id: String },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Md,
    Csv,
    Json,
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("sargs-hq: {e:#}");
        std::process::exit(1);
    }
}

fn load(config: &std::path::Path) -> anyhow::Result<HqConfig> {
    Ok(HqConfig::load(config)?)
}

fn operator() -> String {
    std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "operator".into())
}

fn real_main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run) {
        sargs_core::cli::output_may_be_cut();
    }
    let config = cli.config.clone();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SARGS_LOG")
                // sqlx's notices (a migration table that exists) are not news.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn")),
        )
        // Colour only on a terminal: journald and log files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async move {
        match cli.command {
            Command::Run => {
                let cfg = load(&config)?;
                let (tx, rx) = tokio::sync::watch::channel(false);
                tokio::spawn(async move {
                    let mut term =
                        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                            .ok();
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
                    }
                    let _ = tx.send(true);
                });
                sargs_hq::service::run(cfg, rx).await
            }
            Command::CheckConfig => {
                let cfg = load(&config)?;
                // Closed before exit: SQLite folds its write-ahead log back in.
                Db::open(&cfg.database.url).await?.pool.close().await;
                println!("{}: ok", config.display());
                Ok(())
            }
            Command::Agent(AgentCommand::Add {
                id,
                device_key,
                site,
                description,
            }) => {
                let cfg = load(&config)?;
                let db = Db::open(&cfg.database.url).await?;
                agents::add(&db.pool, &id, &device_key, &site, &description, &operator()).await?;
                let n = agents::replay(&db.pool, &rules(&cfg), &id).await?;
                println!("agent {id} enrolled; {n} waiting message(s) kept");
                Ok(())
            }
            Command::Agent(AgentCommand::Approve { id }) => {
                let cfg = load(&config)?;
                let db = Db::open(&cfg.database.url).await?;
                agents::approve(&db.pool, &id, &operator()).await?;
                let n = agents::replay(&db.pool, &rules(&cfg), &id).await?;
                println!("agent {id} approved; {n} waiting message(s) kept");
                Ok(())
            }
            Command::Agent(AgentCommand::List { json }) => {
                let cfg = load(&config)?;
                let db = Db::open(&cfg.database.url).await?;
                let list = agents::list(&db.pool).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&list)?);
                } else {
                    for a in list {
                        println!(
                            "{}\t{}\t{}\t{}\t{}",
                            a.id,
                            a.state,
                            if a.online { "online" } else { "offline" },
                            a.site,
                            a.device_key
                        );
                    }
                }
                Ok(())
            }
            Command::Alarms { all, clear, json } => {
                let cfg = load(&config)?;
                let db = Db::open(&cfg.database.url).await?;
                if let Some(key) = clear {
                    if !alarms::clear_by_operator(&db.pool, &key).await? {
                        anyhow::bail!("no open alarm {key}");
                    }
                    println!("alarm {key} cleared");
                    return Ok(());
                }
                check::run(&db.pool, &cfg.ledger, Utc::now()).await?;
                let list = alarms::list(&db.pool, all).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&list)?);
                } else {
                    for a in list {
                        let state = a
                            .cleared_at
                            .map_or("open".to_owned(), |c| format!("cleared {}", c.to_rfc3339()));
                        println!(
                            "{}\t{}\t{}\t{}\t{}",
                            a.raised_at.to_rfc3339(),
                            a.kind,
                            state,
                            a.key,
                            a.detail
                        );
                    }
                }
                Ok(())
            }
            Command::Commands { pending, json } => {
                let cfg = load(&config)?;
                let db = Db::open(&cfg.database.url).await?;
                let list = commands::list(&db.pool, pending).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&list)?);
                } else {
                    for c in list {
                        println!(
                            "{}\t{}\t{}\t{}\t{}\twaiting: {}",
                            c.issued_at.to_rfc3339(),
                            c.id,
                            c.kind,
                            c.target,
                            c.issuer,
                            if c.waiting.is_empty() { "-".to_owned() } else { c.waiting.join(",") }
                        );
                    }
                }
                Ok(())
            }
            Command::Token(t) => {
                let cfg = load(&config)?;
                let db = Db::open(&cfg.database.url).await?;
                match t {
                    TokenCommand::Add { owner, role } => {
                        let (id, token) = tokens::add(&db.pool, &owner, role).await?;
                        eprintln!("token {id} for {owner} ({}): keep it secret, it is shown once", role.as_str());
                        println!("{token}");
                    }
                    TokenCommand::List { json } => {
                        let list = tokens::list(&db.pool).await?;
                        if json {
                            println!("{}", serde_json::to_string_pretty(&list)?);
                        } else {
                            for t in list {
                                let state = t.revoked_at.map_or("active".to_owned(), |r| format!("revoked {}", r.to_rfc3339()));
                                println!("{}\t{}\t{}\t{}", t.id, t.role, t.owner, state);
                            }
                        }
                    }
                    TokenCommand::Revoke { id } => {
                        tokens::revoke(&db.pool, &id).await?;
                        println!("token {id} revoked");
                    }
                }
                Ok(())
            }
            Command::Verb(verb) => {
                let cfg = load(&config)?;
                issue_verb(&cfg, *verb).await
            }
            Command::Quarantine { json } => {
                let cfg = load(&config)?;
                let db = Db::open(&cfg.database.url).await?;
                let list = ingest::quarantined(&db.pool).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&list)?);
                } else {
                    for q in list {
                        println!("{}\t{}\t{}\t{}", q.received_at.to_rfc3339(), q.code, q.topic, q.reason);
                    }
                }
                Ok(())
            }
            Command::Report {
                from,
                to,
                agent,
                at,
                format,
            } => {
                let cfg = load(&config)?;
                let db = Db::open(&cfg.database.url).await?;
                let now = at.unwrap_or_else(Utc::now);
                let r = report::make(
                    &db.pool,
                    &report::Query {
                        from: from.unwrap_or(DateTime::<Utc>::MIN_UTC),
                        to: to.unwrap_or(now),
                        agent,
                        now,
                        bound_ms: cfg.ledger.deletion_bound_s as i64 * 1000,
                        grace_ms: cfg.ledger.grace_hours as i64 * 3_600_000,
                    },
                )
                .await?;
                match format {
                    Format::Md => print!("{}", r.markdown()),
                    Format::Csv => print!("{}", r.csv()),
                    Format::Json => println!("{}", serde_json::to_string_pretty(&r)?),
                }
                Ok(())
            }
        }
    })
}

/// A command verb: signed with the config's key (or --key), recorded in the
/// ledger, then published to the config's broker (or --broker) and its
/// responses printed.
async fn issue_verb(cfg: &HqConfig, verb: sargs_hq::verbs::Verb) -> anyhow::Result<()> {
    let (cmd, common) = sargs_hq::verbs::build(verb)?;
    let key = common
        .key
        .clone()
        .or_else(|| cfg.command_key.clone())
        .context("no command key: set commands.key_file in the config, or give --key")?;
    let bytes = sargs_hq::verbs::sign(&cmd, &key)?;
    let db = Db::open(&cfg.database.url).await?;
    commands::record(&db.pool, &cfg.trust, &bytes).await?;
    sargs_hq::verbs::write_out(&common, &cmd, &bytes)?;
    let b = &cfg.broker;
    let options = sargs_hq::broker::BrokerOptions {
        url: common
            .broker
            .broker
            .clone()
            .unwrap_or_else(|| b.url.clone()),
        ca: b.ca_file.clone(),
        client_cert: b.client_cert.clone(),
        client_key: b.client_key.clone(),
        username: b.username.clone(),
        password: cfg.password().map_err(anyhow::Error::msg)?,
    };
    let prefix = b.prefix.clone();
    tokio::task::spawn_blocking(move || {
        sargs_hq::verbs::publish(&common, &options, &prefix, &cmd, bytes)
    })
    .await?
}

fn rules(cfg: &HqConfig) -> ingest::Rules {
    ingest::Rules {
        prefix: cfg.broker.prefix.clone(),
        max_payload_bytes: cfg.broker.max_payload_bytes,
        trust: cfg.trust.clone(),
    }
}
