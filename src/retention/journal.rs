//! The command journal: every applied state-changing command, as HQ signed it.
//!
//! ```text
//! <data_dir>/commands/0000000001.json   {"v":1,"sequence":1,"applied_at":…,"envelope":{…}}
//! ```
//!
//! Invariant: a command is written here (fsynced, renamed, directory fsynced)
//! before its effect is committed to the index, and the index records the
//! last journal sequence it reflects. At start, entries past that sequence
//! are re-applied at their own `applied_at`, in order; `reindex` replays the
//! whole journal. The journal therefore, not the index, is what makes a hold
//! survive a lost or corrupted index. Entries keep the original envelope, so
//! every hold can be proven to come from HQ.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use sargs_core::fsutil;
use sargs_core::seal::sign::Envelope;

/// One journal entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub v: u32,
    pub sequence: u64,
    pub applied_at: DateTime<Utc>,
    pub envelope: Envelope,
}

/// The journal directory.
pub struct Journal {
    dir: PathBuf,
}

impl Journal {
    pub fn open(data_dir: &Path) -> std::io::Result<Journal> {
        let dir = data_dir.join("commands");
        fsutil::create_private_dir(&dir)?;
        Ok(Journal { dir })
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:010}.json"))
    }

    /// Appends an entry durably.
    pub fn append(&self, entry: &Entry) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
        fsutil::write_atomic(&self.path(entry.sequence), &bytes, 0o600)
    }

    /// Reads entry `seq`, if present.
    pub fn read(&self, seq: u64) -> Result<Option<Entry>, String> {
        let path = self.path(seq);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Entries from `after + 1` on, until the first missing number.
    pub fn after(&self, after: u64) -> Result<Vec<Entry>, String> {
        let mut out = Vec::new();
        let mut seq = after + 1;
        while let Some(e) = self.read(seq)? {
            out.push(e);
            seq += 1;
        }
        Ok(out)
    }
}
