//! The segmenter: `splitmuxsink` cutting at keyframes, each fragment streamed
//! through the sealing writer into the store.
//!
//! For every new fragment `splitmuxsink` asks for a location
//! (`format-location-full`, on the streaming thread): we reserve the next
//! sequence in the camera's chain, create its partial file with the age
//! header, and route the segmenter's `appsink` to it: every muxed buffer is
//! encrypted into that file as it arrives. When the fragment is closed (`splitmuxsink-fragment-closed`
//! on the bus) the segment is committed: final chunk, fsync, signed manifest,
//! rename, head. Every write and data sync of the open segment is noted in
//! the disk watch (`crate::diskwatch`): one the disk holds is reported to
//! HQ, naming the camera and the file, without waiting on it. Invariant: the muxer's bytes exist only in memory (at most one
//! age chunk per open segment) and in the sealed file; there is no temporary
//! plaintext file anywhere.

use std::fs::File;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::element::{make, BuildError};
use crate::store::{CameraLog, MediaFacts, OpenSegment, SegmentInfo};
use sargs_core::seal::age::AgeWriter;

/// Bytes of ciphertext after which the open segment is flushed to stable
/// storage (`fdatasync`), bounding what a power cut can take from an open
/// segment to about this much (≈ 8 s at 4 Mbit/s).
pub const SYNC_EVERY_BYTES: u64 = 4 << 20;

/// A fragment handed to `splitmuxsink`, not yet committed.
pub struct Fragment {
    pub segment: Arc<Mutex<OpenSegment>>,
    pub start: Option<DateTime<Utc>>,
    /// When `splitmuxsink` reported it closed: all its bytes are written.
    pub closed_at: Option<DateTime<Utc>>,
}

/// State shared by the streaming thread (opening fragments) and the camera's
/// supervisor (closing them). The chain itself is owned by the camera log.
pub struct Segmenter {
    pub log: CameraLog,
    pub open: Vec<Fragment>,
    /// Set when opening a fragment failed; the supervisor reports it.
    pub failure: Option<String>,
}

/// The segment the sink currently writes into. The segmenter switches it in
/// `format-location-full`, which `splitmuxsink` calls only after the previous
/// fragment's last byte reached the sink (fragments are sequential when
/// `async-finalize` is off).
type Route = Arc<Mutex<Option<Arc<Mutex<OpenSegment>>>>>;

/// The `std::io::Write` the segmenter's sink writes muxed bytes into.
struct SealingSink {
    route: Route,
    synced_at: u64,
    /// Named with each write in the disk watch (`crate::diskwatch`).
    camera: String,
}

impl Write for SealingSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let current = self
            .route
            .lock()
            .map_err(|_| io::Error::other("segment route lock poisoned"))?
            .clone()
            .ok_or_else(|| io::Error::new(io::ErrorKind::BrokenPipe, "no open segment"))?;
        let mut seg = current
            .lock()
            .map_err(|_| io::Error::other("segment lock poisoned"))?;
        // A failure names the file: the camera's alarm says where the disk failed.
        let path = seg.path().to_owned();
        let at = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
        let writer: &mut AgeWriter<File> = seg.writer().map_err(at)?;
        let camera = Some(self.camera.as_str());
        {
            let _op = crate::diskwatch::begin("write", &path, camera);
            writer.write_all(buf).map_err(at)?;
        }
        let written = writer.ciphertext_len();
        if written < self.synced_at {
            self.synced_at = 0; // a new segment
        }
        if written - self.synced_at >= SYNC_EVERY_BYTES {
            let _op = crate::diskwatch::begin("fsync", &path, camera);
            writer.get_ref().sync_data().map_err(at)?;
            self.synced_at = written;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        // A partial age chunk is never flushed: it stays in memory until it is
        // full or the segment is finished.
        Ok(())
    }
}

/// An `appsink` whose every buffer (muxed MP4 bytes, in order, on the
/// streaming thread) goes through the sealing writer of the current segment.
fn sealing_appsink(route: Route, camera: String) -> gst_app::AppSink {
    let sink = gst_app::AppSink::builder()
        .sync(false)
        .async_(false)
        .enable_last_sample(false)
        .build();
    let mut out = SealingSink {
        route,
        synced_at: 0,
        camera,
    };
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |appsink| {
                let sample = appsink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let buffer = sample.buffer().ok_or(gst::FlowError::Error)?;
                let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
                out.write_all(&map).map_err(|e| {
                    gst::element_error!(appsink, gst::ResourceError::Write, ("sealing: {}", e));
                    gst::FlowError::Error
                })?;
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    sink
}

/// Creates the segmenter element and returns it with its video request pad.
pub fn build(
    pipeline: &gst::Pipeline,
    shared: Arc<Mutex<Segmenter>>,
    segment_ns: u64,
    tags: gst::TagList,
    request_keyframes: bool,
) -> Result<(gst::Element, gst::Pad), BuildError> {
    let splitmux = make("splitmuxsink")?;
    let mux = make("mp4mux")?;
    // Fragmented and streamable: the output is never seeked (it is an age
    // stream), and a segment cut short stays readable to its last fragment.
    mux.set_property("fragment-duration", 1000u32);
    mux.set_property("streamable", true);
    let route: Route = Arc::new(Mutex::new(None));
    let camera = crate::sync::lock(&shared).log.camera().id.clone();
    let sink = sealing_appsink(route.clone(), camera);
    splitmux.set_property("muxer", &mux);
    splitmux.set_property("sink", sink.upcast_ref::<gst::Element>());
    splitmux.set_property("max-size-time", segment_ns);
    splitmux.set_property("send-keyframe-requests", request_keyframes);
    pipeline
        .add(&splitmux)
        .map_err(|e| BuildError::Link("splitmuxsink".into(), e.to_string()))?;

    // The handler must always return a string value (NULL included): glib
    // aborts the process if a signal with a return type gets none.
    splitmux.connect("format-location-full", false, move |args| {
        let location = args[0]
            .get::<gst::Element>()
            .ok()
            .and_then(|splitmux| open_fragment(&splitmux, &shared, &route, &tags));
        Some(location.to_value())
    });

    let pad = splitmux
        .request_pad_simple("video")
        .ok_or_else(|| BuildError::Link("splitmuxsink".into(), "no video pad".into()))?;
    Ok((splitmux, pad))
}

/// Opens the next segment for `splitmuxsink`'s new fragment and points the
/// sink at it. On failure the sink is pointed nowhere (its next write fails),
/// the reason is kept for the supervisor, and an element error is posted.
fn open_fragment(
    splitmux: &gst::Element,
    shared: &Mutex<Segmenter>,
    route: &Route,
    tags: &gst::TagList,
) -> Option<String> {
    let mut guard = crate::sync::lock(shared);
    let state = &mut *guard;
    let open_count = state.open.len();
    let opened = state.log.begin_segment(crate::clock::now(), open_count);
    let segment = opened.map(|seg| {
        let location = seg.path().display().to_string();
        (location, Arc::new(Mutex::new(seg)))
    });
    if let Ok(mut r) = route.lock() {
        *r = segment.as_ref().ok().map(|(_, seg)| seg.clone());
    }
    match segment {
        Ok((location, segment)) => {
            let muxer = splitmux.property::<gst::Element>("muxer");
            muxer.set_property("streamable", true);
            if let Some(setter) = muxer.dynamic_cast_ref::<gst::TagSetter>() {
                setter.merge_tags(tags, gst::TagMergeMode::Replace);
            }
            tracing::debug!(%location, "fragment opened");
            state.open.push(Fragment {
                segment,
                start: None,
                closed_at: None,
            });
            Some(location)
        }
        Err(e) => {
            let msg = format!("cannot open a new segment: {e}");
            state.failure = Some(msg.clone());
            gst::element_error!(splitmux, gst::ResourceError::OpenWrite, ("{}", msg));
            None
        }
    }
}

impl Segmenter {
    /// Records the start of the oldest fragment without one (from
    /// `splitmuxsink-fragment-opened`; fragments open and close in order, and
    /// the message carries no location when the sink is not a file), then
    /// commits any closed fragment whose end this start now fixes.
    pub fn opened(
        &mut self,
        start: DateTime<Utc>,
        media: &MediaFacts,
    ) -> Result<(), crate::store::StoreError> {
        if let Some(f) = self.open.iter_mut().find(|f| f.start.is_none()) {
            f.start = Some(start);
        }
        self.commit_closed(media, false)
    }

    /// Marks the oldest open fragment closed (from `splitmuxsink-fragment-closed`).
    /// Its end is the next fragment's start — the keyframe where it was cut;
    /// the message's own running time lags by up to a GOP — so the commit
    /// waits for that start, or for the end of the stream.
    pub fn closed(
        &mut self,
        at: DateTime<Utc>,
        media: &MediaFacts,
    ) -> Result<(), crate::store::StoreError> {
        match self.open.iter_mut().find(|f| f.closed_at.is_none()) {
            Some(f) => f.closed_at = Some(at),
            None => tracing::warn!("a fragment closed that was never opened"),
        }
        self.commit_closed(media, false)
    }

    /// Commits leading closed fragments whose end is known (or, at the end
    /// of the stream, all of them, ending at their close).
    fn commit_closed(
        &mut self,
        media: &MediaFacts,
        stream_ended: bool,
    ) -> Result<(), crate::store::StoreError> {
        while let Some(closed_at) = self.open.first().and_then(|f| f.closed_at) {
            let end = match self.open.get(1).and_then(|f| f.start) {
                Some(next_start) => next_start,
                None if stream_ended => closed_at,
                None => break,
            };
            let f = self.open.remove(0);
            self.commit(f, end, media, false)?;
        }
        Ok(())
    }

    /// Commits every open fragment: closed ones whole, the rest as truncated
    /// (source lost, shutdown timeout).
    pub fn abort_all(
        &mut self,
        end: DateTime<Utc>,
        media: &MediaFacts,
    ) -> Result<(), crate::store::StoreError> {
        self.commit_closed(media, true)?;
        for f in std::mem::take(&mut self.open) {
            self.commit(f, end, media, true)?;
        }
        Ok(())
    }

    fn commit(
        &mut self,
        f: Fragment,
        end: DateTime<Utc>,
        media: &MediaFacts,
        truncated: bool,
    ) -> Result<(), crate::store::StoreError> {
        let info = SegmentInfo {
            start: f.start.unwrap_or(end),
            end,
            media: media.clone(),
        };
        let mut seg = crate::sync::lock(&f.segment);
        self.log.commit_segment(&mut seg, &info, truncated)
    }
}

/// What the segmenter's input caps say about the video.
pub fn media_facts(pad: &gst::Pad, encoding: &'static str) -> MediaFacts {
    let caps = pad
        .current_caps()
        .or_else(|| pad.peer().and_then(|p| p.current_caps()));
    let s = caps.as_ref().and_then(|c| c.structure(0));
    let codec = match s.map(|s| s.name().as_str()) {
        Some("video/x-h264") => "h264",
        Some("video/x-h265") => "h265",
        _ => "unknown",
    };
    MediaFacts {
        codec: codec.into(),
        width: s.and_then(|s| s.get::<i32>("width").ok()).map(|v| v as u32),
        height: s
            .and_then(|s| s.get::<i32>("height").ok())
            .map(|v| v as u32),
        encoding,
    }
}
