//! Disk stalls: a write or fsync of the data directory that has not
//! returned within a bound (`agent.disk_stall_s`, default 5 s) is an alarm
//! to HQ, `disk.stalled`, naming the operation, the file and the camera
//! whose file it is; `disk.resumed` follows when the operation returns.
//!
//! Invariants:
//! - the thread that does the I/O only notes its operation's start and end
//!   in memory ([`Watch::begin`] and the guard's drop): a mutex held for an
//!   insert or a removal, never across I/O, so watching adds no wait;
//! - the watcher runs on a thread of its own and never touches the disk:
//!   it hands its events to [`EventSink::emit_unblocked`], which the HQ
//!   link sends from memory ahead of the outbox's queue
//!   ([`crate::hq::lane`]), so the report of a stalled disk never waits on
//!   that disk (nor on a lock held by a thread that does);
//! - an operation that outlasts the bound gives exactly one `disk.stalled`
//!   however long it lasts, and exactly one `disk.resumed` when it returns;
//!   one that returns within the bound gives none.
//!
//! Watched: each camera's writes and data syncs of its open segment
//! (`capture::segment`) and the commit of a sealed segment
//! (`store::camera`: final chunk, fsyncs, manifest, rename, head), the
//! retention index's commits, and the outbox's writes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::events::{Event, EventSink};

/// The agent's operations (one watch per process, as one data directory).
pub static WATCH: Watch = Watch::new();

/// Notes `what` (`"write"`, `"fsync"`, `"seal"`, …) on `file` with the
/// process's [`WATCH`] until the guard is dropped.
pub fn begin(what: &'static str, file: &Path, camera: Option<&str>) -> Pending<'static> {
    WATCH.begin(what, file, camera)
}

/// Operations under way, and the reported ones that have returned.
pub struct Watch {
    ops: Mutex<Ops>,
}

struct Ops {
    next: u64,
    open: BTreeMap<u64, Op>,
    /// Reported as stalled, since returned: `disk.resumed` is due.
    returned: Vec<(Op, Duration)>,
}

#[derive(Clone)]
struct Op {
    what: &'static str,
    file: PathBuf,
    camera: Option<String>,
    started: Instant,
    reported: bool,
}

/// An operation under way; dropping it says it returned.
pub struct Pending<'w> {
    watch: &'w Watch,
    id: u64,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        let mut ops = self.watch.lock();
        if let Some(op) = ops.open.remove(&self.id) {
            if op.reported {
                let took = op.started.elapsed();
                ops.returned.push((op, took));
            }
        }
    }
}

impl Default for Watch {
    fn default() -> Self {
        Watch::new()
    }
}

impl Watch {
    pub const fn new() -> Watch {
        Watch {
            ops: Mutex::new(Ops {
                next: 0,
                open: BTreeMap::new(),
                returned: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ops> {
        crate::sync::lock(&self.ops)
    }

    /// Notes `what` on `file` (of `camera`, if a camera's) as under way.
    pub fn begin(&self, what: &'static str, file: &Path, camera: Option<&str>) -> Pending<'_> {
        let mut ops = self.lock();
        ops.next += 1;
        let id = ops.next;
        ops.open.insert(
            id,
            Op {
                what,
                file: file.to_owned(),
                camera: camera.map(str::to_owned),
                started: Instant::now(),
                reported: false,
            },
        );
        Pending { watch: self, id }
    }

    /// The events due at `now`: `disk.stalled` for each operation under way
    /// for `bound` or longer and not yet reported, `disk.resumed` for each
    /// reported one that has returned since the last call.
    pub fn due(&self, now: Instant, bound: Duration) -> Vec<Event> {
        let mut ops = self.lock();
        let mut out: Vec<Event> = std::mem::take(&mut ops.returned)
            .into_iter()
            .map(|(op, took)| Event::DiskResumed {
                op: op.what,
                file: op.file.display().to_string(),
                camera: op.camera,
                after_s: took.as_secs(),
            })
            .collect();
        for op in ops.open.values_mut() {
            let waited = now.saturating_duration_since(op.started);
            if !op.reported && waited >= bound {
                op.reported = true;
                out.push(Event::DiskStalled {
                    op: op.what,
                    file: op.file.display().to_string(),
                    camera: op.camera.clone(),
                    for_s: waited.as_secs(),
                });
            }
        }
        out
    }
}

/// Starts the watcher thread: every quarter of `bound` (at most every
/// half second) it hands what [`WATCH`] has due to `sink`, unblocked,
/// until `stop` is cancelled.
pub fn spawn(
    bound: Duration,
    sink: Arc<dyn EventSink>,
    stop: CancellationToken,
) -> std::io::Result<JoinHandle<()>> {
    let tick = (bound / 4).clamp(Duration::from_millis(50), Duration::from_millis(500));
    std::thread::Builder::new()
        .name("diskwatch".into())
        .spawn(move || {
            while !stop.is_cancelled() {
                std::thread::sleep(tick);
                for e in WATCH.due(Instant::now(), bound) {
                    sink.emit_unblocked(e);
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stalled_operation_is_reported_once_and_its_return_once() {
        let w = Watch::new();
        let bound = Duration::from_secs(5);
        let t = Instant::now();
        let quick = w.begin(
            "write",
            Path::new("/d/cameras/cam-a/1.mp4.age.partial"),
            Some("cam-a"),
        );
        drop(quick);
        let slow = w.begin(
            "fsync",
            Path::new("/d/cameras/cam-b/2.mp4.age.partial"),
            Some("cam-b"),
        );
        let index = w.begin("commit", Path::new("/d/index.sqlite"), None);
        assert_eq!(
            w.due(t + Duration::from_secs(4), bound),
            vec![],
            "within the bound"
        );
        let stalled = w.due(t + Duration::from_secs(6), bound);
        assert_eq!(stalled.len(), 2, "{stalled:?}");
        assert!(
            matches!(&stalled[0], Event::DiskStalled { op: "fsync", file, camera: Some(c), for_s }
                if file == "/d/cameras/cam-b/2.mp4.age.partial" && c == "cam-b" && *for_s >= 5)
        );
        assert!(matches!(
            &stalled[1],
            Event::DiskStalled {
                op: "commit",
                camera: None,
                ..
            }
        ));
        assert_eq!(w.due(t + Duration::from_secs(60), bound), vec![], "once");
        drop(slow);
        let resumed = w.due(t + Duration::from_secs(61), bound);
        assert!(
            matches!(&resumed[..], [Event::DiskResumed { op: "fsync", camera: Some(c), .. }] if c == "cam-b"),
            "{resumed:?}"
        );
        assert_eq!(w.due(t + Duration::from_secs(62), bound), vec![]);
        drop(index);
        assert_eq!(w.due(t + Duration::from_secs(63), bound).len(), 1);
    }

    #[test]
    fn the_watcher_reports_through_the_unblocked_path() {
        #[derive(Default)]
        struct Sink(Mutex<Vec<(bool, Event)>>);
        impl EventSink for Sink {
            fn emit(&self, e: Event) {
                crate::sync::lock(&self.0).push((false, e));
            }
            fn emit_unblocked(&self, e: Event) {
                crate::sync::lock(&self.0).push((true, e));
            }
        }
        let sink = Arc::new(Sink::default());
        let stop = CancellationToken::new();
        let bound = Duration::from_millis(200);
        let handle = spawn(bound, sink.clone(), stop.clone()).expect("thread");
        let file = std::env::temp_dir().join("sargs-diskwatch-test-file");
        let op = begin("write", &file, Some("cam-w"));
        let ours = |s: &Sink| {
            crate::sync::lock(&s.0)
                .iter()
                .filter(|(_, e)| matches!(e, Event::DiskStalled { camera: Some(c), .. } | Event::DiskResumed { camera: Some(c), .. } if c == "cam-w"))
                .cloned()
                .collect::<Vec<_>>()
        };
        // Generous: the watcher runs every 50 ms; this only stops a hang.
        let wait = |n: usize| {
            let end = Instant::now() + Duration::from_secs(30);
            while ours(&sink).len() < n && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        wait(1);
        drop(op);
        wait(2);
        stop.cancel();
        handle.join().expect("joined");
        let got = ours(&sink);
        assert!(
            matches!(
                &got[..],
                [
                    (true, Event::DiskStalled { .. }),
                    (true, Event::DiskResumed { .. })
                ]
            ),
            "{got:?}"
        );
    }
}
