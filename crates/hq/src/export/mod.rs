//! Exports: recordings released to an entitled recipient (law enforcement on
//! a justified request, a processor, a data subject's own access request) as
//! a new object that names its sources (`docs/design.md`, guarantee 5).
//!
//! ```text
//! <out>/export.json                    signed export record (HQ's key, the command envelope)
//! <out>/cameras/<camera>/NNNNNNNNNN.mp4   decrypted segment (fragmented MP4)
//! <out>/cameras/<camera>/NNNNNNNNNN.json  its signed manifest, byte for byte (device key)
//! <out>/receipts/NNNNNNNNNN.json          deletion receipt of a deleted segment in scope
//! ```
//!
//! Invariants:
//! - **The source is only read.** Nothing under the data directory is
//!   created, changed or removed — not even SQLite's `-wal`/`-shm` files: the
//!   index of a stopped store is read from a private copy, and a store whose
//!   agent is running (its `LOCK` is held) is read the way `sargs status`
//!   reads it.
//! - **Released only when proven.** A segment's plaintext is written only if
//!   its manifest verifies against the device key in an unbroken chain from
//!   the camera's first record, no restriction in force in the agent's index
//!   covers it, its media is present, and the SHA-256 of the very bytes that
//!   are decrypted matches the manifest (one pass: hashed as they are read).
//! - **Nothing silently skipped.** Every record in scope ends up in the export
//!   record: a source, a gap record, or a refusal with its reason (`restricted`
//!   with the restriction's id, `deleted` with its receipt, `missing`,
//!   `altered`, `unverified`, `unreadable`, `undecryptable`). A record whose
//!   manifest cannot be verified is in scope if the chain places it there.
//! - **Nothing partial.** Everything is written into a private staging folder
//!   (0700; files 0600, fsynced) that is published at the end — renamed to
//!   `--out`, or, when `--out` is an existing empty folder, moved into it with
//!   `export.json` last. Any error removes the staging folder: an export is
//!   complete exactly when its `export.json` exists.
//!
//! Restrictions are checked as of the index read (for a copy: when the copy
//! was taken); the export record says which command the index had applied
//! last. The agent's `inventory` command shows the live state.

mod plan;
mod write;

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use sargs_core::command::Scope;
use sargs_core::seal::sign::DeviceKey;

/// Version of the export record.
pub const EXPORT_VERSION: u32 = 1;

/// What to export, for whom, from where.
pub struct Request<'a> {
    /// The agent's data directory (a copy, or the gateway's own).
    pub data_dir: PathBuf,
    /// HQ's age identity file.
    pub identity: PathBuf,
    /// The device's Ed25519 public key.
    pub device_key: [u8; 32],
    pub scope: Scope,
    /// Export id (recorded; names the export in HQ's files).
    pub id: String,
    /// Case or request reference.
    pub case: String,
    /// Who receives it.
    pub recipient: String,
    /// Who at HQ issues it.
    pub issuer: String,
    /// HQ's signing key: signs `export.json`.
    pub signing_key: &'a DeviceKey,
    /// The folder to create (must not exist, or be empty).
    pub out: PathBuf,
    pub now: DateTime<Utc>,
}

/// Why nothing was exported. Each names what is wrong and where.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: {reason}")]
    DataDir { path: PathBuf, reason: String },
    #[error("scope: {0}")]
    Scope(String),
    #[error("{path} is signed by device key {found}, not by the given device key {expected}: wrong device key for this data directory")]
    WrongDeviceKey {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error("identity {path}: {reason}")]
    Identity { path: PathBuf, reason: String },
    #[error("index {path}: {reason}")]
    Index { path: PathBuf, reason: String },
    #[error("--out {path}: {reason}")]
    Out { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl ExportError {
    fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> ExportError + '_ {
        move |source| ExportError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// The export record: the payload of `export.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportRecord {
    pub v: u32,
    /// `"export"`.
    pub record: String,
    pub id: String,
    pub created_at: DateTime<Utc>,
    pub case: String,
    pub recipient: String,
    pub issuer: String,
    pub agent_id: String,
    /// The device key every source manifest verifies against (Base64).
    pub device_key: String,
    /// The scope as given, in the command wire form.
    pub scope: serde_json::Value,
    /// Which state of the agent's index restrictions were checked against.
    pub restrictions_as_of: IndexState,
    pub sources: Vec<Source>,
    pub gaps: Vec<GapEntry>,
    pub refused: Vec<Refusal>,
    /// `sargsctl <version>`.
    pub tool: String,
}

/// The state of the index the export read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexState {
    /// True when read beside the running agent, false for a stopped store or copy.
    pub live: bool,
    /// The last command the index had applied (none: no command yet).
    pub last_command: Option<AppliedCommand>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppliedCommand {
    pub id: String,
    pub kind: String,
    pub applied_at: DateTime<Utc>,
}

/// One exported segment: where it came from and what was written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub segment_id: String,
    pub camera: String,
    pub sequence: u64,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub class: String,
    /// Verbatim from the manifest.
    pub purpose: serde_json::Value,
    /// Verbatim from the manifest.
    pub notice: serde_json::Value,
    /// The copied manifest envelope, relative to the export folder.
    pub manifest: String,
    /// SHA-256 of the manifest payload (its link in the camera chain).
    pub manifest_sha256: String,
    pub ciphertext_sha256: String,
    pub ciphertext_bytes: u64,
    /// The plaintext file, relative to the export folder.
    pub file: String,
    pub sha256: String,
    pub bytes: u64,
    /// Cut short when recorded (crash, power loss): every whole chunk is here.
    pub truncated: bool,
}

/// A gap record in scope: nothing was recorded, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GapEntry {
    pub segment_id: String,
    pub camera: String,
    pub sequence: u64,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub reason: String,
    pub manifest: String,
    pub manifest_sha256: String,
}

/// Why a record in scope was not exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RefusalReason {
    /// Its manifest or its place in the chain does not verify.
    Unverified,
    /// Deleted, with a valid receipt (`receipt`).
    Deleted,
    /// Its media is gone and no valid receipt says why.
    Missing,
    /// A restriction of processing covers it (`restriction`).
    Restricted,
    /// Its media is not what its manifest states.
    Altered,
    /// Its media could not be read.
    Unreadable,
    /// HQ's identity does not open it, or its stream is damaged.
    Undecryptable,
}

/// A record in scope that was not exported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Refusal {
    pub segment_id: String,
    pub camera: String,
    pub sequence: u64,
    /// From the manifest, when it verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_sha256: Option<String>,
    pub reason: RefusalReason,
    /// What exactly, naming the file.
    pub detail: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restriction: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<ReceiptRef>,
}

/// The deletion receipt of a deleted segment, copied into the export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptRef {
    pub sequence: u64,
    /// The copied receipt envelope, relative to the export folder.
    pub file: String,
    pub deleted_at: DateTime<Utc>,
    /// `retention-expired`, `disk-pressure`, `erasure` or `offloaded`.
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<String>,
}

/// A finished export.
#[derive(Debug)]
pub struct Outcome {
    pub out: PathBuf,
    pub record: ExportRecord,
}

/// Exports `req.scope` from `req.data_dir` into `req.out`. Returns the
/// record written (refusals included); an error means nothing was written.
pub fn export(req: &Request<'_>) -> Result<Outcome, ExportError> {
    for (field, v) in [
        ("case", &req.case),
        ("recipient", &req.recipient),
        ("issuer", &req.issuer),
    ] {
        sargs_core::command::text(field, v).map_err(|e| ExportError::Invalid(e.to_string()))?;
    }
    sargs_core::command::id("id", &req.id).map_err(|e| ExportError::Invalid(e.to_string()))?;
    let bad_identity = |reason: String| ExportError::Identity {
        path: req.identity.clone(),
        reason,
    };
    let identities =
        sargs_core::seal::open::read_identities(&req.identity).map_err(bad_identity)?;
    refuse_out_inside(&req.out, &req.data_dir)?;
    let staging = write::Staging::create(&req.out)?;
    let plan = plan::Plan::make(req, &staging.scratch())?;
    staging.drop_scratch()?;
    let record = write::write(req, &plan, &identities, &staging)?;
    let out = staging.publish()?;
    Ok(Outcome { out, record })
}

/// The data directory is only read: an `--out` inside it is refused.
fn refuse_out_inside(out: &std::path::Path, data_dir: &std::path::Path) -> Result<(), ExportError> {
    let Ok(data) = data_dir.canonicalize() else {
        return Ok(()); // no such directory: the plan says so
    };
    // The nearest existing ancestor of `out`, resolved.
    let abs = std::path::absolute(out).map_err(ExportError::io(out))?;
    let inside = abs
        .ancestors()
        .find_map(|a| a.canonicalize().ok())
        .is_some_and(|a| a.starts_with(&data));
    if inside {
        return Err(ExportError::Out {
            path: out.to_owned(),
            reason: format!(
                "is inside the data directory {}, which an export never writes to",
                data_dir.display()
            ),
        });
    }
    Ok(())
}

/// Instants at the index's resolution, so a scope covers exactly what the
/// agent's own inventory finds for it.
fn millis(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}
