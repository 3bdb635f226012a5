//! Waking a camera's supervisor.
//!
//! The supervisor waits on its pipeline's bus, at most [`TURN`] at a time
//! (its watchdogs — stalled video, the disk floor, a segment that does not
//! close — are counted in seconds). Whatever must be seen sooner is posted to
//! that bus as a [`WAKE`] application message, which the supervisor reads as
//! "look again now":
//!
//! - shutdown: a [`Relay`] thread per camera waits on the agent's token and
//!   posts to the bus of the attempt in progress, if any;
//! - the first buffer of an attempt (the camera is up), posted by the
//!   data-flow probe.
//!
//! Invariant: a cancellation is never missed. The relay posts to the bus
//! attached at the moment the token fires; a supervisor that attaches later,
//! or between attempts, checks the token before every wait.
//!
//! A bus with no message wakes nobody, so a recording camera costs about one
//! supervisor wake-up a second rather than five.
//!
//! Between attempts (the backoff after a failure) there is no bus: the
//! supervisor sleeps in 100 ms steps and checks the token after each
//! ([`wait_cancelled`]).

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use gstreamer as gst;
use tokio_util::sync::CancellationToken;

/// Longest wait of the supervisor on its bus.
pub const TURN: gst::ClockTime = gst::ClockTime::from_seconds(1);

/// Name of the application message that wakes the supervisor.
pub const WAKE: &str = "sargs-wake";

/// Posts [`WAKE`] to `bus`.
pub fn wake(bus: &gst::Bus) {
    let msg = gst::message::Application::new(gst::Structure::new_empty(WAKE));
    // Fails only on a flushing bus: the pipeline is stopping already.
    let _ = bus.post(msg);
}

/// Sleeps up to `d`, calling `tick` every 100 ms; true if the token was
/// cancelled meanwhile.
pub fn wait_cancelled(cancel: &CancellationToken, d: Duration, tick: impl Fn()) -> bool {
    let until = std::time::Instant::now() + d;
    while std::time::Instant::now() < until {
        tick();
        if cancel.is_cancelled() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100).min(until - std::time::Instant::now()));
    }
    cancel.is_cancelled()
}

type Slot = Arc<Mutex<Option<gst::Bus>>>;

/// Relays the cancellation of the agent's token to the camera's bus.
/// Dropping it ends its thread.
pub struct Relay {
    slot: Slot,
    done: CancellationToken,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    /// Starts the relay thread of `camera`.
    pub fn start(camera: &str, cancel: CancellationToken) -> std::io::Result<Relay> {
        // No I/O or timer driver: the thread only awaits two tokens.
        let runtime = tokio::runtime::Builder::new_current_thread().build()?;
        let slot: Slot = Arc::new(Mutex::new(None));
        let done = CancellationToken::new();
        let thread = {
            let (slot, done) = (slot.clone(), done.clone());
            std::thread::Builder::new()
                .name(format!("wake-{camera}"))
                .spawn(move || {
                    let cancelled = runtime.block_on(async {
                        tokio::select! {
                            _ = cancel.cancelled() => true,
                            _ = done.cancelled() => false,
                        }
                    });
                    if cancelled {
                        if let Some(bus) = crate::sync::lock(&slot).as_ref() {
                            wake(bus);
                        }
                    }
                })?
        };
        Ok(Relay {
            slot,
            done,
            thread: Some(thread),
        })
    }

    /// Points the relay at `bus` until the returned guard is dropped.
    pub fn attach(&self, bus: &gst::Bus) -> Attached<'_> {
        *crate::sync::lock(&self.slot) = Some(bus.clone());
        Attached { slot: &self.slot }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.done.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The relay's hold on one attempt's bus.
pub struct Attached<'a> {
    slot: &'a Slot,
}

impl Drop for Attached<'_> {
    fn drop(&mut self) {
        *crate::sync::lock(self.slot) = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A token, a relay on it and a bus of its own.
    fn relay() -> (CancellationToken, Relay, gst::Bus) {
        gst::init().expect("gstreamer");
        let cancel = CancellationToken::new();
        let relay = Relay::start("t", cancel.clone()).expect("relay");
        (cancel, relay, gst::Bus::new())
    }

    fn quiet(bus: &gst::Bus) -> bool {
        bus.timed_pop(gst::ClockTime::from_mseconds(50)).is_none()
    }

    #[test]
    fn cancelling_the_token_wakes_the_attached_bus_at_once() {
        let (cancel, relay, bus) = relay();
        let attached = relay.attach(&bus);
        assert!(quiet(&bus), "nothing before the token fires");
        cancel.cancel();
        let msg = bus
            .timed_pop(gst::ClockTime::from_seconds(10))
            .expect("the relay posts when the token fires");
        assert!(msg.structure().is_some_and(|s| s.name() == WAKE), "{msg:?}");
        drop(attached);
        drop(relay); // joins the finished thread
    }

    #[test]
    fn a_relay_dropped_before_cancellation_ends_and_posts_nothing() {
        let (cancel, relay, bus) = relay();
        drop(relay.attach(&bus));
        drop(relay); // dropping joins the thread: it must have ended
        cancel.cancel();
        assert!(quiet(&bus));
    }

    #[test]
    fn a_detached_relay_posts_nowhere() {
        let (cancel, relay, bus) = relay();
        drop(relay.attach(&bus));
        cancel.cancel();
        drop(relay); // the thread has seen the token and ended
        assert!(quiet(&bus));
    }
}
