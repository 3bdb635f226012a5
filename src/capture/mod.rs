//! Capture: one supervised GStreamer pipeline per camera.
//!
//! Each camera runs on its own thread ([`Recorder::run`]): build the pipeline,
//! play it, commit segments as `splitmuxsink` closes them, and on any failure
//! (source error, no video for [`STALL_TIMEOUT`], segment cannot be opened)
//! commit what is open as truncated, note the reason for the gap record, and
//! retry after a capped exponential backoff with jitter. A failing camera
//! never touches another camera's thread or chain. An RTSP camera's session
//! runs on a second thread of its own ([`rtsp`]); its failures reach the
//! supervisor as the pipeline's source error, and each attempt starts a new
//! session.
//!
//! The supervisor waits on its pipeline's bus and wakes for its messages, at
//! least once a second for its watchdogs, and at once on shutdown or on the
//! first video of an attempt ([`wake`]).
//!
//! Shutdown: the token is cancelled, EOS is sent so `splitmuxsink` closes the
//! open fragment cleanly, and the thread returns once that segment is
//! committed (or, after [`EOS_TIMEOUT`], once it is committed as truncated).

mod codec;
pub mod element;
mod framesrc;
pub mod mask;
pub mod pipeline;
pub mod rtsp;
mod rtspsrc;
pub mod segment;
pub mod timeline;
mod wake;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use gstreamer as gst;
use gstreamer::prelude::*;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::{CameraConfig, Supervision};
use crate::events::{Event, EventSink};
use crate::liveness::Beat;
use crate::store::CameraLog;
use crate::sync::lock;
use sargs_core::policy::Policy;
use segment::{media_facts, Segmenter};

/// A camera that delivered no video for this long is treated as lost.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for the first frame after start (RTSP connect, sensor start).
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Time allowed for a pipeline to stop.
pub const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed at shutdown for the open segment to close cleanly.
pub const EOS_TIMEOUT: Duration = Duration::from_secs(10);

/// Initialises GStreamer once per process.
pub fn init() -> Result<(), String> {
    gst::init().map_err(|e| format!("GStreamer failed to initialise: {e}"))
}

/// How one attempt to record ended.
enum Outcome {
    /// Shutdown requested and completed.
    Shutdown,
    /// The source reached its end (a file); restart at once.
    SourceEnded,
    /// The source failed; retry after backoff.
    Failed(String),
}

/// The free-space floor a camera keeps on the data directory's file system.
#[derive(Debug, Clone)]
pub struct DiskFloor {
    pub path: std::path::PathBuf,
    pub min_free_bytes: u64,
}

impl DiskFloor {
    /// `Some(reason)` when the file system is below the floor (or unreadable).
    fn check(&self) -> Option<String> {
        match sargs_core::fsutil::free_bytes(&self.path) {
            Ok(free) if free >= self.min_free_bytes => None,
            Ok(free) => Some(format!(
                "disk space low: {} MiB free on {}, below the {} MiB floor",
                free >> 20,
                self.path.display(),
                self.min_free_bytes >> 20
            )),
            Err(e) => Some(format!(
                "free space of {} unreadable: {e}",
                self.path.display()
            )),
        }
    }
}

/// One camera's recorder and supervisor.
pub struct Recorder {
    camera: CameraConfig,
    disk: DiskFloor,
    shared: Arc<Mutex<Segmenter>>,
    policy: Arc<Policy>,
    agent_id: String,
    supervision: Supervision,
    cancel: CancellationToken,
    /// Where camera up/down and recording-stopped events go (HQ, logs).
    events: Option<Arc<dyn EventSink>>,
    /// 0 not yet known, 1 up, 2 down: only changes are reported.
    state: std::sync::atomic::AtomicU8,
    /// Beaten on every turn of the supervision and bus loops.
    beat: Option<Beat>,
}

impl Recorder {
    pub fn new(
        log: CameraLog,
        disk: DiskFloor,
        policy: Arc<Policy>,
        agent_id: String,
        supervision: Supervision,
        cancel: CancellationToken,
    ) -> Recorder {
        Recorder {
            camera: log.camera().clone(),
            disk,
            shared: Arc::new(Mutex::new(Segmenter {
                log,
                open: Vec::new(),
                failure: None,
            })),
            policy,
            agent_id,
            supervision,
            cancel,
            events: None,
            state: std::sync::atomic::AtomicU8::new(0),
            beat: None,
        }
    }

    /// Shows this camera's loop as alive on `beat` (the agent's watchdog).
    pub fn with_beat(mut self, beat: Beat) -> Recorder {
        self.beat = Some(beat);
        self
    }

    fn beat(&self) {
        if let Some(b) = &self.beat {
            b.beat();
        }
    }

    /// Reports camera up/down and recording-stopped to `sink`.
    pub fn with_events(mut self, sink: Arc<dyn EventSink>) -> Recorder {
        self.events = Some(sink);
        self
    }

    /// Emits `event` if the camera's state changed to `up` (or down).
    fn report(&self, up: bool, event: Event) {
        let new = if up { 1 } else { 2 };
        if self.state.swap(new, Ordering::Relaxed) != new {
            if let Some(sink) = &self.events {
                sink.emit(event);
            }
        }
    }

    /// Records until the token is cancelled. Blocking: run on a dedicated thread.
    pub fn run(self) {
        let id = self.camera.id.clone();
        let relay = match wake::Relay::start(&id, self.cancel.clone()) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(camera = %id, error = %e, "no stop relay: shutdown is noticed within a second");
                None
            }
        };
        let mut failures: u32 = 0;
        let mut backoff = Backoff::new(
            self.supervision.backoff_initial,
            self.supervision.backoff_max,
        );
        loop {
            self.beat();
            if self.cancel.is_cancelled() {
                break;
            }
            tracing::info!(camera = %id, source = %self.camera.source.display_url(), "camera starting");
            let started = Instant::now();
            match self.attempt(relay.as_ref()) {
                Outcome::Shutdown => break,
                Outcome::SourceEnded => {
                    tracing::info!(camera = %id, "source ended; restarting it");
                    failures = 0;
                    backoff.reset();
                }
                Outcome::Failed(reason) => {
                    if started.elapsed() > Duration::from_secs(60) {
                        failures = 0;
                        backoff.reset();
                    }
                    let delay = backoff.next_delay();
                    failures = failures.saturating_add(1);
                    tracing::warn!(camera = %id, %reason, retry_in_ms = delay.as_millis() as u64,
                        attempt = failures, "camera down");
                    self.report(
                        false,
                        Event::CameraDown {
                            camera: id.clone(),
                            reason: reason.clone(),
                        },
                    );
                    self.with_log(|log| log.note_gap_reason(format!("camera down: {reason}")));
                    if wake::wait_cancelled(&self.cancel, delay, || self.beat()) {
                        break;
                    }
                }
            }
        }
        // A camera that is down at shutdown leaves its gap in the chain now.
        self.with_log(|log| {
            if let Err(e) = log.commit_gap_if_needed(crate::clock::now()) {
                tracing::error!(camera = %log.camera().id, error = %e, "could not record the final gap");
            }
        });
        tracing::info!(camera = %id, "camera stopped");
    }

    fn with_log(&self, f: impl FnOnce(&mut CameraLog)) {
        f(&mut lock(&self.shared).log)
    }

    fn tags(&self) -> gst::TagList {
        let purpose = &self.camera.purpose;
        let mut tags = gst::TagList::new();
        {
            let t = tags.make_mut();
            t.add::<gst::tags::Title>(&purpose.text.as_str(), gst::TagMergeMode::Replace);
            t.add::<gst::tags::Description>(
                &self.policy.render_notice(purpose).as_str(),
                gst::TagMergeMode::Replace,
            );
            t.add::<gst::tags::Copyright>(
                &self.policy.controller.name.as_str(),
                gst::TagMergeMode::Replace,
            );
            let comment = format!(
                "agent={}; camera={}; kind={}; purpose={}; legal-basis={}; class={}; policy={}",
                self.agent_id,
                self.camera.id,
                self.camera.kind.as_str(),
                purpose.id,
                purpose.legal_basis.as_str(),
                self.camera.class.id,
                self.policy.id
            );
            t.add::<gst::tags::Comment>(&comment.as_str(), gst::TagMergeMode::Replace);
        }
        tags
    }

    fn attempt(&self, relay: Option<&wake::Relay>) -> Outcome {
        // A failure an earlier attempt left unreported is not this one's reason.
        lock(&self.shared).failure = None;
        if let Some(reason) = self.disk.check() {
            return Outcome::Failed(reason);
        }
        let pipeline = gst::Pipeline::with_name(&format!("camera-{}", self.camera.id));
        let encoding = pipeline::encoding(&self.camera);
        let segment_ns = self.camera.segment.as_nanos() as u64;
        let built = segment::build(
            &pipeline,
            self.shared.clone(),
            segment_ns,
            self.tags(),
            encoding != "passthrough",
        )
        .and_then(|(splitmux, pad)| {
            pipeline::build_source(&pipeline, &self.camera, &pad).map(|r| (splitmux, pad, r))
        });
        let (_splitmux, video_pad, reader) = match built {
            Ok(v) => v,
            Err(e) => {
                teardown(&pipeline, &self.camera.id);
                return Outcome::Failed(e.to_string());
            }
        };
        // Data-flow watchdog: time of the last buffer into the segmenter.
        // The first one wakes the supervisor (the camera is up).
        let epoch = Instant::now();
        let last_buffer_ms = Arc::new(AtomicU64::new(0));
        let bus = pipeline.bus();
        {
            let (last, bus) = (last_buffer_ms.clone(), bus.clone());
            video_pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                let now = epoch.elapsed().as_millis() as u64 + 1;
                if last.swap(now, Ordering::Relaxed) == 0 {
                    if let Some(bus) = &bus {
                        wake::wake(bus);
                    }
                }
                gst::PadProbeReturn::Ok
            });
        }
        let attached = bus.as_ref().zip(relay).map(|(bus, r)| r.attach(bus));
        let ended = self.play(&pipeline, &video_pad, encoding, epoch, &last_buffer_ms);
        drop(attached);
        // Read the caps before stopping clears them.
        let facts = media_facts(&video_pad, encoding);
        // Stopping the pipeline releases an RTSP reader waiting on a full
        // queue; the reader is then joined.
        if let Some(r) = &reader {
            r.stop();
        }
        teardown(&pipeline, &self.camera.id);
        drop(reader);
        // Whatever is still open was cut short.
        let mut g = lock(&self.shared);
        if let Err(e) = g.abort_all(crate::clock::now(), &facts) {
            tracing::error!(camera = %self.camera.id, error = %e, "could not commit a cut-short segment; it is recovered at next start");
        }
        ended
    }

    fn play(
        &self,
        pipeline: &gst::Pipeline,
        video_pad: &gst::Pad,
        encoding: &'static str,
        epoch: Instant,
        last_buffer_ms: &AtomicU64,
    ) -> Outcome {
        let id = &self.camera.id;
        let Some(bus) = pipeline.bus() else {
            return Outcome::Failed("pipeline has no bus".into());
        };
        if let Err(e) = pipeline.set_state(gst::State::Playing) {
            let detail = drain_error(&bus).unwrap_or_else(|| e.to_string());
            return Outcome::Failed(detail);
        }
        let mut eos_sent: Option<Instant> = None;
        let mut announced = false;
        // Set when recording stops for a reason other than shutdown (disk floor).
        let mut stop_reason: Option<String> = None;
        let mut disk_checked = Instant::now();
        loop {
            self.beat();
            if eos_sent.is_none() && disk_checked.elapsed() >= Duration::from_secs(1) {
                disk_checked = Instant::now();
                if let Some(reason) = self.disk.check() {
                    tracing::warn!(camera = %id, %reason, "closing the open segment before the disk fills");
                    if let Some(sink) = &self.events {
                        sink.emit(Event::RecordingStopped {
                            camera: id.clone(),
                            reason: reason.clone(),
                        });
                    }
                    stop_reason = Some(reason);
                    pipeline.send_event(gst::event::Eos::new());
                    eos_sent = Some(Instant::now());
                }
            }
            if eos_sent.is_none() && self.cancel.is_cancelled() {
                tracing::info!(camera = %id, "stopping: closing the open segment");
                pipeline.send_event(gst::event::Eos::new());
                eos_sent = Some(Instant::now());
            }
            if let Some(t) = eos_sent {
                if t.elapsed() > EOS_TIMEOUT {
                    tracing::warn!(camera = %id, "open segment did not close in time; committing it as truncated");
                    return match stop_reason {
                        Some(reason) => Outcome::Failed(reason),
                        None => Outcome::Shutdown,
                    };
                }
            }
            let last = last_buffer_ms.load(Ordering::Relaxed);
            let since = epoch
                .elapsed()
                .saturating_sub(Duration::from_millis(last.saturating_sub(1)));
            if eos_sent.is_none() {
                if last == 0 && since > START_TIMEOUT {
                    return Outcome::Failed(format!(
                        "no video within {} s of starting",
                        START_TIMEOUT.as_secs()
                    ));
                }
                if last != 0 && since > STALL_TIMEOUT {
                    return Outcome::Failed(format!("no video for {} s", STALL_TIMEOUT.as_secs()));
                }
            }
            if last != 0 && !announced {
                announced = true;
                tracing::info!(camera = %id, "camera up: video flowing");
                self.report(true, Event::CameraUp { camera: id.clone() });
            }
            let Some(msg) = bus.timed_pop(wake::TURN) else {
                continue;
            };
            use gst::MessageView;
            match msg.view() {
                MessageView::Eos(_) => {
                    // The last fragment's close may still be on its way.
                    let until = Instant::now() + Duration::from_secs(2);
                    while self.has_unclosed() && Instant::now() < until {
                        if let Some(m) = bus.timed_pop(gst::ClockTime::from_mseconds(100)) {
                            if let Err(e) =
                                self.on_fragment_message(pipeline, &m, video_pad, encoding)
                            {
                                return Outcome::Failed(e);
                            }
                        }
                    }
                    return match (stop_reason, eos_sent) {
                        (Some(reason), _) => Outcome::Failed(reason),
                        (None, Some(_)) => Outcome::Shutdown,
                        (None, None) => Outcome::SourceEnded,
                    };
                }
                MessageView::Error(err) => {
                    let shared_failure = lock(&self.shared).failure.take();
                    let src = err
                        .src()
                        .map(|s| s.path_string().to_string())
                        .unwrap_or_default();
                    let reason = shared_failure.unwrap_or_else(|| {
                        format!("{}: {}", src.rsplit('/').next().unwrap_or(""), err.error())
                    });
                    tracing::debug!(camera = %id, debug = ?err.debug(), "pipeline error");
                    return Outcome::Failed(redact(&reason));
                }
                MessageView::Element(_) => {
                    if let Err(e) = self.on_fragment_message(pipeline, &msg, video_pad, encoding) {
                        return Outcome::Failed(e);
                    }
                }
                _ => {}
            }
        }
    }

    /// True while a fragment is open that `splitmuxsink` has not closed.
    fn has_unclosed(&self) -> bool {
        lock(&self.shared)
            .open
            .iter()
            .any(|f| f.closed_at.is_none())
    }

    /// Handles `splitmuxsink-fragment-opened/closed`; other messages are ignored.
    fn on_fragment_message(
        &self,
        pipeline: &gst::Pipeline,
        msg: &gst::Message,
        video_pad: &gst::Pad,
        encoding: &'static str,
    ) -> Result<(), String> {
        let Some(s) = msg.structure() else {
            return Ok(());
        };
        let opened = match s.name().as_str() {
            "splitmuxsink-fragment-opened" => true,
            "splitmuxsink-fragment-closed" => false,
            _ => return Ok(()),
        };
        let at = s
            .get::<gst::ClockTime>("running-time")
            .ok()
            .and_then(|rt| utc_of_running_time(pipeline, rt))
            .unwrap_or_else(crate::clock::now);
        let facts = media_facts(video_pad, encoding);
        let mut g = lock(&self.shared);
        let done = if opened {
            g.opened(at, &facts)
        } else {
            g.closed(at, &facts)
        };
        done.map_err(|e| format!("sealing a segment failed: {e}"))
    }
}

/// Stops a pipeline, giving up after [`TEARDOWN_TIMEOUT`]: a plugin that hangs
/// while stopping (seen with `splitmuxsink` after its sink failed) must not
/// hold the camera's supervisor, nor the agent's shutdown, forever. A pipeline
/// given up on is left to its threads and logged as an error.
fn teardown(pipeline: &gst::Pipeline, camera: &str) {
    let (tx, rx) = std::sync::mpsc::channel();
    let p = pipeline.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("stop-{camera}"))
        .spawn(move || {
            let _ = p.set_state(gst::State::Null);
            let _ = tx.send(());
        });
    match spawned {
        Ok(_) => {
            if rx.recv_timeout(TEARDOWN_TIMEOUT).is_err() {
                tracing::error!(%camera, "pipeline did not stop within {} s; abandoning it", TEARDOWN_TIMEOUT.as_secs());
            }
        }
        Err(_) => {
            let _ = pipeline.set_state(gst::State::Null);
        }
    }
}

/// Wall-clock instant of a running time of `pipeline`, via its clock.
fn utc_of_running_time(pipeline: &gst::Pipeline, rt: gst::ClockTime) -> Option<DateTime<Utc>> {
    let clock = pipeline.clock()?;
    let base = pipeline.base_time()?;
    let running_now = clock.time().checked_sub(base)?;
    // A running time from an element is outside data: one that is not a
    // plausible instant (past i64 nanoseconds) yields None, never a panic.
    let behind = i64::try_from(running_now.nseconds())
        .ok()?
        .checked_sub(i64::try_from(rt.nseconds()).ok()?)?;
    crate::clock::now().checked_sub_signed(chrono::Duration::nanoseconds(behind))
}

fn drain_error(bus: &gst::Bus) -> Option<String> {
    let msg = bus.timed_pop_filtered(
        gst::ClockTime::from_mseconds(100),
        &[gst::MessageType::Error],
    )?;
    match msg.view() {
        gst::MessageView::Error(e) => Some(redact(&e.error().to_string())),
        _ => None,
    }
}

/// Removes `user:password@` from every URL in free text (GStreamer error
/// messages quote the location); a single configured URL is shown with
/// `SourceConfig::display_url` instead.
pub fn redact(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c == '/' || c.is_whitespace())
            .unwrap_or(tail.len());
        match tail[..end].rfind('@') {
            Some(at) => {
                out.push_str("***@");
                rest = &tail[at + 1..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("rtsp://u:p@cam/x"), "rtsp://***@cam/x");
        assert_eq!(
            redact("error at rtsp://a:b@h:554/s and rtsp://h2/"),
            "error at rtsp://***@h:554/s and rtsp://h2/"
        );
        assert_eq!(redact("no url"), "no url");
    }
}
