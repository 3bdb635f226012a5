//! Liveness of the agent's long-running loops, for the service manager's
//! watchdog.
//!
//! Every loop that must keep turning while the agent runs — one per camera,
//! the retention thread — holds a [`Beat`] and beats it on every turn (the
//! camera loops at least every second, the retention loop every 2 s).
//! [`Liveness::stalled`] names each loop whose last beat is older than a
//! limit, and each loop that ended by panicking; the watchdog is fed only
//! while there is none (`crate::service`), so a loop caught in a deadlock or
//! a call that never returns makes the service manager restart the agent,
//! which recovers its chains as after any crash.
//!
//! Work that may rightly take longer than the limit (a sweep through a large
//! backlog after a long power-off) runs inside [`Beat::busy`]: the loop then
//! counts as alive for up to [`BUSY_LIMIT`].
//!
//! A beat is one atomic store: beating never blocks, allocates or fails. A
//! loop that ends normally drops its `Beat` and is no longer watched.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long work inside [`Beat::busy`] may take before its loop counts as
/// stalled.
pub const BUSY_LIMIT: Duration = Duration::from_secs(15 * 60);

/// The loops being watched.
#[derive(Debug)]
pub struct Liveness {
    epoch: Instant,
    parts: Mutex<Vec<Arc<Part>>>,
}

#[derive(Debug)]
struct Part {
    name: String,
    /// Milliseconds since the epoch of the last beat.
    last_ms: AtomicU64,
    /// Milliseconds since the epoch + 1 at which busy work began; 0: idle.
    busy_since_ms: AtomicU64,
    /// The loop dropped its beat: finished (or, with `panicked`, died).
    ended: AtomicBool,
    panicked: AtomicBool,
}

/// One loop's heartbeat. Not `Clone`: one loop, one beat.
#[derive(Debug)]
pub struct Beat {
    part: Arc<Part>,
    epoch: Instant,
}

impl Beat {
    /// The loop is alive now.
    pub fn beat(&self) {
        self.part.last_ms.store(ms(self.epoch), Ordering::Relaxed);
    }

    /// Runs `work`, during which the loop counts as alive for up to
    /// [`BUSY_LIMIT`]; beats before and after.
    pub fn busy<T>(&self, work: impl FnOnce() -> T) -> T {
        self.beat();
        self.part
            .busy_since_ms
            .store(ms(self.epoch) + 1, Ordering::Relaxed);
        let out = work();
        self.part.busy_since_ms.store(0, Ordering::Relaxed);
        self.beat();
        out
    }
}

impl Drop for Beat {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.part.panicked.store(true, Ordering::Relaxed);
        }
        self.part.ended.store(true, Ordering::Relaxed);
    }
}

fn ms(epoch: Instant) -> u64 {
    epoch.elapsed().as_millis() as u64
}

impl Default for Liveness {
    fn default() -> Liveness {
        Liveness {
            epoch: Instant::now(),
            parts: Mutex::new(Vec::new()),
        }
    }
}

impl Liveness {
    pub fn new() -> Arc<Liveness> {
        Arc::new(Liveness::default())
    }

    /// Watches a new loop named `name`, alive from now on.
    pub fn register(&self, name: impl Into<String>) -> Beat {
        let part = Arc::new(Part {
            name: name.into(),
            last_ms: AtomicU64::new(ms(self.epoch)),
            busy_since_ms: AtomicU64::new(0),
            ended: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
        });
        let mut parts = crate::sync::lock(&self.parts);
        // Loops that ended normally are forgotten; dead ones stay reported.
        parts.retain(|p| !p.ended.load(Ordering::Relaxed) || p.panicked.load(Ordering::Relaxed));
        parts.push(part.clone());
        Beat {
            part,
            epoch: self.epoch,
        }
    }

    /// Every watched loop that has not beaten for `limit` (or has been busy
    /// for longer than [`BUSY_LIMIT`]), and every loop that died, each with
    /// why: empty when the agent is alive.
    pub fn stalled(&self, limit: Duration) -> Vec<String> {
        let now = ms(self.epoch);
        let parts = crate::sync::lock(&self.parts);
        let mut out = Vec::new();
        for p in parts.iter() {
            if p.panicked.load(Ordering::Relaxed) {
                out.push(format!("{}: thread panicked", p.name));
                continue;
            }
            if p.ended.load(Ordering::Relaxed) {
                continue;
            }
            let busy = p.busy_since_ms.load(Ordering::Relaxed);
            if busy != 0 {
                let for_ms = now.saturating_sub(busy - 1);
                if for_ms > BUSY_LIMIT.as_millis() as u64 {
                    out.push(format!("{}: busy for {} s", p.name, for_ms / 1000));
                }
                continue;
            }
            let silent = now.saturating_sub(p.last_ms.load(Ordering::Relaxed));
            if silent > limit.as_millis() as u64 {
                out.push(format!(
                    "{}: no sign of life for {} s",
                    p.name,
                    silent / 1000
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_millis(150);

    #[test]
    fn a_loop_that_stops_beating_is_named_and_one_that_beats_is_not() {
        let l = Liveness::new();
        let a = l.register("cam-a");
        let b = l.register("retention");
        assert!(l.stalled(LIMIT).is_empty());
        for _ in 0..6 {
            std::thread::sleep(Duration::from_millis(50));
            a.beat();
        }
        let stalled = l.stalled(LIMIT);
        assert_eq!(stalled.len(), 1, "{stalled:?}");
        assert!(stalled[0].starts_with("retention: no sign of life"));
        b.beat();
        assert!(l.stalled(LIMIT).is_empty());
    }

    #[test]
    fn busy_work_counts_as_alive_and_a_finished_loop_is_forgotten() {
        let l = Liveness::new();
        let b = l.register("retention");
        b.busy(|| std::thread::sleep(Duration::from_millis(300)));
        assert!(l.stalled(LIMIT).is_empty(), "beats after busy work");
        std::thread::scope(|s| {
            s.spawn(|| b.busy(|| std::thread::sleep(Duration::from_millis(300))));
            std::thread::sleep(Duration::from_millis(250));
            assert!(l.stalled(LIMIT).is_empty(), "alive while busy");
        });
        let c = l.register("cam-c");
        drop(c);
        std::thread::sleep(Duration::from_millis(200));
        b.beat();
        assert!(l.stalled(LIMIT).is_empty(), "an ended loop is not watched");
    }

    #[test]
    fn a_loop_that_panicked_stays_reported() {
        let l = Liveness::new();
        let beat = l.register("cam-p");
        let _ = std::thread::spawn(move || {
            let _beat = beat;
            panic!("camera loop broke");
        })
        .join();
        let _other = l.register("cam-q");
        assert_eq!(l.stalled(LIMIT), vec!["cam-p: thread panicked".to_string()]);
    }
}
