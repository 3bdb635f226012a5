//! Deleting a segment: the one path every deletion takes (deadline, disk
//! pressure, erasure, freed after offload, and the completion at start of
//! one a crash interrupted). The order is the engine's invariant
//! ([`super`], "Provable"): receipts made durable and handed to the event
//! sink, then the media unlinked and its directory fsynced, then the index
//! marked in one transaction with the new receipt head.

use chrono::{DateTime, Utc};

use super::{Engine, Event, RetentionError};
use sargs_core::retention::index::{self, Deletion, Row};
use sargs_core::retention::receipt::{Reason, Receipt, ReceiptHead};
use sargs_core::seal::manifest;

impl Engine {
    /// Deletes `rows` (present segments) for `reason`: receipts first (then
    /// handed to the sink, so HQ's copy is queued before anything is gone),
    /// then the media, then the index. Returns the receipts written.
    pub(crate) fn delete(
        &mut self,
        rows: &[Row],
        reason: Reason,
        command: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Receipt>, RetentionError> {
        self.delete_naming(rows, reason, command, None, now)
    }

    /// [`Engine::delete`], each receipt naming `offloaded` (the verified
    /// object in the evidence store) if given.
    pub(crate) fn delete_naming(
        &mut self,
        rows: &[Row],
        reason: Reason,
        command: Option<&str>,
        offloaded: Option<&sargs_core::retention::receipt::StoredObject>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Receipt>, RetentionError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let sync = crate::clock::sync_state();
        let mut receipts: Vec<Receipt> = rows
            .iter()
            .map(|r| Receipt {
                v: 1,
                record: "deletion".into(),
                sequence: 0,
                agent_id: self.agent.clone(),
                segment_id: r.segment_id(&self.agent),
                camera_id: r.camera.clone(),
                segment_start: r.start,
                segment_end: r.end,
                class: r.class.clone(),
                delete_after: r.delete_after,
                manifest_sha256: manifest::hex(&r.manifest_sha256),
                ciphertext_sha256: r
                    .ciphertext_sha256
                    .map(|h| manifest::hex(&h))
                    .unwrap_or_default(),
                ciphertext_bytes: r.bytes,
                deleted_at: now,
                reason,
                command_id: command.map(str::to_owned),
                offloaded: offloaded.cloned(),
                clock: sync,
                prev_receipt_sha256: String::new(),
            })
            .collect();
        let dir = self.receipts.dir().to_owned();
        let envelopes = self
            .receipts
            .append(&self.key, &self.receipt_head, &mut receipts)
            .map_err(|source| RetentionError::Io { path: dir, source })?;
        let with_sha: Vec<(Receipt, String)> = receipts
            .iter()
            .zip(&envelopes)
            .map(|(r, env)| (r.clone(), manifest::sha256_hex(env.payload.as_bytes())))
            .collect();
        self.events.emit_all(
            receipts
                .iter()
                .zip(envelopes)
                .map(|(r, env)| Event::deleted(r.clone(), env))
                .collect(),
        );
        self.finish_deletions(&with_sha)?;
        Ok(receipts)
    }

    /// Steps 2 and 3 of a deletion for durable receipts (also recovery).
    pub(super) fn finish_deletions(
        &mut self,
        receipts: &[(Receipt, String)],
    ) -> Result<(), RetentionError> {
        let mut dirs = std::collections::BTreeSet::new();
        for (r, _) in receipts {
            let Some((camera, seq)) = index::parse_segment_id(&r.segment_id, &self.agent) else {
                return Err(RetentionError::Corrupt(format!(
                    "receipt {}: segment id {} is not this agent's",
                    r.sequence, r.segment_id
                )));
            };
            let dir = self.camera_dir(&camera);
            let media = dir.join(format!("{seq:010}.mp4.age"));
            match std::fs::remove_file(&media) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(RetentionError::Io {
                        path: media,
                        source,
                    })
                }
            }
            dirs.insert(dir);
        }
        for dir in dirs {
            sargs_core::fsutil::sync_dir(&dir)
                .map_err(|source| RetentionError::Io { path: dir, source })?;
        }
        let agent = self.agent.clone();
        let last = receipts.last().map(|(r, sha)| (r.sequence, sha.clone()));
        self.write(|w| {
            for (r, _) in receipts {
                if let Some((camera, seq)) = index::parse_segment_id(&r.segment_id, &agent) {
                    w.mark_deleted(
                        &camera,
                        seq,
                        &Deletion {
                            at: r.deleted_at,
                            receipt: r.sequence,
                            reason: r.reason.as_str().into(),
                        },
                    )?;
                }
            }
            if let Some((seq, sha)) = &last {
                w.set_meta("receipt_head", &seq.to_string())?;
                w.set_meta("receipt_sha256", sha)?;
            }
            Ok(())
        })?;
        if let Some((sequence, sha256)) = last {
            self.receipt_head = ReceiptHead { sequence, sha256 };
        }
        Ok(())
    }
}
