//! Building one camera's GStreamer pipeline, source to segmenter.
//!
//! - RTSP without transcoding: `FrameSrc ! splitmuxsink` (over UDP with a
//!   `queue` between) — the camera's own H.264/H.265 stream, no decode and no
//!   re-encode. The camera's RTSP client ([`super::rtsp`]) pushes one
//!   MP4-ready access unit at a time into [`FrameSrc`], on its own thread;
//!   what follows is linked once the client has seen the camera's
//!   description ([`super::codec::rtsp_branch`]). `rtsps://` cameras are
//!   received with `rtspsrc ! rtph26Xdepay ! h26Xparse` instead
//!   ([`super::rtspsrc`]).
//! - Sources the agent encodes (test, V4L2, file, transcoded RTSP):
//!   `… ! I420 caps ! [privacy masks] ! x264enc ! h264parse ! splitmuxsink`;
//!   a transcoded RTSP camera decodes first (`avdec_h26X`).
//!   The I420 caps filter is deliberate: without it x264enc picks 4:4:4
//!   ("High 4:4:4"), which most players and hardware decoders refuse.
//!
//! The segmenter is `splitmuxsink` with a fragmented-MP4 `mp4mux` (readable up
//! to its last whole fragment if cut short) whose output stream is the
//! sealing writer (see [`super::segment`]).

use gstreamer as gst;
use gstreamer::prelude::*;

use super::codec::{encoder_chain, rtsp_branch};
use super::element::{chain, link, link_pad, make, BuildError};
use super::framesrc::FrameSrc;
use super::rtsp::Reader;
use crate::config::{CameraConfig, RtspTransport, SourceConfig};

/// Frames an RTSP camera over UDP, or a transcoded one, may have queued for
/// the pipeline before its reader waits (≈ 8 s at 4 Mbit/s); normally the
/// queue is empty.
const RTSP_QUEUE_BYTES: u32 = 4 << 20;

/// How the segments of a camera are produced, as stated in its manifests.
pub fn encoding(camera: &CameraConfig) -> &'static str {
    match &camera.source {
        SourceConfig::Rtsp {
            transcode: None, ..
        } => "passthrough",
        SourceConfig::Rtsp {
            transcode: Some(_), ..
        } => "transcoded",
        _ => "encoded",
    }
}

/// Builds the source part of `camera`'s pipeline and links it to `video_pad`
/// (the segmenter's video request pad), now or once the source knows its
/// codec. For an RTSP camera it returns the running client, whose drop ends
/// the session.
pub fn build_source(
    pipeline: &gst::Pipeline,
    camera: &CameraConfig,
    video_pad: &gst::Pad,
) -> Result<Option<Reader>, BuildError> {
    match &camera.source {
        SourceConfig::Dock { .. } => Err(BuildError::Link(
            camera.id.clone(),
            "a body camera is not recorded live: its recordings are ingested from its dock".into(),
        )),
        SourceConfig::Test { pattern, video } => {
            let src = make("videotestsrc")?;
            src.set_property("is-live", true);
            src.set_property_from_str("pattern", pattern);
            pipeline
                .add(&src)
                .map_err(|e| BuildError::Link("videotestsrc".into(), e.to_string()))?;
            let (first, last) = encoder_chain(pipeline, camera, video, true)?;
            link(&src, &first)?;
            link_pad(&last, video_pad)?;
            Ok(None)
        }
        SourceConfig::V4l2 { device, video } => {
            let src = make("v4l2src")?;
            src.set_property("device", device.to_string_lossy().as_ref());
            let conv = make("videoconvert")?;
            let scale = make("videoscale")?;
            let rate = make("videorate")?;
            chain(pipeline, &[&src, &conv, &scale, &rate])?;
            let (first, last) = encoder_chain(pipeline, camera, video, true)?;
            link(&rate, &first)?;
            link_pad(&last, video_pad)?;
            Ok(None)
        }
        SourceConfig::File { path, video } => {
            let src = make("filesrc")?;
            src.set_property("location", path.to_string_lossy().as_ref());
            let decode = make("decodebin")?;
            let conv = make("videoconvert")?;
            let scale = make("videoscale")?;
            let rate = make("videorate")?;
            // A file is not live: pace it to the clock like a camera.
            let pace = make("clocksync")?;
            chain(pipeline, &[&src, &decode])?;
            chain(pipeline, &[&conv, &scale, &rate, &pace])?;
            let (first, last) = encoder_chain(pipeline, camera, video, true)?;
            link(&pace, &first)?;
            link_pad(&last, video_pad)?;
            link_dynamic_video(&decode, move |pad| {
                let sink = conv
                    .static_pad("sink")
                    .ok_or("videoconvert has no sink pad")?;
                pad.link(&sink).map(|_| ()).map_err(|e| e.to_string())
            });
            Ok(None)
        }
        SourceConfig::Rtsp {
            url,
            transport,
            latency_ms,
            transcode,
        } if is_rtsps(url) => {
            super::rtspsrc::build(
                pipeline,
                camera,
                url,
                *transport,
                *latency_ms,
                *transcode,
                video_pad,
            )?;
            Ok(None)
        }
        SourceConfig::Rtsp {
            url,
            transport,
            transcode,
            ..
        } => {
            let frames = FrameSrc::new("rtsp");
            pipeline
                .add(&frames)
                .map_err(|e| BuildError::Link("RTSP source".into(), e.to_string()))?;
            let src = rtsp_cushion(pipeline, &frames, *transport, transcode.is_some())?;
            let pipeline_weak = pipeline.downgrade();
            let id = camera.id.clone();
            let (camera, video_pad, transcode) = (camera.clone(), video_pad.clone(), *transcode);
            let link: super::rtsp::Link = Box::new(move |codec| {
                let pipeline = pipeline_weak.upgrade().ok_or_else(|| {
                    BuildError::Link("RTSP source".into(), "pipeline gone".into())
                })?;
                rtsp_branch(
                    &pipeline,
                    &camera,
                    transcode.as_ref(),
                    codec,
                    &src,
                    true,
                    &video_pad,
                )
            });
            let reader = super::rtsp::Reader::start(super::rtsp::Params {
                camera: id,
                url: url.clone(),
                transport: *transport,
                frames,
                link,
            })
            .map_err(|e| BuildError::Link("RTSP client thread".into(), e.to_string()))?;
            Ok(Some(reader))
        }
    }
}

/// What the RTSP client's frames are pushed into: the frame source itself
/// (TCP passthrough: the client's thread runs up to the segmenter's queue;
/// while a slow disk holds it there, TCP flow control holds the camera
/// back instead of dropping packets), or a `queue` behind it where a cushion is wanted — RTP over
/// UDP, lost if the reader waits longer than its socket buffer holds, and
/// transcoding, whose decoder and encoder need a thread of their own.
fn rtsp_cushion(
    pipeline: &gst::Pipeline,
    frames: &FrameSrc,
    transport: RtspTransport,
    transcode: bool,
) -> Result<gst::Element, BuildError> {
    if transport != RtspTransport::Udp && !transcode {
        return Ok(frames.clone().upcast());
    }
    let queue = make("queue")?;
    queue.set_property("name", "rtsp-queue");
    queue.set_property("max-size-bytes", RTSP_QUEUE_BYTES);
    queue.set_property("max-size-buffers", 0u32);
    queue.set_property("max-size-time", 0u64);
    chain(pipeline, &[&queue])?;
    link(frames.upcast_ref(), &queue)?;
    Ok(queue)
}

/// `rtsps://` (RTSP over TLS) is received with GStreamer's `rtspsrc`; the
/// RTSP client speaks `rtsp://` only.
fn is_rtsps(url: &str) -> bool {
    url.get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("rtsps://"))
}

/// Links the first raw video pad `el` exposes.
fn link_dynamic_video(
    el: &gst::Element,
    f: impl Fn(&gst::Pad) -> Result<(), String> + Send + Sync + 'static,
) {
    let done = std::sync::atomic::AtomicBool::new(false);
    el.connect_pad_added(move |el, pad| {
        let is_video = pad
            .current_caps()
            .and_then(|c| c.structure(0).map(|s| s.name().starts_with("video/")))
            .unwrap_or(false);
        if !is_video || done.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        if let Err(e) = f(pad) {
            gst::element_error!(el, gst::CoreError::Negotiation, ("{}", e));
        }
    });
}
