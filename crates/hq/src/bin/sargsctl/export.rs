//! `sargsctl export`: release recordings to an entitled recipient, as a
//! signed export that names its sources (the work is in [`sargs_hq::export`]).

use std::path::PathBuf;

use anyhow::{bail, Context, Error, Result};
use clap::Args;
use sargs_core::seal::sign::DeviceKey;
use sargs_hq::export::{ExportRecord, Request};

use sargs_hq::verbs::{random_id, ScopeArgs};

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The agent's data directory: a copy, or the gateway's own (only read,
    /// never changed).
    data_dir: PathBuf,
    /// HQ's age identity (from `sargsctl keygen`).
    #[arg(long, short = 'i')]
    identity: PathBuf,
    /// The device's Ed25519 public key (Base64): every manifest must verify against it.
    #[arg(long)]
    device_key: String,
    #[command(flatten)]
    scope: ScopeArgs,
    /// Case or request reference the export answers.
    #[arg(long)]
    case: String,
    /// Who receives it (body, and person or role).
    #[arg(long)]
    recipient: String,
    /// Who at HQ issues it (role or name).
    #[arg(long)]
    issuer: String,
    /// HQ's signing key (from `sargsctl keygen --signing-key`): signs export.json.
    #[arg(long)]
    key: PathBuf,
    /// Export id (default: random `x-` + 16 hex digits).
    #[arg(long)]
    id: Option<String>,
    /// The folder to write: must not exist, or be empty.
    #[arg(long)]
    out: PathBuf,
    /// Print the export record (export.json's payload) as JSON instead of a
    /// line per record.
    #[arg(long)]
    json: bool,
}

/// Runs the export; fails if anything was refused (the export is still
/// written, listing each refusal) or nothing could be exported at all.
pub fn run(a: ExportArgs) -> Result<()> {
    let key = DeviceKey::load(&a.key)
        .map_err(Error::msg)
        .context("--key")?;
    let device_key = crate::decode_key(&a.device_key).context("--device-key")?;
    let req = Request {
        data_dir: a.data_dir,
        identity: a.identity,
        device_key,
        scope: a.scope.scope()?,
        id: match a.id {
            Some(id) => id,
            None => random_id("x-")?,
        },
        case: a.case,
        recipient: a.recipient,
        issuer: a.issuer,
        signing_key: &key,
        out: a.out,
        now: sargs_core::clock::now(),
    };
    let done = sargs_hq::export::export(&req).map_err(Error::msg)?;
    let r = &done.record;
    if a.json {
        println!("{}", serde_json::to_string(r)?);
    } else {
        print_lines(r);
        println!(
            "export {} → {}: {} segment(s) exported, {} gap record(s), {} refused",
            r.id,
            done.out.display(),
            r.sources.len(),
            r.gaps.len(),
            r.refused.len()
        );
    }
    match r.refused.len() {
        0 => Ok(()),
        n => bail!(
            "{n} record(s) in scope refused; each is listed with its reason in {}",
            done.out.join("export.json").display()
        ),
    }
}

fn print_lines(r: &ExportRecord) {
    for s in &r.sources {
        println!(
            "exported {}  {} – {}  {} ({} bytes{})",
            s.segment_id,
            s.start.to_rfc3339(),
            s.end.to_rfc3339(),
            s.file,
            s.bytes,
            if s.truncated {
                ", cut short when recorded"
            } else {
                ""
            }
        );
    }
    for g in &r.gaps {
        println!(
            "gap      {}  {} – {}  {}",
            g.segment_id,
            g.start.to_rfc3339(),
            g.end.to_rfc3339(),
            g.reason
        );
    }
    for f in &r.refused {
        let reason = serde_json::to_value(f.reason)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        println!("refused  {}  {reason}: {}", f.segment_id, f.detail);
    }
    let idx = &r.restrictions_as_of;
    let last = idx.last_command.as_ref().map_or("none".into(), |c| {
        format!("{} {} at {}", c.kind, c.id, c.applied_at.to_rfc3339())
    });
    println!(
        "restrictions as of the agent's index{} (last command applied: {last}); the agent's `inventory` shows the live state",
        if idx.live { ", read live" } else { " in this copy" }
    );
}
