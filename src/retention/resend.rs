//! `resend`: publishing again what a broker lost — deletion receipts and a
//! camera's records — from the agent's own files (`docs/commands.md`).
//!
//! Invariants:
//! - **The files are the source of truth.** Each message is made from the
//!   file as it is on disk now (`receipts/N.json`, `cameras/<camera>/N.json`),
//!   checked against the device key, and carries that file's envelope
//!   unchanged: nothing is signed again. A sequence up to the newest on disk
//!   whose file is gone is named `missing`; one that cannot be read, does
//!   not verify or does not parse is named `unreadable`, and the first such
//!   file's path and cause (the OS error of a failing disk) is given in
//!   `unreadable_reason`; neither stops the rest.
//! - **Bounded.** One command looks at no more than [`MAX_RESEND`] sequences
//!   (so it queues at most that many messages): receipts first, then the
//!   cameras in name order. Where it stops, the result says `truncated` and
//!   gives in `resume` the arguments of the `resend` that continues.
//! - **Read-only.** Like `inventory`, it changes nothing but the record that
//!   the command was seen; its events are handed over with its response, so
//!   the HQ link makes them durable in one write (response first).

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::{Engine, Event, RetentionError};
use sargs_core::seal::manifest::Manifest;
use sargs_core::seal::sign::Envelope;

/// The most sequences (receipts and records) one `resend` looks at.
pub const MAX_RESEND: usize = 10_000;

/// What one part of a resend (the receipts, or one camera) did.
struct Part {
    from: u64,
    /// The newest sequence on disk when it was looked at.
    head: u64,
    queued: u64,
    missing: Vec<u64>,
    unreadable: Vec<u64>,
    /// Why the first unreadable one was: its file and the cause.
    reason: Option<String>,
    /// Where it stopped for the bound, if it did.
    stopped_at: Option<u64>,
}

impl Part {
    fn json(&self) -> Value {
        let mut v = json!({
            "from": self.from,
            "head": self.head,
            "queued": self.queued,
            "missing": self.missing,
            "unreadable": self.unreadable,
        });
        if let (Some(why), Some(o)) = (&self.reason, v.as_object_mut()) {
            o.insert("unreadable_reason".into(), why.clone().into());
        }
        v
    }
}

/// What reading one sequence gave.
enum Read {
    Event(Event),
    Missing,
    Unreadable(String),
}

impl Engine {
    /// Queues (as pending events) the receipts from `receipts_from` and the
    /// records of each camera of `records_from` from its sequence, looking
    /// at no more than `limit` sequences; returns the command's result.
    pub(crate) fn resend(
        &mut self,
        receipts_from: Option<u64>,
        records_from: &BTreeMap<String, u64>,
        limit: usize,
    ) -> Result<Value, RetentionError> {
        let mut budget = limit;
        let mut resume = Map::new();
        let mut result = Map::new();
        let mut total = 0;
        if let Some(from) = receipts_from {
            let head = self.receipts_on_disk();
            let part = self.resend_part(from, head, &mut budget, |e, seq| e.read_receipt(seq));
            if let Some(at) = part.stopped_at {
                resume.insert("receipts_from".into(), json!(at));
            }
            total += part.queued;
            result.insert("receipts".into(), part.json());
        }
        let mut records = Map::new();
        let mut records_resume = Map::new();
        for (camera, &from) in records_from {
            let head = self.records_on_disk(camera)?;
            let part =
                self.resend_part(from, head, &mut budget, |e, seq| e.read_record(camera, seq));
            if let Some(at) = part.stopped_at {
                records_resume.insert(camera.clone(), json!(at));
            }
            total += part.queued;
            records.insert(camera.clone(), part.json());
        }
        if !records_from.is_empty() {
            result.insert("records".into(), Value::Object(records));
        }
        if !records_resume.is_empty() {
            resume.insert("records_from".into(), Value::Object(records_resume));
        }
        let truncated = !resume.is_empty();
        tracing::info!(queued = total, truncated, "resend");
        result.insert("queued".into(), json!(total));
        result.insert("truncated".into(), json!(truncated));
        if truncated {
            result.insert("resume".into(), Value::Object(resume));
        }
        Ok(Value::Object(result))
    }

    /// Reads `from..=head` through `read`, noting each event, while `budget` lasts.
    fn resend_part(
        &mut self,
        from: u64,
        head: u64,
        budget: &mut usize,
        mut read: impl FnMut(&Engine, u64) -> Read,
    ) -> Part {
        let mut part = Part {
            from,
            head,
            queued: 0,
            missing: Vec::new(),
            unreadable: Vec::new(),
            reason: None,
            stopped_at: None,
        };
        for seq in from..=head {
            if *budget == 0 {
                part.stopped_at = Some(seq);
                break;
            }
            *budget -= 1;
            match read(self, seq) {
                Read::Event(e) => {
                    self.note(e.resent());
                    part.queued += 1;
                }
                Read::Missing => part.missing.push(seq),
                Read::Unreadable(why) => {
                    tracing::warn!(sequence = seq, reason = %why, "resend: a file is unreadable");
                    part.unreadable.push(seq);
                    part.reason.get_or_insert(why);
                }
            }
        }
        part
    }

    /// The newest receipt on disk: the chain's head, or later if a deletion
    /// wrote receipts and failed before it committed them.
    fn receipts_on_disk(&self) -> u64 {
        let mut head = self.receipt_head.sequence;
        while self.receipts.path(head + 1).exists() {
            head += 1;
        }
        head
    }

    /// The newest record of `camera` on disk (or in the index, if its files
    /// went missing): the index's head, then any record committed since.
    fn records_on_disk(&self, camera: &str) -> Result<u64, RetentionError> {
        let dir = self.camera_dir(camera);
        let mut head = self.index.camera_head(camera).map_err(self.db_err())?;
        while dir.join(format!("{:010}.json", head + 1)).exists() {
            head += 1;
        }
        Ok(head)
    }

    fn read_receipt(&self, seq: u64) -> Read {
        match self.receipts.read_signed(seq, &self.key.public_key()) {
            Ok(Some((r, env))) if r.sequence == seq => Read::Event(Event::deleted(r, env)),
            Ok(Some((r, _))) => Read::Unreadable(format!("receipt {seq} says {}", r.sequence)),
            Ok(None) => Read::Missing,
            Err(why) => Read::Unreadable(why),
        }
    }

    fn read_record(&self, camera: &str, seq: u64) -> Read {
        let path = self.camera_dir(camera).join(format!("{seq:010}.json"));
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Read::Missing,
            Err(e) => return Read::Unreadable(format!("{}: {e}", path.display())),
        };
        let shown = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
        let env = match Envelope::open(&bytes, Some(&self.key.public_key())) {
            Ok(env) => env,
            Err(e) => return Read::Unreadable(shown(&e)),
        };
        let m: Manifest = match serde_json::from_str(&env.payload) {
            Ok(m) => m,
            Err(e) => return Read::Unreadable(shown(&e)),
        };
        if m.sequence != seq || m.camera_id != camera {
            return Read::Unreadable(shown(&format!(
                "the record says {}/{}",
                m.camera_id, m.sequence
            )));
        }
        match Event::committed(&m, &env) {
            Some(e) => Read::Event(e),
            None => Read::Unreadable(shown(&"a segment record without media")),
        }
    }
}
