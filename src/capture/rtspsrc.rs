//! `rtsps://` cameras (RTSP over TLS), received with GStreamer's `rtspsrc`:
//! `rtspsrc ! rtph26Xdepay ! h26Xparse ! …`. The agent's own RTSP client
//! ([`super::rtsp`]) speaks plain `rtsp://` only; it is preferred for those
//! because `rtspsrc` costs about twice the CPU (docs/BENCHMARKS.md §2).

use std::sync::atomic::{AtomicBool, Ordering};

use gstreamer as gst;
use gstreamer::prelude::*;

use super::codec::{rtsp_branch, Codec};
use super::element::{make, BuildError};
use crate::config::{CameraConfig, RtspTransport, VideoParams};

/// Adds `rtspsrc` for `url`; the codec's branch is linked when its pad appears.
pub fn build(
    pipeline: &gst::Pipeline,
    camera: &CameraConfig,
    url: &str,
    transport: RtspTransport,
    latency_ms: u32,
    transcode: Option<VideoParams>,
    video_pad: &gst::Pad,
) -> Result<(), BuildError> {
    let src = make("rtspsrc")?;
    src.set_property("location", url);
    src.set_property("latency", latency_ms);
    match transport {
        RtspTransport::Tcp => src.set_property_from_str("protocols", "tcp"),
        RtspTransport::Udp => src.set_property_from_str("protocols", "udp"),
        RtspTransport::Auto => {}
    }
    pipeline
        .add(&src)
        .map_err(|e| BuildError::Link("rtspsrc".into(), e.to_string()))?;
    let pipeline_weak = pipeline.downgrade();
    let video_pad = video_pad.clone();
    let camera = camera.clone();
    let linked = AtomicBool::new(false);
    src.connect_pad_added(move |src, pad| {
        let Some(pipeline) = pipeline_weak.upgrade() else {
            return;
        };
        let Some(codec) = rtp_video_codec(pad) else {
            return;
        };
        if linked.swap(true, Ordering::SeqCst) {
            return; // one video stream per camera
        }
        if let Err(e) = link_depayloader(
            &pipeline,
            &camera,
            transcode.as_ref(),
            codec,
            pad,
            &video_pad,
        ) {
            gst::element_error!(src, gst::CoreError::Negotiation, ("{}", e));
        }
    });
    Ok(())
}

/// The RTP video codec a pad of rtspsrc carries.
fn rtp_video_codec(pad: &gst::Pad) -> Option<Codec> {
    let caps = pad.current_caps().or_else(|| Some(pad.query_caps(None)))?;
    let s = caps.structure(0)?;
    if s.get::<&str>("media").ok()? != "video" {
        return None;
    }
    match s.get::<&str>("encoding-name").ok()? {
        "H264" => Some(Codec::H264),
        "H265" => Some(Codec::H265),
        other => {
            tracing::warn!(
                encoding = other,
                "RTSP video codec not supported (H.264 and H.265 are)"
            );
            None
        }
    }
}

fn link_depayloader(
    pipeline: &gst::Pipeline,
    camera: &CameraConfig,
    transcode: Option<&VideoParams>,
    codec: Codec,
    pad: &gst::Pad,
    video_pad: &gst::Pad,
) -> Result<(), BuildError> {
    let depay = make(match codec {
        Codec::H264 => "rtph264depay",
        Codec::H265 => "rtph265depay",
    })?;
    pipeline
        .add(&depay)
        .map_err(|e| BuildError::Link(depay.name().to_string(), e.to_string()))?;
    rtsp_branch(pipeline, camera, transcode, codec, &depay, false, video_pad)?;
    let sink = depay
        .static_pad("sink")
        .ok_or_else(|| BuildError::Link("depayloader".into(), "no sink pad".into()))?;
    pad.link(&sink)
        .map(|_| ())
        .map_err(|e| BuildError::Link("rtspsrc -> depayloader".into(), format!("{e:?}")))
}
