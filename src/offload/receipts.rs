//! Receipts to the store: the agent's chain of deletion receipts is kept in
//! the evidence store beside the records, as `{agent}/receipts/NNNNNNNNNN.json`,
//! so that the store alone accounts for every record of a camera: its
//! objects are there, or a receipt says when it was deleted, why, and (for a
//! copy freed after offload) which object holds it.
//!
//! Invariants:
//! - a receipt goes only as the file the agent wrote, after its signature is
//!   checked against the device key (only signed bytes leave; a receipt
//!   holds no image content);
//! - receipts go in chain order, each verified by a read-back like a
//!   record's objects; the index's mark (the highest receipt in the store,
//!   all before it there too) moves only after that, so a crash makes the
//!   next attempt read back, never send twice, what is already there;
//! - an object under a receipt's key with other bytes is never overwritten:
//!   it is reported (`offload.failed`), and the receipts after it wait.

use sargs_core::seal::manifest;
use sargs_core::seal::sign::Envelope;

use super::{Failure, Flow, Item, Uploader, BATCH};

/// The name [`Uploader::later`] keeps a receipt that failed by itself under.
const LATER: &str = "\0receipts";

impl Uploader {
    /// Sends up to a batch of the receipts not yet in the store.
    pub(super) fn offload_receipts(&mut self, backoff: &mut std::time::Duration) -> Flow {
        let range = match self.setup.retention.receipts_to_offload() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "offload: reading the receipts' mark failed");
                return Flow::Next;
            }
        };
        for seq in range.take(BATCH) {
            if self.setup.cancel.is_cancelled() {
                return Flow::Stop;
            }
            if self.later.contains_key(&(LATER.to_owned(), seq)) || !self.may_send() {
                break;
            }
            let object = format!("{}/receipts/{seq:010}.json", self.setup.agent);
            let result = self.offload_receipt(seq, &object);
            let failed = result.is_err();
            let item = Item {
                later: (LATER.to_owned(), seq),
                object,
                segment_id: None,
            };
            match self.outcome(result, item, backoff) {
                Flow::Next if failed => break,
                Flow::Next => {}
                other => return other,
            }
        }
        Flow::Next
    }

    /// Sends receipt `seq` as `object`, verifies it, and moves the mark.
    fn offload_receipt(&self, seq: u64, object: &str) -> Result<(), Failure> {
        let s = &self.setup;
        let path = s.data_dir.join("receipts").join(format!("{seq:010}.json"));
        let bytes = std::fs::read(&path)
            .map_err(|e| Failure::Record(format!("{}: {e}", path.display())))?;
        Envelope::open(&bytes, Some(&s.device_key))
            .map_err(|e| Failure::Record(format!("{}: {e}", path.display())))?;
        self.ensure(object, &path, &manifest::sha256(&bytes), None)?;
        s.retention
            .mark_receipts_offloaded(seq)
            .map_err(|e| Failure::Record(e.to_string()))
    }
}
