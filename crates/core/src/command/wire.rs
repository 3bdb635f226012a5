//! The command payload on the wire: raw serde shapes, then validation into
//! [`Command`]. Every error names the field (`args.scope.from: …`).
//!
//! `kind` and `args` are one adjacently tagged enum, `RawAction`
//! (`#[serde(tag = "kind", content = "args")]`), one variant per kind: serde
//! reads `kind`, decodes `args` (absent or `null` counts as `{}`) into that
//! kind's shape, and writes both for [`to_payload`]. A payload is read in two
//! steps, so that its rejection codes are those of docs/commands.md:
//! 1. the envelope fields, with `kind` and `args` kept as JSON: a payload
//!    without this shape is `malformed`; `v` is checked first, so another
//!    version is `unsupported-version` whatever kinds it has;
//! 2. after the target, the action: an unknown kind or a bad `args` is
//!    `invalid`, named by the path `serde_path_to_error` reports
//!    (`args.scope.from: …`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::de::value::MapDeserializer;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::{Action, Command, Rejection, Scope, Target, COMMAND_VERSION};

/// Longest id (command, hold, request, restriction), in characters.
const MAX_ID: usize = 128;
/// Longest free text (issuer, case, reason), in characters.
const MAX_TEXT: usize = 512;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommand {
    v: u32,
    id: String,
    kind: String,
    issued_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    target: RawTarget,
    issuer: String,
    #[serde(default)]
    args: Option<Value>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fleet: Option<bool>,
}

#[derive(Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
struct RawScope {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cameras: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    to: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    segments: Option<Vec<String>>,
}

/// `kind` and `args` of a payload.
#[derive(Deserialize, Serialize)]
#[serde(tag = "kind", content = "args")]
enum RawAction {
    #[serde(rename = "hold.place")]
    HoldPlace(HoldPlace),
    #[serde(rename = "hold.release")]
    HoldRelease(HoldId),
    #[serde(rename = "hold.extend")]
    HoldExtend(HoldExtend),
    #[serde(rename = "request.open")]
    RequestOpen(RequestOpen),
    #[serde(rename = "request.extend")]
    RequestExtend(RequestExtend),
    #[serde(rename = "request.close")]
    RequestClose(RequestId),
    #[serde(rename = "inventory")]
    Inventory(ScopeOnly),
    #[serde(rename = "restrict")]
    Restrict(Restrict),
    #[serde(rename = "unrestrict")]
    Unrestrict(RestrictionId),
    #[serde(rename = "erase")]
    Erase(Erase),
    #[serde(rename = "offload")]
    Offload(ScopeOnly),
    #[serde(rename = "status")]
    Status(Empty),
    #[serde(rename = "resend")]
    Resend(Resend),
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct HoldPlace {
    hold: String,
    case: String,
    scope: RawScope,
    #[serde(skip_serializing_if = "Option::is_none")]
    until: Option<DateTime<Utc>>,
    /// Absent is `false` (and `false` is not written).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    offload: bool,
}
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct HoldId {
    hold: String,
}
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct HoldExtend {
    hold: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    until: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    beyond_cap_until: Option<DateTime<Utc>>,
}
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RequestOpen {
    request: String,
    scope: RawScope,
    #[serde(skip_serializing_if = "Option::is_none")]
    due: Option<DateTime<Utc>>,
}
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RequestExtend {
    request: String,
    due: DateTime<Utc>,
}
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RequestId {
    request: String,
}
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct ScopeOnly {
    scope: RawScope,
}
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Restrict {
    restriction: String,
    scope: RawScope,
    reason: String,
}
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RestrictionId {
    restriction: String,
}
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Erase {
    scope: RawScope,
    #[serde(skip_serializing_if = "Option::is_none")]
    request: Option<String>,
}
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Empty {}
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Resend {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    receipts_from: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    records_from: Option<BTreeMap<String, u64>>,
}

fn invalid(field: &str, why: impl std::fmt::Display) -> Rejection {
    Rejection::Invalid(format!("{field}: {why}"))
}

/// An id: 1..=128 of `[A-Za-z0-9._:/-]`.
pub fn id(field: &str, v: &str) -> Result<String, Rejection> {
    let ok = (1..=MAX_ID).contains(&v.chars().count())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._:/-".contains(c));
    if ok {
        Ok(v.to_owned())
    } else {
        Err(invalid(
            field,
            format!("{v:?} is not an id (1 to {MAX_ID} of A-Z a-z 0-9 . _ : / -)"),
        ))
    }
}

/// A free text: 1..=512 characters, not blank.
pub fn text(field: &str, v: &str) -> Result<String, Rejection> {
    if v.trim().is_empty() || v.chars().count() > MAX_TEXT {
        Err(invalid(
            field,
            format!("must be 1 to {MAX_TEXT} characters"),
        ))
    } else {
        Ok(v.to_owned())
    }
}

fn scope(field: &str, raw: RawScope) -> Result<Scope, Rejection> {
    match raw {
        RawScope {
            cameras: Some(cameras),
            from: Some(from),
            to: Some(to),
            segments: None,
        } => {
            if cameras.is_empty() {
                return Err(invalid(
                    &format!("{field}.cameras"),
                    "must name at least one camera",
                ));
            }
            for (i, c) in cameras.iter().enumerate() {
                id(&format!("{field}.cameras[{i}]"), c)?;
            }
            if from >= to {
                return Err(invalid(
                    &format!("{field}.from"),
                    format!("{from} is not before `to` ({to})"),
                ));
            }
            Ok(Scope::Range { cameras, from, to })
        }
        RawScope {
            cameras: None,
            from: None,
            to: None,
            segments: Some(ids),
        } => {
            if ids.is_empty() {
                return Err(invalid(
                    &format!("{field}.segments"),
                    "must name at least one segment",
                ));
            }
            for (i, s) in ids.iter().enumerate() {
                id(&format!("{field}.segments[{i}]"), s)?;
            }
            Ok(Scope::Segments(ids))
        }
        _ => Err(invalid(
            field,
            "either {\"cameras\": [...], \"from\": T, \"to\": T} or {\"segments\": [...]}",
        )),
    }
}

/// Decodes `kind` and `args` (absent or `null` is `{}`) through [`RawAction`].
fn raw_action(kind: String, args: Option<Value>) -> Result<RawAction, Rejection> {
    let args = args.unwrap_or_else(|| Value::Object(Map::new()));
    // `kind` first, so serde decodes `args` straight into the kind's shape
    // (and the path of an error in it starts with `args`).
    let fields = [("kind", Value::String(kind.clone())), ("args", args)];
    let de = MapDeserializer::<_, serde_json::Error>::new(fields.into_iter());
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        match field.as_str() {
            // `kind` is a string, so the only error there is an unknown kind.
            "kind" => invalid("kind", format!("unknown kind {kind:?}")),
            "." => invalid("args", e.inner()),
            _ => invalid(&field, e.inner()),
        }
    })
}

/// Checks the values of a decoded action.
fn action(raw: RawAction) -> Result<Action, Rejection> {
    Ok(match raw {
        RawAction::HoldPlace(a) => Action::HoldPlace {
            hold: id("args.hold", &a.hold)?,
            case: text("args.case", &a.case)?,
            scope: scope("args.scope", a.scope)?,
            until: a.until,
            offload: a.offload,
        },
        RawAction::HoldRelease(a) => Action::HoldRelease {
            hold: id("args.hold", &a.hold)?,
        },
        RawAction::HoldExtend(a) => {
            if a.until.is_none() && a.beyond_cap_until.is_none() {
                return Err(invalid(
                    "args",
                    "hold.extend needs `until` or `beyond_cap_until`",
                ));
            }
            Action::HoldExtend {
                hold: id("args.hold", &a.hold)?,
                until: a.until,
                beyond_cap_until: a.beyond_cap_until,
            }
        }
        RawAction::RequestOpen(a) => Action::RequestOpen {
            request: id("args.request", &a.request)?,
            scope: scope("args.scope", a.scope)?,
            due: a.due,
        },
        RawAction::RequestExtend(a) => Action::RequestExtend {
            request: id("args.request", &a.request)?,
            due: a.due,
        },
        RawAction::RequestClose(a) => Action::RequestClose {
            request: id("args.request", &a.request)?,
        },
        RawAction::Inventory(a) => Action::Inventory {
            scope: scope("args.scope", a.scope)?,
        },
        RawAction::Restrict(a) => Action::Restrict {
            restriction: id("args.restriction", &a.restriction)?,
            scope: scope("args.scope", a.scope)?,
            reason: text("args.reason", &a.reason)?,
        },
        RawAction::Unrestrict(a) => Action::Unrestrict {
            restriction: id("args.restriction", &a.restriction)?,
        },
        RawAction::Erase(a) => Action::Erase {
            scope: scope("args.scope", a.scope)?,
            request: a.request.map(|r| id("args.request", &r)).transpose()?,
        },
        RawAction::Offload(a) => Action::Offload {
            scope: scope("args.scope", a.scope)?,
        },
        RawAction::Status(Empty {}) => Action::Status,
        RawAction::Resend(a) => resend(a)?,
    })
}

/// A sequence number to resend from: records and receipts are numbered from 1.
fn sequence(field: &str, n: u64) -> Result<u64, Rejection> {
    if n == 0 {
        Err(invalid(field, "sequences start at 1"))
    } else {
        Ok(n)
    }
}

fn resend(a: Resend) -> Result<Action, Rejection> {
    let receipts_from = a
        .receipts_from
        .map(|n| sequence("args.receipts_from", n))
        .transpose()?;
    let records_from = a.records_from.unwrap_or_default();
    if receipts_from.is_none() && records_from.is_empty() {
        return Err(invalid(
            "args",
            "resend needs `receipts_from` or a camera in `records_from`",
        ));
    }
    for (camera, n) in &records_from {
        let field = format!("args.records_from.{camera}");
        // A camera id names the chain's directory: the config's rule.
        crate::config::check::id(camera).map_err(|why| invalid(&field, why))?;
        sequence(&field, *n)?;
    }
    Ok(Action::Resend {
        receipts_from,
        records_from,
    })
}

/// Parses and validates a payload (schema only: no signature, time or
/// target checks).
pub fn parse_payload(payload: &str) -> Result<Command, Rejection> {
    let raw: RawCommand =
        serde_json::from_str(payload).map_err(|e| Rejection::Malformed(e.to_string()))?;
    if raw.v != COMMAND_VERSION {
        return Err(Rejection::UnsupportedVersion(raw.v));
    }
    let target = match raw.target {
        RawTarget {
            agent: Some(a),
            fleet: None,
        } => Target::Agent(id("target.agent", &a)?),
        RawTarget {
            agent: None,
            fleet: Some(true),
        } => Target::Fleet,
        _ => {
            return Err(invalid(
                "target",
                "either {\"agent\": ID} or {\"fleet\": true}",
            ))
        }
    };
    let action = action(raw_action(raw.kind, raw.args)?)?;
    Ok(Command {
        id: id("id", &raw.id)?,
        issued_at: raw.issued_at,
        expires_at: raw.expires_at,
        target,
        issuer: text("issuer", &raw.issuer)?,
        action,
    })
}

impl From<&Scope> for RawScope {
    fn from(s: &Scope) -> RawScope {
        match s {
            Scope::Range { cameras, from, to } => RawScope {
                cameras: Some(cameras.clone()),
                from: Some(*from),
                to: Some(*to),
                segments: None,
            },
            Scope::Segments(ids) => RawScope {
                segments: Some(ids.clone()),
                ..RawScope::default()
            },
        }
    }
}

impl From<&Action> for RawAction {
    fn from(a: &Action) -> RawAction {
        match a {
            Action::HoldPlace {
                hold,
                case,
                scope,
                until,
                offload,
            } => RawAction::HoldPlace(HoldPlace {
                hold: hold.clone(),
                case: case.clone(),
                scope: scope.into(),
                until: *until,
                offload: *offload,
            }),
            Action::HoldRelease { hold } => RawAction::HoldRelease(HoldId { hold: hold.clone() }),
            Action::HoldExtend {
                hold,
                until,
                beyond_cap_until,
            } => RawAction::HoldExtend(HoldExtend {
                hold: hold.clone(),
                until: *until,
                beyond_cap_until: *beyond_cap_until,
            }),
            Action::RequestOpen {
                request,
                scope,
                due,
            } => RawAction::RequestOpen(RequestOpen {
                request: request.clone(),
                scope: scope.into(),
                due: *due,
            }),
            Action::RequestExtend { request, due } => RawAction::RequestExtend(RequestExtend {
                request: request.clone(),
                due: *due,
            }),
            Action::RequestClose { request } => RawAction::RequestClose(RequestId {
                request: request.clone(),
            }),
            Action::Inventory { scope } => RawAction::Inventory(ScopeOnly {
                scope: scope.into(),
            }),
            Action::Restrict {
                restriction,
                scope,
                reason,
            } => RawAction::Restrict(Restrict {
                restriction: restriction.clone(),
                scope: scope.into(),
                reason: reason.clone(),
            }),
            Action::Unrestrict { restriction } => RawAction::Unrestrict(RestrictionId {
                restriction: restriction.clone(),
            }),
            Action::Erase { scope, request } => RawAction::Erase(Erase {
                scope: scope.into(),
                request: request.clone(),
            }),
            Action::Offload { scope } => RawAction::Offload(ScopeOnly {
                scope: scope.into(),
            }),
            Action::Status => RawAction::Status(Empty {}),
            Action::Resend {
                receipts_from,
                records_from,
            } => RawAction::Resend(Resend {
                receipts_from: *receipts_from,
                records_from: Some(records_from.clone()).filter(|m| !m.is_empty()),
            }),
        }
    }
}

/// `value` as JSON; only for the plain data of this module, which always
/// serializes.
fn to_json(value: impl Serialize) -> Value {
    serde_json::to_value(value).unwrap_or_else(|_| unreachable!("plain data"))
}

/// A scope as it appears on the wire (`{"cameras","from","to"}` or `{"segments"}`).
pub fn scope_json(s: &Scope) -> Value {
    to_json(RawScope::from(s))
}

/// The payload text of `c` (compact JSON, the exact bytes that get signed).
pub fn to_payload(c: &Command) -> String {
    let mut action = match to_json(RawAction::from(&c.action)) {
        Value::Object(fields) => fields,
        _ => unreachable!("an adjacently tagged enum is a JSON object"),
    };
    let kind = action.remove("kind");
    // The serde names of `RawAction` and `Action::kind` must agree.
    debug_assert_eq!(kind.as_ref().and_then(Value::as_str), Some(c.action.kind()));
    let target = match &c.target {
        Target::Agent(a) => json!({"agent": a}),
        Target::Fleet => json!({"fleet": true}),
    };
    json!({
        "v": COMMAND_VERSION,
        "id": c.id,
        "kind": kind,
        "issued_at": c.issued_at,
        "expires_at": c.expires_at,
        "target": target,
        "issuer": c.issuer,
        "args": action.remove("args"),
    })
    .to_string()
}
