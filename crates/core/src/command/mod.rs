//! Signed commands from HQ: holds, data-subject requests, inventory, erasure,
//! offload to the evidence store, resending what HQ missed.
//!
//! A command travels as a signed envelope ([`crate::seal::sign::Envelope`]):
//! Ed25519 over the exact payload bytes by an HQ key the agent trusts. The
//! payload is one JSON document:
//!
//! ```json
//! {"v":1,"id":"c-2026-0042","kind":"hold.place","issued_at":"2026-11-23T10:00:00Z",
//!  "expires_at":"2026-11-30T10:00:00Z","target":{"agent":"gw-01"},"issuer":"HQ duty officer",
//!  "args":{"hold":"H-17","case":"KP 11-2026/88","scope":{"cameras":["cam-1"],
//!  "from":"2026-11-20T08:00:00Z","to":"2026-11-20T09:00:00Z"}}}
//! ```
//!
//! Invariant: nothing outside this module sees a command that has not passed
//! every check — envelope and signature, a trusted key, schema, target, issue
//! time and expiry. (Replays are refused by the retention engine, which owns
//! the durable set of seen command ids.)

mod verify;
mod wire;

pub use verify::{sign, verify, Rejection, Trust, Verified};
pub use wire::{id, text};
pub use wire::{parse_payload, scope_json, to_payload};

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Version of the command payload.
pub const COMMAND_VERSION: u32 = 1;

/// A verified command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    /// Unique id chosen by HQ; a second command with the same id is a replay.
    pub id: String,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub target: Target,
    /// Who at HQ issued it (role or name of the officer), as HQ states it.
    pub issuer: String,
    pub action: Action,
}

/// Which agents a command is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    /// One agent, by id.
    Agent(String),
    /// Every agent of the fleet.
    Fleet,
}

/// What segments a hold, request, restriction, inventory or erasure covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scope {
    /// Every record of these cameras that overlaps `[from, to)`.
    Range {
        cameras: Vec<String>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    },
    /// Exactly these segment ids (`agent/camera/sequence`).
    Segments(Vec<String>),
}

impl Scope {
    /// Whether the record `segment_id` of `camera` spanning `[start, end]` is covered.
    pub fn covers(
        &self,
        segment_id: &str,
        camera: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> bool {
        match self {
            Scope::Range { cameras, from, to } => {
                cameras.iter().any(|c| c == camera) && start < *to && end >= *from
            }
            Scope::Segments(ids) => ids.iter().any(|id| id == segment_id),
        }
    }
}

/// The action a command asks for, with its arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Action {
    /// `hold.place`: keep every covered segment until released (legal hold).
    HoldPlace {
        hold: String,
        /// Case or proceedings reference.
        case: String,
        scope: Scope,
        /// The hold ends by itself at this instant, if given.
        until: Option<DateTime<Utc>>,
        /// Covered records are also offloaded to the evidence store
        /// (`offload = true`; the agent needs `[offload]`).
        offload: bool,
    },
    /// `hold.release`.
    HoldRelease { hold: String },
    /// `hold.extend`: a new end date, and/or keeping held segments past their
    /// class's hold cap (e.g. 3 years for municipal police) until an instant.
    HoldExtend {
        hold: String,
        until: Option<DateTime<Utc>>,
        beyond_cap_until: Option<DateTime<Utc>>,
    },
    /// `request.open`: a data-subject request; keeps covered segments while it
    /// is answered (default one month from opening, extendable to three).
    RequestOpen {
        request: String,
        scope: Scope,
        due: Option<DateTime<Utc>>,
    },
    /// `request.extend`: a later due date (at most three months after opening).
    RequestExtend { request: String, due: DateTime<Utc> },
    /// `request.close`: answered; its protection ends.
    RequestClose { request: String },
    /// `inventory`: which records exist for a scope, and their state.
    Inventory { scope: Scope },
    /// `restrict`: covered segments are kept, marked, and refused for export.
    Restrict {
        restriction: String,
        scope: Scope,
        reason: String,
    },
    /// `unrestrict`: lifts a restriction.
    Unrestrict { restriction: String },
    /// `erase`: deletes covered segments (with receipts) except those a hold,
    /// another open request or a restriction protects.
    Erase {
        scope: Scope,
        /// The data-subject request this erasure answers, if any; its own
        /// request-hold does not block the erasure.
        request: Option<String>,
    },
    /// `offload`: every covered record goes to the evidence store
    /// (`[offload]`), as if its camera offloaded everything it seals.
    Offload { scope: Scope },
    /// `status`: the agent's retention status.
    Status,
    /// `resend`: publish again, from the agent's files, what a broker may have
    /// lost — the deletion receipts from `receipts_from` on, and each named
    /// camera's records from its sequence on — each with its signed envelope.
    /// At least one of the two is given; a camera not named gets nothing.
    Resend {
        receipts_from: Option<u64>,
        records_from: BTreeMap<String, u64>,
    },
}

impl Action {
    /// Whether it asks for records to go to the evidence store (`offload`,
    /// `hold.place` with `offload = true`).
    pub fn offloads(&self) -> bool {
        matches!(
            self,
            Action::Offload { .. } | Action::HoldPlace { offload: true, .. }
        )
    }

    /// The `kind` string on the wire.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::HoldPlace { .. } => "hold.place",
            Action::HoldRelease { .. } => "hold.release",
            Action::HoldExtend { .. } => "hold.extend",
            Action::RequestOpen { .. } => "request.open",
            Action::RequestExtend { .. } => "request.extend",
            Action::RequestClose { .. } => "request.close",
            Action::Inventory { .. } => "inventory",
            Action::Restrict { .. } => "restrict",
            Action::Unrestrict { .. } => "unrestrict",
            Action::Erase { .. } => "erase",
            Action::Offload { .. } => "offload",
            Action::Status => "status",
            Action::Resend { .. } => "resend",
        }
    }
}

#[cfg(test)]
mod tests;
