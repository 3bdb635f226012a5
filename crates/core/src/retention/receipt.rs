//! Deletion receipts: signed, chained, and durable before the media goes.
//!
//! ```text
//! <data_dir>/receipts/0000000001.json   signed envelope of a Receipt
//! ```
//!
//! Invariant: a sealed media file is removed only after its receipt is on
//! disk (file fsynced, renamed into place, directory fsynced). Receipts are
//! numbered from 1 without holes and each names the SHA-256 of the previous
//! receipt's payload, so a removed or altered receipt breaks the chain. The
//! receipt keeps what HQ needs to prove the deletion against the segment's
//! manifest (which stays on disk: it holds no image content) — and it outlives
//! the segment.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::fsutil;
use crate::seal::manifest::{self, GENESIS};
use crate::seal::sign::{DeviceKey, Envelope};

/// Why a segment was deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// Its retention period ended and nothing protected it.
    RetentionExpired,
    /// Free space fell below the floor; deleted early, earliest deadline first.
    DiskPressure,
    /// An `erase` command from HQ.
    Erasure,
    /// The local copy, once verified in the evidence store (`offloaded`
    /// names the object), with `[offload] local = "free"`.
    Offloaded,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::RetentionExpired => "retention-expired",
            Reason::DiskPressure => "disk-pressure",
            Reason::Erasure => "erasure",
            Reason::Offloaded => "offloaded",
        }
    }
}

/// Where a freed segment's media is: the evidence store (endpoint and
/// bucket), the object key, and the SHA-256 it was read back with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredObject {
    pub store: String,
    pub key: String,
    pub sha256: String,
}

/// The signed statement that one segment was deleted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    pub v: u32,
    pub record: String,
    /// Position in this agent's receipt chain, from 1.
    pub sequence: u64,
    pub agent_id: String,
    pub segment_id: String,
    pub camera_id: String,
    pub segment_start: DateTime<Utc>,
    pub segment_end: DateTime<Utc>,
    pub class: String,
    pub delete_after: DateTime<Utc>,
    /// SHA-256 of the segment's manifest payload (as in the camera chain).
    pub manifest_sha256: String,
    pub ciphertext_sha256: String,
    pub ciphertext_bytes: u64,
    pub deleted_at: DateTime<Utc>,
    pub reason: Reason,
    /// The command that caused it (erasure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<String>,
    /// The verified object in the evidence store (reason `offloaded`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offloaded: Option<StoredObject>,
    /// Whether the clock was synchronised when the receipt was written.
    pub clock: crate::clock::SyncState,
    pub prev_receipt_sha256: String,
}

impl Receipt {
    pub fn to_payload(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| unreachable!("plain data"))
    }
}

/// The receipts directory of one store.
pub struct ReceiptLog {
    dir: PathBuf,
}

/// The chain's head: last sequence and its payload hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptHead {
    pub sequence: u64,
    pub sha256: String,
}

impl ReceiptHead {
    pub fn genesis() -> ReceiptHead {
        ReceiptHead {
            sequence: 0,
            sha256: GENESIS.to_owned(),
        }
    }
}

impl ReceiptLog {
    pub fn open(data_dir: &Path) -> std::io::Result<ReceiptLog> {
        let dir = data_dir.join("receipts");
        fsutil::create_private_dir(&dir)?;
        Ok(ReceiptLog { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:010}.json"))
    }

    /// Writes receipts in order after `head` (their `sequence` and
    /// `prev_receipt_sha256` are filled in here), each file fsynced, then the
    /// directory once. Returns the signed envelopes as written, in order (the
    /// copies HQ is sent). Nothing is deleted yet.
    pub fn append(
        &self,
        key: &DeviceKey,
        head: &ReceiptHead,
        receipts: &mut [Receipt],
    ) -> std::io::Result<Vec<Envelope>> {
        let mut head = head.clone();
        let mut written = Vec::with_capacity(receipts.len());
        for r in receipts.iter_mut() {
            r.sequence = head.sequence + 1;
            r.prev_receipt_sha256 = head.sha256.clone();
            let payload = r.to_payload();
            let path = self.path(r.sequence);
            let env = key.sign(&payload);
            fsutil::write_atomic_nosync_dir(&path, &env.to_bytes(), 0o600)?;
            head = ReceiptHead {
                sequence: r.sequence,
                sha256: manifest::sha256_hex(payload.as_bytes()),
            };
            written.push(env);
        }
        fsutil::sync_dir(&self.dir)?;
        Ok(written)
    }

    /// Reads receipt `seq` if it exists, checking its signature; returns it
    /// with its payload's SHA-256.
    pub fn read(&self, seq: u64, key: &[u8; 32]) -> Result<Option<(Receipt, String)>, String> {
        Ok(self.read_signed(seq, key)?.map(|(r, env)| {
            let sha = manifest::sha256_hex(env.payload.as_bytes());
            (r, sha)
        }))
    }

    /// Reads receipt `seq` if it exists, checking its signature; returns it
    /// with its envelope as the file holds it.
    pub fn read_signed(
        &self,
        seq: u64,
        key: &[u8; 32],
    ) -> Result<Option<(Receipt, Envelope)>, String> {
        let path = self.path(seq);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let env =
            Envelope::open(&bytes, Some(key)).map_err(|e| format!("{}: {e}", path.display()))?;
        let r: Receipt =
            serde_json::from_str(&env.payload).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Some((r, env)))
    }
}

/// The segment ids the receipt chain of one store names, read on demand.
///
/// Asked about an id it does not name yet, it first reads the receipts
/// written since it last looked. A receipt is durable before its media
/// goes, so a reader that finds a media file missing and then asks here
/// learns of every deletion that removed it, even one made by a writer
/// running beside the reader (see [`crate::seal::verify`]). Receipts that
/// do not open (bad signature, unreadable) are skipped here: the chain's
/// own verification ([`verify_chain`]) reports them.
pub struct LiveDeletions {
    log: ReceiptLog,
    key: [u8; 32],
    seen: std::cell::RefCell<(u64, HashSet<String>)>,
}

impl LiveDeletions {
    /// Follows the receipts in `dir`, signed by `key`; reads nothing yet.
    pub fn new(dir: &Path, key: &[u8; 32]) -> LiveDeletions {
        LiveDeletions {
            log: ReceiptLog {
                dir: dir.to_owned(),
            },
            key: *key,
            seen: Default::default(),
        }
    }

    /// Reads the receipts past the last one read, up to the first number
    /// that does not exist (yet).
    fn catch_up(&self) {
        let mut seen = self.seen.borrow_mut();
        let (head, ids) = &mut *seen;
        loop {
            match self.log.read(*head + 1, &self.key) {
                Ok(Some((r, _))) => {
                    ids.insert(r.segment_id);
                }
                Ok(None) => break,
                Err(_) => {}
            }
            *head += 1;
        }
    }
}

impl crate::seal::verify::Deletions for LiveDeletions {
    fn names(&self, segment_id: &str) -> bool {
        if self.seen.borrow().1.contains(segment_id) {
            return true;
        }
        self.catch_up();
        self.seen.borrow().1.contains(segment_id)
    }
}

/// What verifying the receipt chain found.
#[derive(Debug, Default)]
pub struct ChainReport {
    pub receipts: u64,
    /// Segment ids with a valid receipt.
    pub deleted: HashSet<String>,
    /// The valid receipts by segment id, each with its payload's SHA-256.
    pub by_segment: HashMap<String, (Receipt, String)>,
    pub problems: Vec<String>,
    pub head: Option<ReceiptHead>,
}

/// The widest hole in a receipt listing that [`verify_chain`] looks up again.
const RELIST_HOLE: u64 = 64;

/// Verifies every receipt in `dir` (numbering, signatures, links).
///
/// A number missing in a short hole of the listing is looked up again
/// before it is called missing: a directory listed while receipts are being
/// added may show a newer entry and not an older one.
pub fn verify_chain(dir: &Path, key: &[u8; 32]) -> std::io::Result<ChainReport> {
    let mut seqs: Vec<u64> = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for e in entries {
                let e = e?;
                if let Some(seq) = e
                    .file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".json"))
                    .and_then(|s| s.parse::<u64>().ok())
                {
                    seqs.push(seq);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    seqs.sort_unstable();
    let log = ReceiptLog {
        dir: dir.to_owned(),
    };
    // Only short holes are looked at again (a listing racing a writer hides
    // the few entries added while it ran): a file named with a huge number
    // must not make the check count up to it.
    let mut again = Vec::new();
    let mut below = 0u64;
    for &seq in &seqs {
        if seq > below + 1 && seq - below - 1 <= RELIST_HOLE {
            again.extend((below + 1..seq).filter(|s| log.path(*s).exists()));
        }
        below = seq;
    }
    if !again.is_empty() {
        seqs.extend(again);
        seqs.sort_unstable();
    }
    let mut report = ChainReport::default();
    let mut head = ReceiptHead::genesis();
    for seq in seqs {
        report.receipts += 1;
        let shown = log.path(seq).display().to_string();
        if seq != head.sequence + 1 {
            report.problems.push(format!(
                "{shown}: receipt {seq} where {} was expected (a receipt is missing)",
                head.sequence + 1
            ));
        }
        match log.read(seq, key) {
            Ok(Some((r, sha))) => {
                if r.sequence != seq {
                    report.problems.push(format!(
                        "{shown}: file name says {seq}, receipt says {}",
                        r.sequence
                    ));
                }
                if r.prev_receipt_sha256 != head.sha256 {
                    report.problems.push(format!(
                        "{shown}: chain broken: prev_receipt_sha256 does not match receipt {}",
                        head.sequence
                    ));
                }
                report.deleted.insert(r.segment_id.clone());
                head = ReceiptHead {
                    sequence: seq,
                    sha256: sha.clone(),
                };
                report.by_segment.insert(r.segment_id.clone(), (r, sha));
            }
            Ok(None) => report
                .problems
                .push(format!("{shown}: vanished while reading")),
            Err(p) => {
                report.problems.push(p);
                head = ReceiptHead {
                    sequence: seq,
                    sha256: String::new(),
                };
            }
        }
    }
    report.head = Some(head);
    Ok(report)
}
