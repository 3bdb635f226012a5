//! What a docked file's container says about it, read with GStreamer's
//! discoverer (`gstreamer-pbutils`): container type, video codec and size,
//! duration, and the recording's start (the container's creation time —
//! `mvhd` in MP4/QuickTime — on the camera's clock).
//!
//! The probe only reads the camera's file; it never decides whether the file
//! is sealed. A file the discoverer cannot parse is sealed all the same and
//! flagged (`parses_as_video = false`, with the discoverer's reason).

use chrono::{DateTime, Utc};
use gstreamer as gst;
use gstreamer_pbutils as pbutils;
use gstreamer_pbutils::prelude::*;
use std::path::Path;

/// How long the discoverer may take on one file.
pub const PROBE_TIMEOUT: gst::ClockTime = gst::ClockTime::from_seconds(30);

/// MIME type recorded for a file whose container is not recognised.
pub const UNKNOWN_CONTAINER: &str = "application/octet-stream";

/// The container's facts about one file.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    /// MIME type of the container (`video/mp4`, `video/quicktime`, …).
    pub container: String,
    /// `h264`, `h265`, `mjpeg`, `vp8`, `vp9`, `av1` or `unknown`.
    pub codec: String,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub duration_ms: Option<u64>,
    /// The container's creation time, on the camera's clock.
    pub start: Option<DateTime<Utc>>,
    /// `None` when the file parses as video; else what the discoverer said.
    pub error: Option<String>,
}

impl Probe {
    fn not_video(reason: String) -> Probe {
        Probe {
            container: UNKNOWN_CONTAINER.into(),
            codec: "unknown".into(),
            width: None,
            height: None,
            duration_ms: None,
            start: None,
            error: Some(reason),
        }
    }
}

/// Probes `path`. Never fails: a file that cannot be parsed is described as such.
pub fn probe(path: &Path) -> Probe {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let uri = match gst::glib::filename_to_uri(&absolute, None) {
        Ok(u) => u,
        Err(e) => return Probe::not_video(format!("no file URI for the path: {e}")),
    };
    let discoverer = match pbutils::Discoverer::new(PROBE_TIMEOUT) {
        Ok(d) => d,
        Err(e) => return Probe::not_video(format!("GStreamer discoverer unavailable: {e}")),
    };
    let info = match discoverer.discover_uri(&uri) {
        Ok(info) => info,
        Err(e) => return Probe::not_video(e.message().to_owned()),
    };
    if info.result() != pbutils::DiscovererResult::Ok {
        return Probe::not_video(format!("discoverer: {:?}", info.result()));
    }
    let container = info
        .stream_info()
        .and_then(|s| s.caps())
        .and_then(|c| c.structure(0).map(container_type))
        .unwrap_or_else(|| UNKNOWN_CONTAINER.to_owned());
    let duration_ms = info.duration().map(|d| d.mseconds());
    let video = info.video_streams().into_iter().next();
    // qtdemux posts the creation time as a global tag, which (GStreamer
    // 1.22) only the deprecated `DiscovererInfo::tags` carries; per-stream
    // tags are looked at first, for demuxers that put it there.
    #[allow(deprecated)]
    let global = info.tags();
    let start = info
        .stream_info()
        .and_then(|s| s.tags())
        .into_iter()
        .chain(video.as_ref().and_then(|v| v.tags()))
        .chain(global)
        .find_map(|t| t.get::<gst::tags::DateTime>().map(|v| v.get()))
        .and_then(|dt| to_utc(&dt));
    let Some(video) = video else {
        return Probe {
            container,
            duration_ms,
            start,
            ..Probe::not_video("the file has no video stream".into())
        };
    };
    let codec = video
        .caps()
        .and_then(|c| c.structure(0).map(|s| codec_name(s.name().as_str())))
        .unwrap_or("unknown");
    Probe {
        container,
        codec: codec.into(),
        width: Some(video.width()).filter(|w| *w > 0),
        height: Some(video.height()).filter(|h| *h > 0),
        duration_ms,
        start,
        error: None,
    }
}

/// The MIME type of a container from the demuxer's caps.
fn container_type(s: &gst::StructureRef) -> String {
    match (s.name().as_str(), s.get::<&str>("variant").ok()) {
        // qtdemux says `variant=iso` for ISO MP4 (and 3GP); plain QuickTime has none.
        ("video/quicktime", Some(v)) if v.starts_with("iso") => "video/mp4".into(),
        ("video/mpegts", _) => "video/mp2t".into(),
        ("video/x-msvideo", _) => "video/x-msvideo".into(),
        (name, _) => name.to_owned(),
    }
}

fn codec_name(caps: &str) -> &'static str {
    match caps {
        "video/x-h264" => "h264",
        "video/x-h265" => "h265",
        "image/jpeg" => "mjpeg",
        "video/x-vp8" => "vp8",
        "video/x-vp9" => "vp9",
        "video/x-av1" => "av1",
        _ => "unknown",
    }
}

/// A GStreamer date-time with a time of day, as UTC (date-only values are
/// not a recording start).
fn to_utc(dt: &gst::DateTime) -> Option<DateTime<Utc>> {
    if !dt.has_time() {
        return None;
    }
    let text = dt.to_iso8601_string().ok()?;
    DateTime::parse_from_rfc3339(&text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}
