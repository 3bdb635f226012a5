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
            wake: tokio::sync::Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        crate::sync::lock(&self.state)
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
        if let Err(e) = fsutil::write_atomic(&self.path(seq), &bytes, 0o600) {
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

    /// The oldest message still queued.
    pub fn peek(&self) -> std::io::Result<Option<(Position, Entry)>> {
        let mut st = self.lock();
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
                    self.let_go(&mut st, seq);
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
mod tests {
    use super::*;

    fn entry(p: &str) -> Entry {
        Entry::new("t", p.to_owned())
    }

    fn drain(o: &Outbox) -> Vec<String> {
        let mut out = Vec::new();
        while let Some((pos, e)) = o.peek().expect("peek") {
            out.push(e.payload);
            o.ack(pos).expect("ack");
        }
        out
    }

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
        let (pos, e) = o.peek().expect("peek").expect("entry");
        assert_eq!((pos.file, e.payload.as_str()), (1, "m1"));
        o.ack(pos).expect("ack");
        assert_eq!(o.peek().expect("peek").expect("entry").1.payload, "m2");
        for i in 3..=5 {
            o.push("t", &format!("m{i}")).expect("push");
        }
        assert_eq!(o.depth(), 3);
        assert_eq!(o.dropped(), 1);
        assert_eq!(drain(&o), ["m3", "m4", "m5"]);
    }

    #[test]
    fn a_batch_is_one_file_sent_in_order_and_resent_whole_after_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let o = Outbox::open(dir.path(), 10).expect("open");
        let mut response = entry("response");
        response.correlation = Some("Y29ycg==".into());
        o.push_batch(&[response.clone(), entry("event")])
            .expect("batch");
        o.push("t", "later").expect("push");
        assert_eq!(o.depth(), 2, "a batch is one file");
        assert_eq!(o.push_batch(&[]).expect("empty batch"), 0);
        assert_eq!(o.depth(), 2, "an empty batch writes nothing");

        // The first message is acknowledged, then the agent stops.
        let (pos, e) = o.peek().expect("peek").expect("entry");
        assert_eq!(e, response);
        o.ack(pos).expect("ack");
        assert_eq!(o.peek().expect("peek").expect("next").1.payload, "event");
        // A repeated acknowledgement changes nothing.
        o.ack(pos).expect("ack again");
        assert_eq!(o.peek().expect("peek").expect("next").1.payload, "event");
        drop(o);

        // At least once: the unfinished batch is sent again from its start.
        let o = Outbox::open(dir.path(), 10).expect("reopen");
        assert_eq!(drain(&o), ["response", "event", "later"]);
        assert_eq!(o.depth(), 0);
        let left = std::fs::read_dir(dir.path().join("outbox"))
            .expect("dir")
            .count();
        assert_eq!(left, 0, "acknowledged files are removed");
    }

    #[test]
    fn a_file_of_the_earlier_single_message_format_is_sent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("outbox");
        fsutil::create_private_dir(&out).expect("dir");
        std::fs::write(
            out.join("000000000007.json"),
            br#"{"topic":"sargs/agents/gw/responses","payload":"{\"v\":1}"}"#,
        )
        .expect("old entry");
        std::fs::write(out.join("000000000008.json"), b"{torn").expect("torn entry");
        let o = Outbox::open(dir.path(), 10).expect("open");
        let (_, e) = o.peek().expect("peek").expect("old entry read");
        assert_eq!(e.topic, "sargs/agents/gw/responses");
        assert_eq!(drain(&o), ["{\"v\":1}"]);
        assert!(
            out.join("000000000008.corrupt").exists(),
            "an unreadable file is set aside, not deleted"
        );
    }

    #[test]
    fn the_broker_acknowledged_numbers_are_kept_per_camera_and_for_receipts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let o = Outbox::open(dir.path(), 10).expect("open");
        let numbered = |n: Numbered| Entry {
            numbered: Some(n),
            ..entry("numbered")
        };
        let record = |camera: &str, sequence| Numbered::Record {
            camera: camera.into(),
            sequence,
        };
        o.push_batch(&[
            numbered(record("cam-a", 7)),
            numbered(Numbered::Receipt { sequence: 3 }),
        ])
        .expect("batch");
        o.push_batch(&[numbered(record("cam-a", 6)), numbered(record("cam-b", 2))])
            .expect("batch");
        // Queued and even sent is not acknowledged.
        let (first, _) = o.peek().expect("peek").expect("entry");
        assert_eq!(o.acknowledged(), Acknowledged::default());
        o.ack(first).expect("ack");
        assert_eq!(o.acknowledged().records["cam-a"], 7);
        drop(o);
        // The numbering survives in the files: after a restart the
        // acknowledgements of what was left still count.
        let o = Outbox::open(dir.path(), 10).expect("reopen");
        drain(&o);
        let a = o.acknowledged();
        assert_eq!(a.records["cam-a"], 7, "the highest, not the last");
        assert_eq!(a.records["cam-b"], 2);
        assert_eq!(a.receipts, Some(3));
        assert_eq!(
            serde_json::to_value(&a).expect("json"),
            serde_json::json!({"records": {"cam-a": 7, "cam-b": 2}, "receipts": 3})
        );
    }

    #[test]
    fn a_batch_the_disk_refuses_is_sent_from_memory_and_written_once_the_disk_takes_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let o = Outbox::open(dir.path(), 10).expect("open");
        o.push("t", "before").expect("push");
        // The disk refuses the next file: a directory where its temporary
        // file would go (as EIO, ENOSPC or EROFS would refuse it).
        let blocked = dir.path().join("outbox/000000000002.json.tmp");
        std::fs::create_dir(&blocked).expect("block");
        o.push("t", "alarm").expect("kept in memory, not an error");
        assert!(!dir.path().join("outbox/000000000002.json").exists());
        assert_eq!(o.depth(), 2);
        // Sent in its place in the order.
        let (pos, e) = o.peek().expect("peek").expect("first");
        assert_eq!(e.payload, "before");
        o.ack(pos).expect("ack");
        assert_eq!(o.peek().expect("peek").expect("held").1.payload, "alarm");
        // The disk takes writes again: the next push writes the held batch too.
        std::fs::remove_dir(&blocked).expect("unblock");
        o.push("t", "after").expect("push");
        assert!(dir.path().join("outbox/000000000002.json").exists());
        drop(o);
        let o = Outbox::open(dir.path(), 10).expect("reopen");
        assert_eq!(drain(&o), ["alarm", "after"]);
    }
}
