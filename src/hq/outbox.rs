//! The durable outbox: what HQ must receive, kept on disk until the broker
//! acknowledges it.
//!
//! ```text
//! <data_dir>/outbox/000000000042.json   {"topic": "...", "payload": "..."}
//! ```
//!
//! Invariants: an entry is on disk (file fsynced, directory fsynced) before
//! [`Outbox::push`] returns; entries leave in order, and only through
//! [`Outbox::ack`], which the link calls on the broker's PUBACK for exactly
//! that entry — so a broker outage, an agent restart or a power loss loses
//! nothing (an entry sent but not acknowledged is sent again: at least once;
//! every payload carries its own id, so HQ drops duplicates).
//!
//! Bounded by `hq.outbox_max` entries. When full, the **oldest** entry is
//! dropped and counted, and the count is reported in telemetry and logged:
//! deletion receipts stay on disk in `receipts/` regardless, so HQ can fetch
//! what an overflow dropped; commands' responses are re-sent if HQ repeats the
//! command (a replay answers with the original result).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::fsutil;

/// One queued message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub topic: String,
    pub payload: String,
}

struct State {
    /// Oldest sequence that may still be on disk.
    first: u64,
    /// Next sequence to write.
    next: u64,
    dropped: u64,
}

/// The outbox directory.
pub struct Outbox {
    dir: PathBuf,
    max: usize,
    state: Mutex<State>,
    wake: tokio::sync::Notify,
}

impl Outbox {
    /// Opens (creating) `<data_dir>/outbox`, finding what a previous run left.
    pub fn open(data_dir: &Path, max: usize) -> std::io::Result<Outbox> {
        let dir = data_dir.join("outbox");
        fsutil::create_private_dir(&dir)?;
        let mut seqs: Vec<u64> = Vec::new();
        for e in std::fs::read_dir(&dir)? {
            let name = e?.file_name();
            if let Some(seq) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|s| s.parse().ok())
            {
                seqs.push(seq);
            }
        }
        let first = seqs.iter().min().copied().unwrap_or(1);
        let next = seqs.iter().max().map_or(1, |m| m + 1);
        Ok(Outbox {
            dir,
            max: max.max(1),
            state: Mutex::new(State {
                first,
                next,
                dropped: 0,
            }),
            wake: tokio::sync::Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:012}.json"))
    }

    /// Queues a message durably; returns its sequence.
    pub fn push(&self, topic: &str, payload: &str) -> std::io::Result<u64> {
        let entry = Entry {
            topic: topic.to_owned(),
            payload: payload.to_owned(),
        };
        let bytes = serde_json::to_vec(&entry).map_err(std::io::Error::other)?;
        let mut st = self.lock();
        let seq = st.next;
        fsutil::write_atomic(&self.path(seq), &bytes, 0o600)?;
        st.next += 1;
        while (st.next - st.first) as usize > self.max {
            let oldest = st.first;
            match std::fs::remove_file(self.path(oldest)) {
                Ok(()) => {
                    st.dropped += 1;
                    tracing::error!(
                        sequence = oldest,
                        dropped = st.dropped,
                        "outbox full: dropped its oldest message (receipts stay in receipts/)"
                    );
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            st.first += 1;
        }
        drop(st);
        self.wake.notify_one();
        Ok(seq)
    }

    /// The oldest entry still queued.
    pub fn peek(&self) -> std::io::Result<Option<(u64, Entry)>> {
        let mut st = self.lock();
        while st.first < st.next {
            match std::fs::read(self.path(st.first)) {
                Ok(b) => match serde_json::from_slice(&b) {
                    Ok(e) => return Ok(Some((st.first, e))),
                    Err(e) => {
                        // A torn or foreign file: set aside, never silently lost.
                        let bad = self.path(st.first).with_extension("corrupt");
                        tracing::error!(file = %bad.display(), error = %e, "outbox: unreadable entry set aside");
                        std::fs::rename(self.path(st.first), &bad)?;
                        st.first += 1;
                    }
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => st.first += 1,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// The broker acknowledged entry `seq`: it leaves the outbox.
    pub fn ack(&self, seq: u64) -> std::io::Result<()> {
        let mut st = self.lock();
        match std::fs::remove_file(self.path(seq)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if seq == st.first {
            st.first += 1;
        }
        Ok(())
    }

    /// Entries waiting.
    pub fn depth(&self) -> u64 {
        let st = self.lock();
        st.next - st.first
    }

    /// Entries dropped because the outbox was full, since start.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    /// Resolves when something was pushed since the last call.
    pub async fn pushed(&self) {
        self.wake.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_survive_reopen_leave_in_order_and_overflow_drops_the_oldest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let o = Outbox::open(dir.path(), 3).expect("open");
        for i in 1..=2 {
            o.push("t", &format!("m{i}")).expect("push");
        }
        drop(o);
        let o = Outbox::open(dir.path(), 3).expect("reopen");
        assert_eq!(o.depth(), 2);
        let (seq, e) = o.peek().expect("peek").expect("entry");
        assert_eq!((seq, e.payload.as_str()), (1, "m1"));
        o.ack(seq).expect("ack");
        assert_eq!(o.peek().expect("peek").expect("entry").1.payload, "m2");
        for i in 3..=5 {
            o.push("t", &format!("m{i}")).expect("push");
        }
        assert_eq!(o.depth(), 3);
        assert_eq!(o.dropped(), 1);
        assert_eq!(o.peek().expect("peek").expect("entry").1.payload, "m3");
    }
}
