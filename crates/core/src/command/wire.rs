//! The command payload on the wire: raw serde shapes, then validation into
//! [`Command`]. Every error names the field (`args.scope.from: …`).

use chrono::{DateTime, Utc};
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HoldPlace {
    hold: String,
    case: String,
    scope: RawScope,
    until: Option<DateTime<Utc>>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HoldId {
    hold: String,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HoldExtend {
    hold: String,
    until: Option<DateTime<Utc>>,
    beyond_cap_until: Option<DateTime<Utc>>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestOpen {
    request: String,
    scope: RawScope,
    due: Option<DateTime<Utc>>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestExtend {
    request: String,
    due: DateTime<Utc>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestId {
    request: String,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScopeOnly {
    scope: RawScope,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Restrict {
    restriction: String,
    scope: RawScope,
    reason: String,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RestrictionId {
    restriction: String,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Erase {
    scope: RawScope,
    request: Option<String>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

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

fn args<T: serde::de::DeserializeOwned>(raw: Option<Value>) -> Result<T, Rejection> {
    let v = raw.unwrap_or_else(|| Value::Object(Map::new()));
    serde_json::from_value(v).map_err(|e| invalid("args", e))
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
    let action = match raw.kind.as_str() {
        "hold.place" => {
            let a: HoldPlace = args(raw.args)?;
            Action::HoldPlace {
                hold: id("args.hold", &a.hold)?,
                case: text("args.case", &a.case)?,
                scope: scope("args.scope", a.scope)?,
                until: a.until,
            }
        }
        "hold.release" => Action::HoldRelease {
            hold: id("args.hold", &args::<HoldId>(raw.args)?.hold)?,
        },
        "hold.extend" => {
            let a: HoldExtend = args(raw.args)?;
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
        "request.open" => {
            let a: RequestOpen = args(raw.args)?;
            Action::RequestOpen {
                request: id("args.request", &a.request)?,
                scope: scope("args.scope", a.scope)?,
                due: a.due,
            }
        }
        "request.extend" => {
            let a: RequestExtend = args(raw.args)?;
            Action::RequestExtend {
                request: id("args.request", &a.request)?,
                due: a.due,
            }
        }
        "request.close" => Action::RequestClose {
            request: id("args.request", &args::<RequestId>(raw.args)?.request)?,
        },
        "inventory" => Action::Inventory {
            scope: scope("args.scope", args::<ScopeOnly>(raw.args)?.scope)?,
        },
        "restrict" => {
            let a: Restrict = args(raw.args)?;
            Action::Restrict {
                restriction: id("args.restriction", &a.restriction)?,
                scope: scope("args.scope", a.scope)?,
                reason: text("args.reason", &a.reason)?,
            }
        }
        "unrestrict" => Action::Unrestrict {
            restriction: id(
                "args.restriction",
                &args::<RestrictionId>(raw.args)?.restriction,
            )?,
        },
        "erase" => {
            let a: Erase = args(raw.args)?;
            Action::Erase {
                scope: scope("args.scope", a.scope)?,
                request: a.request.map(|r| id("args.request", &r)).transpose()?,
            }
        }
        "status" => {
            args::<Empty>(raw.args)?;
            Action::Status
        }
        other => return Err(invalid("kind", format!("unknown kind {other:?}"))),
    };
    Ok(Command {
        id: id("id", &raw.id)?,
        issued_at: raw.issued_at,
        expires_at: raw.expires_at,
        target,
        issuer: text("issuer", &raw.issuer)?,
        action,
    })
}

/// A scope as it appears on the wire (`{"cameras","from","to"}` or `{"segments"}`).
pub fn scope_json(s: &Scope) -> Value {
    match s {
        Scope::Range { cameras, from, to } => json!({"cameras": cameras, "from": from, "to": to}),
        Scope::Segments(ids) => json!({"segments": ids}),
    }
}

/// The payload text of `c` (compact JSON, the exact bytes that get signed).
pub fn to_payload(c: &Command) -> String {
    let mut args = Map::new();
    let mut put = |k: &str, v: Value| {
        if !v.is_null() {
            args.insert(k.to_owned(), v);
        }
    };
    match &c.action {
        Action::HoldPlace {
            hold,
            case,
            scope,
            until,
        } => {
            put("hold", json!(hold));
            put("case", json!(case));
            put("scope", scope_json(scope));
            put("until", json!(until));
        }
        Action::HoldRelease { hold } => put("hold", json!(hold)),
        Action::HoldExtend {
            hold,
            until,
            beyond_cap_until,
        } => {
            put("hold", json!(hold));
            put("until", json!(until));
            put("beyond_cap_until", json!(beyond_cap_until));
        }
        Action::RequestOpen {
            request,
            scope,
            due,
        } => {
            put("request", json!(request));
            put("scope", scope_json(scope));
            put("due", json!(due));
        }
        Action::RequestExtend { request, due } => {
            put("request", json!(request));
            put("due", json!(due));
        }
        Action::RequestClose { request } => put("request", json!(request)),
        Action::Inventory { scope } => put("scope", scope_json(scope)),
        Action::Restrict {
            restriction,
            scope,
            reason,
        } => {
            put("restriction", json!(restriction));
            put("scope", scope_json(scope));
            put("reason", json!(reason));
        }
        Action::Unrestrict { restriction } => put("restriction", json!(restriction)),
        Action::Erase { scope, request } => {
            put("scope", scope_json(scope));
            put("request", json!(request));
        }
        Action::Status => {}
    }
    let target = match &c.target {
        Target::Agent(a) => json!({"agent": a}),
        Target::Fleet => json!({"fleet": true}),
    };
    json!({
        "v": COMMAND_VERSION,
        "id": c.id,
        "kind": c.action.kind(),
        "issued_at": c.issued_at,
        "expires_at": c.expires_at,
        "target": target,
        "issuer": c.issuer,
        "args": Value::Object(args),
    })
    .to_string()
}
