//! The durable outbox: what HQ must receive, kept on disk until the broker
//! acknowledges it.
//!
//! ```text
//! <data_dir>/outbox/000000000042.json   {"messages":[{"topic":"…","payload":"…","correlation":"…"?}, …]}
//! ```
//!
//! One file is one durable write: a single message, or messages made durable
//! together (a command's response with the events it caused; the receipts of
//! one deletion batch) — one file fsync and one directory fsync however many
//! messages it holds. A file of an earlier version, `{"topic","payload"}`,
//! is read as a one-message batch.
//!
//! Invariants: a batch is on disk (file fsynced, directory fsynced) before
//! [`Outbox::push_batch`] returns; messages leave in order, one at a time, and
//! only through [`Outbox::ack`], which the link calls on the broker's PUBACK
//! for exactly that message; a file is removed once its last message is
//! acknowledged — so a broker outage, an agent restart or a power loss loses
//! nothing (a message sent but not acknowledged, or the acknowledged head of
//! a batch whose rest was not, is sent again: at least once; every payload
//! carries its own id, so HQ drops duplicates).
//!
//! A message that reports a numbered thing — a camera's record, a deletion
//! receipt — says so ([`Numbered`]), and the outbox keeps, from the
//! broker's acknowledgements, the highest number of each that the broker
//! has taken ([`Outbox::acknowledged`]). Telemetry reports it: HQ compares
//! it with its ledger, and a record the broker acknowledged but lost (a
//! broker restarted without persistence) is found even when nothing later
//! follows it.
//!
//! A disk that refuses the write (EIO, a full disk, a file system remounted
//! read-only) must not silence the alarm that reports it: such a batch is
//! kept in memory in its place in the order and sent like the others, and
//! written to disk by the next push that the disk takes; only a stop of the
//! agent before then loses it. A delivered file the disk will not let go of
//! is passed over (sent again after a restart: at least once) and removed
//! by a later push.
//!
//! An alarm about the disk itself (a write that has not returned,
//! `crate::diskwatch`) must not wait on that disk at all: it goes into the
//! memory lane ([`super::lane`]), which the link sends ahead of the files;
//! and the link only tries the files' lock ([`Outbox::try_peek`]), so a push
//! whose write the disk holds does not hold the lane back.
//!
//! Bounded by `hq.outbox_max` files. When full, the **oldest** file is
//! dropped and counted, and the count is reported in telemetry and logged:
//! deletion receipts stay on disk in `receipts/` regardless, so HQ can fetch
//! what an overflow dropped; commands' responses are re-sent if HQ repeats the
//! command (a replay answers with the original result).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use sargs_core::fsutil;

/// One queued message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub topic: String,
    pub payload: String,
    /// MQTT 5 correlation data (Base64) of the command a response answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation: Option<String>,
    /// The numbered thing the message reports, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numbered: Option<Numbered>,
}

impl Entry {
    pub fn new(topic: &str, payload: String) -> Entry {
        Entry {
            topic: topic.to_owned(),
            payload,
            correlation: None,
            numbered: None,
        }
    }
}

/// What a message reports of the agent's numberings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Numbered {
    /// A record (segment or gap) of a camera's chain.
    Record { camera: String, sequence: u64 },
    /// A deletion receipt of the agent's receipt chain.
    Receipt { sequence: u64 },
}

/// The highest number of each numbering the broker has acknowledged since
/// the agent started: per camera its records, and the receipts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Acknowledged {
    pub records: BTreeMap<String, u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receipts: Option<u64>,
}

impl Acknowledged {
    fn note(&mut self, n: &Numbered) {
        match n {
            Numbered::Record { camera, sequence } => {
                let top = self.records.entry(camera.clone()).or_default();
                *top = (*top).max(*sequence);
            }
            Numbered::Receipt { sequence } => {
                self.receipts = Some(self.receipts.unwrap_or(0).max(*sequence));
            }
        }
    }
}

/// An outbox file, as written now or by an earlier version.
#[derive(Deserialize)]
#[serde(untagged)]
enum File {
    Batch { messages: Vec<Entry> },
    Single(Entry),
}

#[derive(Serialize)]
struct BatchRef<'a> {
    messages: &'a [Entry],
}

/// Where a message sits: its file and its place in the file's batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position {
    pub file: u64,
    pub index: usize,
}

struct State {
    /// Oldest file that may still be on disk.
    first: u64,
    /// Next file to write.
    next: u64,
    /// The messages of `first` still to be acknowledged (read once).
    head: Option<(u64, Vec<Entry>)>,
    /// How many messages of `head` the broker has acknowledged.
    acked: usize,
    dropped: u64,
    acknowledged: Acknowledged,
    /// Batches the disk refused, by file sequence: sent from here, written
    /// by a later push (within `[first, next)`, so bounded like the files).
    held: std::collections::BTreeMap<u64, Vec<Entry>>,
    /// Delivered files whose removal the disk refused.
    stale: Vec<u64>,
}

/// The outbox directory.
pub struct Outbox {
    dir: PathBuf,
    max: usize,
    state: Mutex<State>,
    /// Alarms about the disk itself, sent from memory ahead of the files.
    lane: super::lane::Lane<Entry>,
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
                head: None,
                acked: 0,
                dropped: 0,
                acknowledged: Acknowledged::default(),
                held: Default::default(),
                stale: Vec::new(),
            }),
            lane: Default::default(),
            wake: tokio::sync::Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        crate::sync::lock(&self.state)
    }

    /// The state, unless another thread holds it.
    fn try_lock(&self) -> Option<std::sync::MutexGuard<'_, State>> {
        match self.state.try_lock() {
            Ok(st) => Some(st),
            Err(std::sync::TryLockError::WouldBlock) => None,
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
        }
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:012}.json"))
    }

    /// Queues one message durably; returns its file's sequence.
    pub fn push(&self, topic: &str, payload: &str) -> std::io::Result<u64> {
        self.push_batch(&[Entry::new(topic, payload.to_owned())])
    }

    /// Queues `messages` durably in one write, to be sent in this order;
    /// returns their file's sequence (0 for an empty batch, which writes nothing).
    pub fn push_batch(&self, messages: &[Entry]) -> std::io::Result<u64> {
        if messages.is_empty() {
            return Ok(0);
        }
        let bytes = serde_json::to_vec(&BatchRef { messages }).map_err(std::io::Error::other)?;
        let mut st = self.lock();
        self.catch_up(&mut st);
        let seq = st.next;
        let path = self.path(seq);
        let written = {
            let _op = crate::diskwatch::begin("write", &path, None);
            fsutil::write_atomic(&path, &bytes, 0o600)
        };
        if let Err(e) = written {
            tracing::error!(error = %e, sequence = seq, messages = messages.len(),
                "outbox: the disk refused a batch; it is sent from memory and written when the disk takes it");
            st.held.insert(seq, messages.to_vec());
        }
        st.next += 1;
        while (st.next - st.first) as usize > self.max {
            let oldest = st.first;
            let held = st.held.remove(&oldest).is_some();
            let on_disk = match std::fs::remove_file(self.path(oldest)) {
                Ok(()) => true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
                Err(e) => {
                    tracing::error!(error = %e, sequence = oldest, "outbox: the disk refused to remove an entry dropped by overflow; removed later");
                    st.stale.push(oldest);
                    true
                }
            };
            if on_disk || held {
                st.dropped += 1;
                tracing::error!(
                    sequence = oldest,
                    dropped = st.dropped,
                    "outbox full: dropped its oldest entry (receipts stay in receipts/)"
                );
            }
            st.advance();
        }
        drop(st);
        self.wake.notify_one();
        Ok(seq)
    }

    /// Writes the batches the disk refused before, oldest first (stopping
    /// at the first it refuses again), and removes the delivered files it
    /// kept.
    fn catch_up(&self, st: &mut State) {
        while let Some((&seq, messages)) = st.held.iter().next() {
            let Ok(bytes) = serde_json::to_vec(&BatchRef { messages }) else {
                break;
            };
            if fsutil::write_atomic(&self.path(seq), &bytes, 0o600).is_err() {
                break;
            }
            st.held.remove(&seq);
            tracing::info!(
                sequence = seq,
                "outbox: a batch kept in memory is on disk now"
            );
        }
        st.stale.retain(|&seq| self.remove(seq).is_err());
    }

    /// Removes the delivered file `seq`, or notes it for later.
    fn let_go(&self, st: &mut State, seq: u64) {
        st.held.remove(&seq);
        if let Err(e) = self.remove(seq) {
            tracing::error!(error = %e, sequence = seq, "outbox: the disk refused to remove a delivered entry; removed later (sent again if the agent restarts first)");
            st.stale.push(seq);
        }
    }

    /// Queues `messages` in the memory lane (see [`super::lane`]): no
    /// write, no wait on the files' lock.
    pub fn push_unblocked(&self, messages: Vec<Entry>) {
        self.lane.push(messages);
        self.wake.notify_one();
    }

    /// The memory lane, which the link sends ahead of the files.
    pub fn lane(&self) -> &super::lane::Lane<Entry> {
        &self.lane
    }

    /// [`Outbox::peek`], or `None` at once while another thread holds the
    /// outbox (a push whose write the disk holds): the link never waits on
    /// it.
    pub fn try_peek(&self) -> Option<std::io::Result<Option<(Position, Entry)>>> {
        let mut st = self.try_lock()?;
        Some(self.peek_in(&mut st))
    }

    /// The oldest message still queued.
    pub fn peek(&self) -> std::io::Result<Option<(Position, Entry)>> {
        let mut st = self.lock();
        self.peek_in(&mut st)
    }

    fn peek_in(&self, st: &mut State) -> std::io::Result<Option<(Position, Entry)>> {
        while st.first < st.next {
            let seq = st.first;
            if st.head.as_ref().map(|h| h.0) != Some(seq) {
                let held = st.held.get(&seq).cloned();
                match held.map_or_else(|| self.read(seq), |m| Ok(Some(m)))? {
                    Some(messages) => {
                        st.head = Some((seq, messages));
                        st.acked = 0;
                    }
                    None => {
                        st.advance();
                        continue;
                    }
                }
            }
            let acked = st.acked;
            match st.head.as_ref().and_then(|(_, m)| m.get(acked)) {
                Some(e) => {
                    let e = e.clone();
                    return Ok(Some((
                        Position {
                            file: seq,
                            index: acked,
                        },
                        e,
                    )));
                }
                // An empty batch (not written by this version): done with it.
                None => {
                    self.let_go(st, seq);
                    st.advance();
                }
            }
        }
        Ok(None)
    }

    /// The messages of file `seq`; `None` when it is gone or was set aside.
    fn read(&self, seq: u64) -> std::io::Result<Option<Vec<Entry>>> {
        let path = self.path(seq);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        match serde_json::from_slice(&bytes) {
            Ok(File::Batch { messages }) => Ok(Some(messages)),
            Ok(File::Single(e)) => Ok(Some(vec![e])),
            Err(e) => {
                // A foreign or damaged file: set aside, never silently lost.
                let bad = path.with_extension("corrupt");
                tracing::error!(file = %bad.display(), error = %e, "outbox: unreadable entry set aside");
                std::fs::rename(&path, &bad)?;
                Ok(None)
            }
        }
    }

    fn remove(&self, seq: u64) -> std::io::Result<()> {
        match std::fs::remove_file(self.path(seq)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// The broker acknowledged the message at `pos`: it leaves the outbox
    /// (its file with it, once the file's last message is acknowledged).
    pub fn ack(&self, pos: Position) -> std::io::Result<()> {
        let mut st = self.lock();
        if pos.file != st.first {
            return Ok(()); // dropped by overflow meanwhile
        }
        let (len, numbered) = match &st.head {
            Some((seq, m)) if *seq == pos.file => {
                (m.len(), m.get(pos.index).and_then(|e| e.numbered.clone()))
            }
            _ => return Ok(()),
        };
        if pos.index == st.acked {
            st.acked += 1;
            if let Some(n) = numbered {
                st.acknowledged.note(&n);
            }
        }
        if st.acked >= len {
            self.let_go(&mut st, pos.file);
            st.advance();
        }
        Ok(())
    }

    /// `(depth, dropped, acknowledged)`, or `None` at once while another
    /// thread holds the outbox (a push whose write the disk holds).
    pub fn try_counts(&self) -> Option<(u64, u64, Acknowledged)> {
        let st = self.try_lock()?;
        Some((st.next - st.first, st.dropped, st.acknowledged.clone()))
    }

    /// Entries (files) waiting.
    pub fn depth(&self) -> u64 {
        let st = self.lock();
        st.next - st.first
    }

    /// The highest numbers the broker has acknowledged since start.
    pub fn acknowledged(&self) -> Acknowledged {
        self.lock().acknowledged.clone()
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

impl State {
    /// Moves past the oldest file.
    fn advance(&mut self) {
        if self.head.as_ref().map(|h| h.0) == Some(self.first) {
            self.head = None;
            self.acked = 0;
        }
        self.first += 1;
    }
}

#[cfg(test)]
mod tests;
