//! Privacy masks: rectangles blacked out of every frame before it is encoded.
//!
//! The policy sizes each camera's view to its purpose (J-A1 19). For sources
//! the agent encodes (test, V4L2, file, transcoded RTSP), a buffer probe on the
//! raw I420 frames just before the encoder fills each configured rectangle
//! with black (Y = 16, U = V = 128). Invariant: no pixel inside a mask reaches
//! the encoder; a frame that cannot be mapped is dropped, never passed unmasked.
//!
//! Written by hand because no stock GStreamer element draws opaque rectangles
//! from a list without compositing a second video stream; this costs one
//! memset per mask row.

use std::sync::{Arc, Mutex};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;

use crate::config::MaskRect;

/// Attaches the mask probe to `pad` (the source pad feeding the encoder, whose
/// caps are raw I420). Does nothing when `masks` is empty.
pub fn attach(pad: &gst::Pad, masks: Vec<MaskRect>) {
    if masks.is_empty() {
        return;
    }
    let info: Arc<Mutex<Option<gst_video::VideoInfo>>> = Arc::new(Mutex::new(None));
    pad.add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
        move |_pad, probe| {
            if let Some(gst::PadProbeData::Event(ev)) = &probe.data {
                if let gst::EventView::Caps(c) = ev.view() {
                    let vi = gst_video::VideoInfo::from_caps(c.caps()).ok();
                    if let Ok(mut slot) = info.lock() {
                        *slot = vi;
                    }
                }
                return gst::PadProbeReturn::Ok;
            }
            let Some(buffer) = probe.buffer_mut() else {
                return gst::PadProbeReturn::Ok;
            };
            let vi = info.lock().ok().and_then(|g| g.clone());
            let Some(vi) = vi else {
                tracing::error!("privacy mask: frame before caps; dropped");
                return gst::PadProbeReturn::Drop;
            };
            let buffer = buffer.make_mut();
            match apply(buffer, &vi, &masks) {
                Ok(()) => gst::PadProbeReturn::Ok,
                Err(e) => {
                    tracing::error!(error = %e, "privacy mask: frame dropped");
                    gst::PadProbeReturn::Drop
                }
            }
        },
    );
}

/// Blacks out `masks` in one I420 frame.
pub fn apply(
    buffer: &mut gst::BufferRef,
    info: &gst_video::VideoInfo,
    masks: &[MaskRect],
) -> Result<(), String> {
    if info.format() != gst_video::VideoFormat::I420 {
        return Err(format!("expected I420 frames, got {:?}", info.format()));
    }
    let mut frame = gst_video::VideoFrameRef::from_buffer_ref_writable(buffer, info)
        .map_err(|e| e.to_string())?;
    let (w, h) = (info.width(), info.height());
    for plane in 0..3u32 {
        let (sx, sy, fill) = if plane == 0 {
            (0, 0, 16u8)
        } else {
            (1, 1, 128u8)
        };
        let stride = frame.plane_stride()[plane as usize] as usize;
        let data = frame.plane_data_mut(plane).map_err(|e| e.to_string())?;
        for m in masks {
            let x0 = m.x.min(w) >> sx;
            let y0 = m.y.min(h) >> sy;
            let x1 = (m.x.saturating_add(m.width)).min(w).div_ceil(1 << sx);
            let y1 = (m.y.saturating_add(m.height)).min(h).div_ceil(1 << sy);
            for y in y0..y1 {
                let row = y as usize * stride;
                if let Some(span) = data.get_mut(row + x0 as usize..row + x1 as usize) {
                    span.fill(fill);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_pixels_are_black_and_others_untouched() {
        gst::init().expect("gstreamer");
        let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::I420, 64, 48)
            .build()
            .expect("info");
        let mut buffer = gst::Buffer::with_size(info.size()).expect("buffer");
        {
            let b = buffer.get_mut().expect("writable");
            b.map_writable().expect("map").fill(200);
            let mask = MaskRect {
                x: 10,
                y: 8,
                width: 20,
                height: 10,
            };
            apply(b, &info, &[mask]).expect("apply");
        }
        let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer.as_ref(), &info)
            .expect("frame");
        let y = frame.plane_data(0).expect("y");
        let stride = frame.plane_stride()[0] as usize;
        for row in 0..48 {
            for col in 0..64 {
                let inside = (10..30).contains(&col) && (8..18).contains(&row);
                let v = y[row * stride + col];
                assert_eq!(v, if inside { 16 } else { 200 }, "pixel {col},{row}");
            }
        }
        let u = frame.plane_data(1).expect("u");
        let ustride = frame.plane_stride()[1] as usize;
        assert_eq!(u[4 * ustride + 5], 128);
        assert_eq!(u[0], 200);
    }
}
