//! The engine's side of offload: the records that wait for the evidence
//! store, read from the index, and the record of a verified object written
//! into it — by the engine, the index's one writer, in one transaction, with
//! the `segment.offloaded` event handed over after the commit; with
//! `[offload] local = "free"`, the local media freed by a deletion whose
//! signed receipt names the verified object, never of a protected record;
//! and what HQ asks to offload (an `offload` command, a hold with offload):
//! refused without a store when HQ sends it, never when the journal replays
//! it, so a hold is never lost to a later change of config.

use chrono::{DateTime, Utc};
use sargs_core::retention::offloads::{Offloaded, Pending, Waiting};
use sargs_core::retention::receipt::{Reason, StoredObject};
use sargs_core::seal::manifest::hex;

use super::{Engine, Retention, RetentionError};
use crate::events::{self, Event};
use sargs_core::command::{Command, Rejection, Scope};

/// The index's meta key of the highest receipt verified in the store (all
/// before it are there too). Lost with the index, it only costs a read-back
/// of each receipt already in the store.
const RECEIPTS_OFFLOADED: &str = "offload_receipts";

impl Retention {
    /// Up to `limit` records of `cameras` that are not yet offloaded, oldest
    /// sealed first.
    pub fn offload_pending(
        &self,
        cameras: &[String],
        limit: usize,
    ) -> Result<Vec<Pending>, RetentionError> {
        self.run(|e| e.index.offload_pending(cameras, limit).map_err(e.db_err()))
    }

    /// How much of `cameras` waits for the store.
    pub fn offload_waiting(&self, cameras: &[String]) -> Result<Waiting, RetentionError> {
        self.run(|e| e.index.offload_waiting(cameras).map_err(e.db_err()))
    }

    /// Where `camera`'s record `seq` is in the store, if verified there.
    pub fn offloaded(&self, camera: &str, seq: u64) -> Result<Option<Offloaded>, RetentionError> {
        self.run(|e| e.index.offloaded(camera, seq).map_err(e.db_err()))
    }

    /// Records `camera`'s record `seq` as offloaded to `o`. The caller has
    /// read every object back and matched it (see `crate::offload`).
    pub fn mark_offloaded(
        &self,
        camera: &str,
        seq: u64,
        o: &Offloaded,
    ) -> Result<(), RetentionError> {
        self.run(|e| {
            e.write(|w| w.mark_offloaded(camera, seq, o))?;
            e.pending
                .push(Event::SegmentOffloaded(Box::new(events::Offloaded {
                    segment_id: format!("{}/{camera}/{seq}", e.agent),
                    camera_id: camera.to_owned(),
                    sequence: seq,
                    store: o.store.clone(),
                    manifest_key: o.manifest_key.clone(),
                    manifest_object_sha256: hex(&o.manifest_sha256),
                    media_key: o.media.as_ref().map(|(k, _)| k.clone()),
                    ciphertext_sha256: o.media.as_ref().map(|(_, h)| hex(h)),
                    bytes: o.bytes,
                })));
            Ok(())
        })
    }

    /// The receipts not yet in the store: the numbers after the last one
    /// verified there, up to the chain's head.
    pub fn receipts_to_offload(&self) -> Result<std::ops::RangeInclusive<u64>, RetentionError> {
        self.run(|e| {
            let done: u64 = e
                .index
                .meta(RECEIPTS_OFFLOADED)
                .map_err(e.db_err())?
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            Ok(done + 1..=e.receipt_head.sequence)
        })
    }

    /// Records that receipts up to `seq` are verified in the store.
    pub fn mark_receipts_offloaded(&self, seq: u64) -> Result<(), RetentionError> {
        self.run(|e| e.write(|w| w.set_meta(RECEIPTS_OFFLOADED, &seq.to_string())))
    }

    /// Frees the local media of `camera`'s record `seq` once `object` (its
    /// media, verified in the store) holds it: a deletion with a signed
    /// receipt of reason `offloaded` naming the object, in the same order as
    /// every deletion (receipt, media, index). A record that a hold, request
    /// or restriction protects, or that is already gone, is left alone.
    /// Returns whether it was freed.
    pub fn free_offloaded(
        &self,
        camera: &str,
        seq: u64,
        object: &StoredObject,
        now: DateTime<Utc>,
    ) -> Result<bool, RetentionError> {
        self.run(|e| {
            let Some(row) = e.index.record(camera, seq).map_err(e.db_err())? else {
                return Ok(false);
            };
            if row.gap || row.deleted.is_some() {
                return Ok(false);
            }
            let protections = e.index.protections().map_err(e.db_err())?;
            let id = row.segment_id(&e.agent);
            if protections.protector(&row.facts(&id), now, None).is_some() {
                return Ok(false);
            }
            e.delete_naming(&[row], Reason::Offloaded, None, Some(object), now)?;
            Ok(true)
        })
    }
}

/// A command's ask to offload: its scope, how many records it covers and
/// how many of them are already in the store.
pub(super) struct Asked {
    pub scope: Scope,
    pub records: u64,
    pub done: u64,
}

impl Asked {
    /// What the response says of it.
    pub fn result(&self) -> serde_json::Value {
        serde_json::json!({"covered_records": self.records,
            "queued": self.records - self.done, "already_offloaded": self.done})
    }
}

impl Engine {
    /// The refusal of a command HQ sent (`live`, not replayed from the
    /// journal) that asks for offload when `[offload]` names no store.
    pub(super) fn offload_refusal(&self, cmd: &Command, live: bool) -> Option<Rejection> {
        (live && cmd.action.offloads() && !self.offload_store).then(|| {
            Rejection::Refused(
                "this agent has no [offload] section: there is no evidence store to offload to \
                 (docs/config.md, [offload]); nothing was changed"
                    .into(),
            )
        })
    }

    /// What `cmd` asks to offload, counted against the index, if anything.
    pub(super) fn offload_asked(&self, cmd: &Command) -> Result<Option<Asked>, RetentionError> {
        use sargs_core::command::Action;
        let scope = match &cmd.action {
            Action::Offload { scope }
            | Action::HoldPlace {
                scope,
                offload: true,
                ..
            } => scope,
            _ => return Ok(None),
        };
        let (records, done) = self
            .index
            .offload_covered(scope, &self.agent)
            .map_err(self.db_err())?;
        Ok(Some(Asked {
            scope: scope.clone(),
            records,
            done,
        }))
    }
}
