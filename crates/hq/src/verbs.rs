//! The command verbs `hold|release|extend|request|inventory|restrict|erase|offload|resend`,
//! shared by `sargsctl` and `sargs-hq` (the same flags): each builds one
//! command, signs it with HQ's command key, and writes it as a file for
//! `sargs apply` or publishes it over MQTT and prints the response(s).
//! `sargs-hq` takes the key and the broker from its config and records the
//! command in its ledger before publishing it.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Error, Result};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use clap::{Args, Subcommand};
use sargs_core::command::{Action, Command, Scope, Target};
use sargs_core::seal::sign::DeviceKey;

/// Options every command verb takes.
#[derive(Args, Debug)]
pub struct Common {
    /// HQ's command-signing key (from `sargsctl keygen --signing-key`;
    /// `sargs-hq` defaults to its config's `commands.key_file`).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// The agent the command is for.
    #[arg(long, conflicts_with = "fleet", required_unless_present = "fleet")]
    agent: Option<String>,
    /// Every agent of the fleet.
    #[arg(long)]
    fleet: bool,
    /// Who issues it (role or name), as the agent records it.
    #[arg(long)]
    issuer: String,
    /// Command id (default: random `c-` + 16 hex digits).
    #[arg(long)]
    id: Option<String>,
    /// How long the command stays valid: `90m`, `12h`, `7d` (at most 31 days).
    #[arg(long, default_value = "7d", value_parser = parse_duration)]
    expires_in: Duration,
    /// Where to write the signed command (must not exist), for `sargs apply`.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// With --broker: how long to wait for the response(s), seconds.
    #[arg(long, default_value_t = 30)]
    wait: u64,
    /// With --broker and --fleet: stop after this many responses.
    #[arg(long)]
    expect: Option<usize>,
    /// With --broker: print responses as JSON lines.
    #[arg(long)]
    json: bool,
}

/// How to reach HQ's MQTT broker.
#[derive(Args, Debug, Clone)]
pub struct BrokerArgs {
    /// Publish to the broker (mqtt://HOST[:PORT] or mqtts://HOST[:PORT]) and
    /// wait for the response(s).
    #[arg(long)]
    pub broker: Option<String>,
    /// Topic prefix.
    #[arg(long, default_value = "sargs")]
    pub prefix: String,
    /// PEM CA of the broker's certificate (mqtts://).
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    #[arg(long, requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    #[arg(long, requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    #[arg(long)]
    pub username: Option<String>,
    /// File whose first line is the MQTT password.
    #[arg(long, requires = "username")]
    pub password_file: Option<PathBuf>,
}

impl BrokerArgs {
    pub fn options(&self, url: &str) -> Result<crate::broker::BrokerOptions> {
        let password = match &self.password_file {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .with_context(|| format!("--password-file {}", p.display()))?
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
            ),
            None => None,
        };
        Ok(crate::broker::BrokerOptions {
            url: url.to_owned(),
            ca: self.ca_file.clone(),
            client_cert: self.client_cert.clone(),
            client_key: self.client_key.clone(),
            username: self.username.clone(),
            password,
        })
    }
}

/// Which records: cameras and a time range, or explicit segment ids.
#[derive(Args, Debug)]
pub struct ScopeArgs {
    /// Cameras, comma-separated (with --from and --to).
    #[arg(long, value_delimiter = ',', requires_all = ["from", "to"], conflicts_with = "segments")]
    cameras: Vec<String>,
    /// Start of the range: RFC 3339 (`2026-11-20T08:00:00Z`) or a date (midnight UTC).
    #[arg(long, value_parser = parse_time)]
    from: Option<DateTime<Utc>>,
    /// End of the range (exclusive).
    #[arg(long, value_parser = parse_time)]
    to: Option<DateTime<Utc>>,
    /// Segment ids `agent/camera/sequence`, comma-separated.
    #[arg(long, value_delimiter = ',')]
    segments: Vec<String>,
}

impl ScopeArgs {
    pub fn scope(self) -> Result<Scope> {
        if !self.segments.is_empty() {
            return Ok(Scope::Segments(self.segments));
        }
        match (self.cameras.is_empty(), self.from, self.to) {
            (false, Some(from), Some(to)) if from < to => Ok(Scope::Range {
                cameras: self.cameras,
                from,
                to,
            }),
            (false, Some(from), Some(to)) => bail!("--from {from} is not before --to {to}"),
            _ => bail!("give --cameras with --from and --to, or --segments"),
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum RequestVerb {
    /// Open a data-subject request: covered segments are kept while it is answered.
    Open {
        #[arg(long)]
        request: String,
        #[command(flatten)]
        scope: ScopeArgs,
        /// Due date (default one month after it is applied; at most three).
        #[arg(long, value_parser = parse_time)]
        due: Option<DateTime<Utc>>,
        #[command(flatten)]
        common: Common,
    },
    /// Move the due date (at most three months after opening).
    Extend {
        #[arg(long)]
        request: String,
        #[arg(long, value_parser = parse_time)]
        due: DateTime<Utc>,
        #[command(flatten)]
        common: Common,
    },
    /// Close an answered request (its protection ends).
    Close {
        #[arg(long)]
        request: String,
        #[command(flatten)]
        common: Common,
    },
}

/// The verbs, each with its own arguments.
#[derive(Subcommand, Debug)]
pub enum Verb {
    /// Place a legal hold.
    Hold {
        #[arg(long)]
        hold: String,
        /// Case or proceedings reference.
        #[arg(long)]
        case: String,
        #[command(flatten)]
        scope: ScopeArgs,
        /// The hold ends by itself at this instant.
        #[arg(long, value_parser = parse_time)]
        until: Option<DateTime<Utc>>,
        /// Also offload the held records to the evidence store (the agent
        /// needs `[offload]`).
        #[arg(long)]
        offload: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Release a legal hold.
    Release {
        #[arg(long)]
        hold: String,
        #[command(flatten)]
        common: Common,
    },
    /// Give a hold a new end, or keep its segments past the class cap.
    Extend {
        #[arg(long)]
        hold: String,
        #[arg(long, value_parser = parse_time, required_unless_present = "beyond_cap_until")]
        until: Option<DateTime<Utc>>,
        /// Keep held segments past their class's hold cap until this instant.
        #[arg(long, value_parser = parse_time)]
        beyond_cap_until: Option<DateTime<Utc>>,
        #[command(flatten)]
        common: Common,
    },
    /// Data-subject requests.
    Request {
        #[command(subcommand)]
        verb: RequestVerb,
    },
    /// Ask which records exist for cameras and a time range, and their state.
    Inventory {
        #[command(flatten)]
        scope: ScopeArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Restrict processing of covered segments (kept, marked), or lift it.
    Restrict {
        /// Restriction id (with a scope and --reason), or the one to lift (with --lift).
        #[arg(long, required_unless_present = "lift")]
        restriction: Option<String>,
        #[command(flatten)]
        scope: ScopeArgs,
        #[arg(long, required_unless_present = "lift")]
        reason: Option<String>,
        /// Lift this restriction.
        #[arg(long, conflicts_with_all = ["restriction", "reason"])]
        lift: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Erase covered segments (refused where a hold protects them).
    Erase {
        #[command(flatten)]
        scope: ScopeArgs,
        /// The data-subject request this answers (its own request-hold does not block).
        #[arg(long)]
        request: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Offload covered records to the evidence store (the agent needs `[offload]`).
    Offload {
        #[command(flatten)]
        scope: ScopeArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Have the agent publish again, from its files and with their signed
    /// envelopes, the deletion receipts and camera records HQ is missing.
    Resend {
        /// Every deletion receipt from this sequence on.
        #[arg(long)]
        receipts_from: Option<u64>,
        /// A camera's records from a sequence on, as CAMERA=N (repeatable).
        #[arg(long, value_name = "CAMERA=N", value_parser = parse_camera_from)]
        records_from: Vec<(String, u64)>,
        #[command(flatten)]
        common: Common,
    },
}

/// `CAMERA=N` of `--records-from`.
fn parse_camera_from(s: &str) -> Result<(String, u64), String> {
    s.split_once('=')
        .and_then(|(camera, n)| Some((camera.to_owned(), n.parse().ok()?)))
        .filter(|(camera, _)| !camera.is_empty())
        .ok_or_else(|| format!("{s:?} is not CAMERA=N (e.g. cam-1=4711)"))
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| {
            format!("{s:?} is neither RFC 3339 (2026-11-20T08:00:00Z) nor a date (2026-11-20)")
        })
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration like 90m, 12h or 7d");
    let (n, unit) = s.split_at(s.len().saturating_sub(1));
    let n: i64 = n.parse().map_err(|_| bad())?;
    let d = match unit {
        "m" => Duration::minutes(n),
        "h" => Duration::hours(n),
        "d" => Duration::days(n),
        _ => return Err(bad()),
    };
    if d <= Duration::zero() || d > Duration::days(31) {
        return Err(format!("{s:?}: must be positive and at most 31 days"));
    }
    Ok(d)
}

/// `prefix` + 16 random hex digits.
pub fn random_id(prefix: &str) -> Result<String> {
    let mut b = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .ok()
        .context("the system random source failed")?;
    Ok(format!("{prefix}{}", sargs_core::seal::manifest::hex(&b)))
}

/// `sargsctl`: builds, signs and writes or publishes the command.
pub fn run(verb: Verb) -> Result<()> {
    let (cmd, common) = build(verb)?;
    if common.out.is_none() && common.broker.broker.is_none() {
        bail!("give --out FILE (for `sargs apply`) or --broker URL");
    }
    let key = common.key.clone().context("--key is required")?;
    let bytes = sign(&cmd, &key)?;
    write_out(&common, &cmd, &bytes)?;
    match &common.broker.broker {
        Some(url) => publish(
            &common,
            &common.broker.options(url)?,
            &common.broker.prefix,
            &cmd,
            bytes,
        ),
        None => Ok(()),
    }
}

/// The command a verb asks for (checked as the agent will check it), and
/// the verb's common options.
pub fn build(verb: Verb) -> Result<(Command, Common)> {
    let (action, common) = match verb {
        Verb::Hold {
            hold,
            case,
            scope,
            until,
            offload,
            common,
        } => (
            Action::HoldPlace {
                hold,
                case,
                scope: scope.scope()?,
                until,
                offload,
            },
            common,
        ),
        Verb::Release { hold, common } => (Action::HoldRelease { hold }, common),
        Verb::Extend {
            hold,
            until,
            beyond_cap_until,
            common,
        } => (
            Action::HoldExtend {
                hold,
                until,
                beyond_cap_until,
            },
            common,
        ),
        Verb::Request { verb } => match verb {
            RequestVerb::Open {
                request,
                scope,
                due,
                common,
            } => (
                Action::RequestOpen {
                    request,
                    scope: scope.scope()?,
                    due,
                },
                common,
            ),
            RequestVerb::Extend {
                request,
                due,
                common,
            } => (Action::RequestExtend { request, due }, common),
            RequestVerb::Close { request, common } => (Action::RequestClose { request }, common),
        },
        Verb::Inventory { scope, common } => (
            Action::Inventory {
                scope: scope.scope()?,
            },
            common,
        ),
        Verb::Restrict {
            restriction,
            scope,
            reason,
            lift,
            common,
        } => match (lift, restriction, reason) {
            (Some(restriction), _, _) => (Action::Unrestrict { restriction }, common),
            (None, Some(restriction), Some(reason)) => (
                Action::Restrict {
                    restriction,
                    scope: scope.scope()?,
                    reason,
                },
                common,
            ),
            _ => bail!("--restriction and --reason, or --lift"),
        },
        Verb::Erase {
            scope,
            request,
            common,
        } => (
            Action::Erase {
                scope: scope.scope()?,
                request,
            },
            common,
        ),
        Verb::Offload { scope, common } => (
            Action::Offload {
                scope: scope.scope()?,
            },
            common,
        ),
        Verb::Resend {
            receipts_from,
            records_from,
            common,
        } => {
            if receipts_from.is_none() && records_from.is_empty() {
                bail!("give --receipts-from N and/or --records-from CAMERA=N");
            }
            let mut cameras = std::collections::BTreeMap::new();
            for (camera, n) in records_from {
                if cameras.insert(camera.clone(), n).is_some() {
                    bail!("--records-from names {camera} twice");
                }
            }
            (
                Action::Resend {
                    receipts_from,
                    records_from: cameras,
                },
                common,
            )
        }
    };
    let now = Utc::now();
    let cmd = Command {
        id: match common.id.clone() {
            Some(id) => id,
            None => random_id("c-")?,
        },
        issued_at: now,
        expires_at: now + common.expires_in,
        target: match common.agent.clone() {
            Some(a) => Target::Agent(a),
            None => Target::Fleet,
        },
        issuer: common.issuer.clone(),
        action,
    };
    // The same schema checks the agent applies, before anything is written.
    sargs_core::command::parse_payload(&sargs_core::command::to_payload(&cmd))
        .map_err(Error::msg)?;
    Ok((cmd, common))
}

/// Signs `cmd` with the key in `key`: the envelope bytes.
pub fn sign(cmd: &Command, key: &std::path::Path) -> Result<Vec<u8>> {
    let key = DeviceKey::load(key)
        .map_err(Error::msg)
        .with_context(|| format!("command key {}", key.display()))?;
    Ok(sargs_core::command::sign(&key, cmd))
}

/// With `--out`: writes the signed command (a new file, mode 0600, synced).
pub fn write_out(common: &Common, cmd: &Command, bytes: &[u8]) -> Result<()> {
    if let Some(out) = &common.out {
        let mut f = sargs_core::fsutil::create_new(out, 0o600)
            .with_context(|| format!("--out {}", out.display()))?;
        f.write_all(bytes)
            .and_then(|_| f.sync_all())
            .with_context(|| format!("--out {}", out.display()))?;
        println!("{} {} -> {}", cmd.id, cmd.action.kind(), out.display());
    }
    Ok(())
}

/// Publishes the command and prints the response(s); fails if any agent
/// rejected it or none answered.
pub fn publish(
    common: &Common,
    options: &crate::broker::BrokerOptions,
    prefix: &str,
    cmd: &Command,
    bytes: Vec<u8>,
) -> Result<()> {
    let (topic, responses) = match &cmd.target {
        Target::Agent(a) => (
            format!("{prefix}/agents/{a}/commands"),
            format!("{prefix}/agents/{a}/responses"),
        ),
        Target::Fleet => (
            format!("{prefix}/fleet/commands"),
            format!("{prefix}/agents/+/responses"),
        ),
    };
    let wait = std::time::Duration::from_secs(common.wait);
    let client = crate::broker::HqClient::connect(
        options,
        &format!("sargsctl-{}", cmd.id),
        &[responses],
        wait,
    )
    .map_err(Error::msg)?;
    client.publish(&topic, bytes).map_err(Error::msg)?;
    let expect = match cmd.target {
        Target::Agent(_) => Some(1),
        Target::Fleet => common.expect,
    };
    let got = client
        .responses(&cmd.id, expect, wait)
        .map_err(Error::msg)?;
    let mut rejected = 0;
    for r in &got {
        if common.json {
            println!("{r}");
        } else {
            println!(
                "{} {} {}{}{}",
                r["agent_id"].as_str().unwrap_or("?"),
                cmd.id,
                r["status"].as_str().unwrap_or("?"),
                r["reason"]
                    .as_str()
                    .map(|s| format!(": {s}"))
                    .unwrap_or_default(),
                match cmd.action {
                    Action::Resend { .. } => resend_summary(&r["result"]),
                    Action::Offload { .. } => offload_summary(&r["result"]),
                    Action::HoldPlace { offload: true, .. } => {
                        offload_summary(&r["result"]["offload"])
                    }
                    _ => String::new(),
                },
            );
        }
        if r["status"] != "applied" {
            rejected += 1;
        }
    }
    match (got.len(), rejected) {
        (0, _) => bail!("no response to {} within {} s", cmd.id, common.wait),
        (_, 0) => Ok(()),
        (n, r) => bail!("{r} of {n} agent(s) rejected {}", cmd.id),
    }
}

/// What a `resend` result says in a line: how many messages were queued, and
/// whether the bound stopped it (`--json` shows where).
fn resend_summary(result: &serde_json::Value) -> String {
    match (result["queued"].as_u64(), result["truncated"].as_bool()) {
        (Some(n), Some(true)) => format!(": {n} queued, truncated (resume: {})", result["resume"]),
        (Some(n), _) => format!(": {n} queued"),
        _ => String::new(),
    }
}

/// What an offload result says in a line: how many covered records were
/// queued for the store, and how many were there already.
fn offload_summary(result: &serde_json::Value) -> String {
    match (
        result["queued"].as_u64(),
        result["already_offloaded"].as_u64(),
    ) {
        (Some(q), Some(done)) => format!(": {q} queued for the store, {done} already offloaded"),
        _ => String::new(),
    }
}
