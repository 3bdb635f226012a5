//! What protects a record from deletion, decided from plain facts.
//!
//! Pure functions, no I/O: the sweeper, disk pressure and erasure all ask
//! [`Protections::protector`] and nothing else, so "a protected segment is
//! never deleted" has one definition. A record is protected at `now` by
//! - a legal hold that covers it, is not released, and has not reached its
//!   own end date (`until`);
//! - an open data-subject request that covers it and is not past its due date;
//! - a restriction that covers it and is not lifted;
//!
//! and each of these only until the record's class cap (`start + hold_cap`,
//! e.g. 3 years for municipal police) — past the cap only a hold extended
//! beyond it (`beyond_cap_until`, a signed `hold.extend`) still protects.
//! A record is due when `now >= delete_after` and nothing protects it.

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use crate::command::Scope;

/// The facts about one record that protection depends on.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub id: &'a str,
    pub camera: &'a str,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub delete_after: DateTime<Utc>,
    /// `start + hold_cap` for a class that caps holds.
    pub cap_at: Option<DateTime<Utc>>,
}

/// A scope ready for fast membership tests.
#[derive(Debug, Clone)]
pub enum Coverage {
    Range {
        cameras: HashSet<String>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    },
    Segments(HashSet<String>),
}

/// Instants at the index's resolution (whole milliseconds), so that a scope
/// covers exactly the records the index finds for it.
fn millis(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

impl From<&Scope> for Coverage {
    fn from(s: &Scope) -> Coverage {
        match s {
            Scope::Range { cameras, from, to } => Coverage::Range {
                cameras: cameras.iter().cloned().collect(),
                from: millis(*from),
                to: millis(*to),
            },
            Scope::Segments(ids) => Coverage::Segments(ids.iter().cloned().collect()),
        }
    }
}

impl Coverage {
    /// Same rule as [`Scope::covers`].
    pub fn covers(&self, f: &Facts<'_>) -> bool {
        match self {
            Coverage::Range { cameras, from, to } => {
                cameras.contains(f.camera) && f.start < *to && f.end >= *from
            }
            Coverage::Segments(ids) => ids.contains(f.id),
        }
    }
}

/// A legal hold as the index keeps it.
#[derive(Debug, Clone)]
pub struct Hold {
    pub id: String,
    pub coverage: Coverage,
    pub until: Option<DateTime<Utc>>,
    pub beyond_cap_until: Option<DateTime<Utc>>,
    pub released: bool,
}

/// A data-subject request (its request-hold).
#[derive(Debug, Clone)]
pub struct Request {
    pub id: String,
    pub coverage: Coverage,
    pub due: DateTime<Utc>,
    pub closed: bool,
}

/// A restriction of processing.
#[derive(Debug, Clone)]
pub struct Restriction {
    pub id: String,
    pub coverage: Coverage,
    pub lifted: bool,
}

/// Why a record may not be deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protector {
    Hold(String),
    Request(String),
    Restriction(String),
}

impl std::fmt::Display for Protector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Protector::Hold(id) => write!(f, "legal hold {id}"),
            Protector::Request(id) => write!(f, "data-subject request {id}"),
            Protector::Restriction(id) => write!(f, "restriction {id}"),
        }
    }
}

/// Every hold, request and restriction still in force or in the index.
#[derive(Debug, Clone, Default)]
pub struct Protections {
    pub holds: Vec<Hold>,
    pub requests: Vec<Request>,
    pub restrictions: Vec<Restriction>,
}

impl Protections {
    /// The first thing that protects `f` at `now`, ignoring the request
    /// `except_request` (an erasure answering that request).
    pub fn protector(
        &self,
        f: &Facts<'_>,
        now: DateTime<Utc>,
        except_request: Option<&str>,
    ) -> Option<Protector> {
        let within_cap = f.cap_at.is_none_or(|cap| now < cap);
        for h in &self.holds {
            if h.released || h.until.is_some_and(|u| now >= u) || !h.coverage.covers(f) {
                continue;
            }
            if within_cap || h.beyond_cap_until.is_some_and(|u| now < u) {
                return Some(Protector::Hold(h.id.clone()));
            }
        }
        if !within_cap {
            return None;
        }
        for r in &self.requests {
            if !r.closed
                && now < r.due
                && Some(r.id.as_str()) != except_request
                && r.coverage.covers(f)
            {
                return Some(Protector::Request(r.id.clone()));
            }
        }
        self.restriction(f)
            .map(|r| Protector::Restriction(r.id.clone()))
    }

    /// The first restriction in force over `f`. Unlike its protection from
    /// deletion, a restriction's ban on export knows no cap: it holds for as
    /// long as the segment exists and the restriction is not lifted.
    pub fn restriction(&self, f: &Facts<'_>) -> Option<&Restriction> {
        self.restrictions
            .iter()
            .find(|r| !r.lifted && r.coverage.covers(f))
    }

    /// Whether `f` must be deleted at `now`: past its deadline, unprotected.
    pub fn due(&self, f: &Facts<'_>, now: DateTime<Utc>) -> bool {
        now >= f.delete_after && self.protector(f, now, None).is_none()
    }

    /// Holds (not released, within their own end) covering `f` whose cap
    /// falls within `warn` from `now` and that are not extended past it.
    pub fn holds_nearing_cap<'p>(
        &'p self,
        f: &'p Facts<'_>,
        now: DateTime<Utc>,
        warn: chrono::Duration,
    ) -> impl Iterator<Item = &'p Hold> + 'p {
        self.holds.iter().filter(move |h| {
            let Some(cap) = f.cap_at else { return false };
            !h.released
                && h.until.is_none_or(|u| u > cap)
                && h.beyond_cap_until.is_none_or(|u| u <= cap)
                && now < cap
                && cap - now <= warn
                && h.coverage.covers(f)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restriction_refuses_export_past_the_cap_it_no_longer_protects_from() {
        let t = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .expect("time")
                .with_timezone(&Utc)
        };
        let f = Facts {
            id: "gw/cam-1/1",
            camera: "cam-1",
            start: t("2026-01-01T00:00:00Z"),
            end: t("2026-01-01T00:01:00Z"),
            delete_after: t("2026-04-01T00:00:00Z"),
            cap_at: Some(t("2029-01-01T00:00:00Z")),
        };
        let p = Protections {
            restrictions: vec![Restriction {
                id: "X-1".into(),
                coverage: Coverage::Segments(["gw/cam-1/1".to_owned()].into()),
                lifted: false,
            }],
            ..Protections::default()
        };
        let past_cap = t("2029-06-01T00:00:00Z");
        assert_eq!(p.protector(&f, past_cap, None), None);
        assert_eq!(p.restriction(&f).map(|r| r.id.as_str()), Some("X-1"));
        let lifted = Protections {
            restrictions: vec![Restriction {
                lifted: true,
                ..p.restrictions[0].clone()
            }],
            ..Protections::default()
        };
        assert!(lifted.restriction(&f).is_none());
    }
}
