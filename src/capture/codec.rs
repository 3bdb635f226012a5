//! What follows a video source, by codec: the encoder chain every encoded
//! source goes through (`I420 caps ! [privacy masks] ! x264enc ! h264parse`;
//! the I420 caps filter is deliberate: without it x264enc picks 4:4:4, which
//! most players and hardware decoders refuse) and the branch behind an RTSP
//! source (parser, or decoder and encoder when transcoding). Shared by the
//! agent's RTSP client ([`super::rtsp`]) and `rtspsrc` ([`super::rtspsrc`]).

use gstreamer as gst;
use gstreamer::prelude::*;
use retina::codec::VideoParameters;

use super::element::{chain, link, link_pad, make, BuildError};
use crate::config::{CameraConfig, VideoParams};

/// A video codec the agent records from RTSP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    H264,
    H265,
}

impl Codec {
    pub fn from_encoding(name: &str) -> Option<Codec> {
        match name {
            "h264" => Some(Codec::H264),
            "h265" => Some(Codec::H265),
            _ => None,
        }
    }

    /// The caps the source announces: length-prefixed access units with
    /// the decoder configuration (`avcC`/`hvcC`) as `codec_data`, and the
    /// picture size — all `mp4mux` needs, so no parser runs in between.
    pub fn caps(self, v: &VideoParameters) -> gst::Caps {
        let (name, format) = match self {
            Codec::H264 => ("video/x-h264", "avc"),
            Codec::H265 => ("video/x-h265", "hvc1"),
        };
        let (width, height) = v.pixel_dimensions();
        let mut b = gst::Caps::builder(name)
            .field("stream-format", format)
            .field("alignment", "au")
            .field(
                "codec_data",
                gst::Buffer::from_slice(v.extra_data().to_vec()),
            )
            .field("width", i32::try_from(width).unwrap_or(i32::MAX))
            .field("height", i32::try_from(height).unwrap_or(i32::MAX));
        let fraction = |(n, d): (u32, u32)| {
            let n = i32::try_from(n).ok()?;
            let d = i32::try_from(d).ok()?;
            (n > 0 && d > 0).then(|| gst::Fraction::new(n, d))
        };
        if let Some(par) = v.pixel_aspect_ratio().and_then(fraction) {
            b = b.field("pixel-aspect-ratio", par);
        }
        // retina gives the frame *interval* (e.g. 1/25 s).
        if let Some(rate) = v.frame_rate().and_then(|(n, d)| fraction((d, n))) {
            b = b.field("framerate", rate);
        }
        b.build()
    }
}

/// Raw-video caps every encoded path is forced into.
fn i420_caps(v: &VideoParams, with_rate: bool) -> gst::Caps {
    let mut b = gst::Caps::builder("video/x-raw")
        .field("format", "I420")
        .field("width", v.width as i32)
        .field("height", v.height as i32);
    if with_rate {
        b = b.field("framerate", gst::Fraction::new(v.fps as i32, 1));
    }
    b.build()
}

/// caps filter → (masks) → x264enc → h264parse. Returns (first, last).
pub fn encoder_chain(
    pipeline: &gst::Pipeline,
    camera: &CameraConfig,
    v: &VideoParams,
    with_rate: bool,
) -> Result<(gst::Element, gst::Element), BuildError> {
    let caps = make("capsfilter")?;
    caps.set_property("caps", i420_caps(v, with_rate));
    let enc = make("x264enc")?;
    enc.set_property("bitrate", v.bitrate_kbps);
    enc.set_property("key-int-max", v.fps.saturating_mul(2));
    enc.set_property_from_str("tune", "zerolatency");
    enc.set_property_from_str("speed-preset", "superfast");
    let parse = make("h264parse")?;
    chain(pipeline, &[&caps, &enc, &parse])?;
    if let Some(pad) = caps.static_pad("src") {
        super::mask::attach(&pad, camera.masks.clone());
    }
    Ok((caps, parse))
}

/// Links the codec-specific part behind an RTSP source `src` to
/// `video_pad` and brings what it added to the pipeline's state. `complete`:
/// `src` delivers MP4-ready access units with full caps (the RTSP client) and
/// goes straight on; otherwise (`rtph26Xdepay`) through `h26Xparse` first.
/// Then the segmenter (passthrough), or `avdec_h26X ! videoconvert !
/// videoscale !` and the encoder chain (transcoding).
pub fn rtsp_branch(
    pipeline: &gst::Pipeline,
    camera: &CameraConfig,
    transcode: Option<&VideoParams>,
    codec: Codec,
    src: &gst::Element,
    complete: bool,
    video_pad: &gst::Pad,
) -> Result<(), BuildError> {
    let (parse, dec) = match codec {
        Codec::H264 => ("h264parse", "avdec_h264"),
        Codec::H265 => ("h265parse", "avdec_h265"),
    };
    let mut last = src.clone();
    if !complete {
        let parse = make(parse)?;
        chain(pipeline, &[&parse])?;
        link(&last, &parse)?;
        last = parse;
    }
    match transcode {
        None => link_pad(&last, video_pad)?,
        Some(v) => {
            let dec = make(dec)?;
            let conv = make("videoconvert")?;
            let scale = make("videoscale")?;
            chain(pipeline, &[&dec, &conv, &scale])?;
            link(&last, &dec)?;
            let (first, last) = encoder_chain(pipeline, camera, v, false)?;
            link(&scale, &first)?;
            link_pad(&last, video_pad)?;
        }
    }
    // Everything just added is still in NULL; bring it to the pipeline's state.
    for e in pipeline.iterate_elements().into_iter().flatten() {
        if e.current_state() == gst::State::Null {
            let _ = e.sync_state_with_parent();
        }
    }
    Ok(())
}
