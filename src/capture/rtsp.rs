//! The RTSP client: one camera's session received with `retina` and fed,
//! frame by frame, into the pipeline's [`FrameSrc`] on the session's thread.
//!
//! Why not GStreamer's `rtspsrc`: it hands every RTP packet through a
//! connection reader, a jitter buffer and a depayloader on separate threads
//! (8 threads, ~1 700 futex calls a second for one 1080p camera) and alone
//! cost 1.6× what `ffmpeg -c copy` spends on the whole job (docs/BENCHMARKS.md
//! §2). `retina` (the client of Moonfire NVR) reads the TCP connection in
//! large buffered reads and depacketizes H.264 and H.265 on the thread that
//! reads, so what reaches GStreamer is one buffer per frame.
//!
//! Each camera's session runs on its own thread (`rtsp-{camera}`) with its own
//! single-threaded tokio runtime: a camera that hangs, fails or panics there
//! stops only its own pipeline, which the supervisor sees as an element error
//! (or as no video, for the stall watchdog) and restarts with backoff.
//!
//! Reading: the thread runs the session's runtime only to take every frame
//! already readable, then sleeps [`READ_BATCH_TCP`] (over UDP
//! [`READ_BATCH_UDP`]) outside it. While it sleeps nothing waits on the
//! socket, so arriving packets wake nobody, and the next read takes all of
//! them at once — instead of a wake-up and a read for every RTP packet
//! (≈ 360 a second for a 4 Mbit/s camera). Frames reach the pipeline that
//! much later; recording needs no lower latency.
//!
//! The session: DESCRIBE (credentials from the URL go to retina's
//! digest/basic authentication, never into the URL it sends or logs), SETUP of
//! the first H.264 or H.265 video stream over the configured transport, then
//! the codec-specific part of the pipeline is linked (see
//! [`super::pipeline`]), then PLAY. Frames are access units of
//! length-prefixed NAL units, the form MP4 stores, so for passthrough the
//! frames go to the segmenter directly, without a parser. The stream's caps
//! come from the parameters in force at the first keyframe (`codec_data` =
//! retina's `avcC`/`hvcC`, picture size, aspect, frame rate). The parameter
//! sets (SPS/PPS, and VPS for H.265) are also written in front of every IDR
//! picture, as cameras usually send them. Each buffer carries:
//!
//! - PTS from the camera's RTP clock ([`super::timeline`]); no DTS, like a
//!   depayloader's output;
//! - `DELTA_UNIT` unless it is a keyframe (H.264: IDR; H.265: IDR, CRA or
//!   BLA, as `h265parse` has it); `splitmuxsink` cuts segments there, and
//!   frames before the session's first keyframe are dropped, so no segment
//!   starts undecodable;
//! - `DISCONT` where the timeline was (re-)anchored.
//!
//! Packet loss, which retina reports with the next frame, is logged with the
//! count; the frames are recorded as they arrived (a decoder conceals the
//! damage until the next keyframe) — the agent does not edit what the camera
//! sent. A change of the video parameters after the first frame ends the
//! stream (EOS): one MP4 track has one sample description, so the open
//! segment is closed cleanly and the supervisor starts the source again at
//! once, with a new segment in the new parameters.
//!
//! Invariant: the thread owns the session and drops it inside its runtime;
//! [`Reader`]'s drop stops it and waits at most [`STOP_TIMEOUT`].

use std::num::NonZeroU32;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use gstreamer as gst;
use gstreamer::prelude::*;
use retina::client::{self, Credentials, SessionGroup, SessionOptions, SetupOptions};
use retina::codec::{
    CodecItem, FrameFormat, ParameterSetInsertion, ParametersRef, VideoFrame, VideoParameters,
};
use tokio_util::sync::CancellationToken;

use super::codec::Codec;
use super::framesrc::FrameSrc;
use super::timeline::Timeline;
use crate::config::RtspTransport;

/// Time allowed for the session thread to stop (TEARDOWN included).
pub const STOP_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the reader lets a TCP connection fill between batches of reads:
/// ≈ 50 KB at 4 Mbit/s; TCP holds back the sender if it would be more. Each
/// batch costs a wake-up of this thread and of the pipeline's; on a loaded
/// 2-core KVM guest a wake-up costs tens of µs, more than reading a packet.
const READ_BATCH_TCP: Duration = Duration::from_millis(100);
/// The same for RTP over UDP, where the kernel's default socket buffer
/// (≈ 208 KB) must hold a batch, or packets are lost.
const READ_BATCH_UDP: Duration = Duration::from_millis(20);
/// Time allowed for a TEARDOWN once the session is dropped.
const TEARDOWN_WAIT: Duration = Duration::from_secs(1);

/// Length-prefixed NAL units, parameter sets also before every keyframe
/// (see the module doc).
const FRAME_FORMAT: FrameFormat = FrameFormat {
    h26x_framing: retina::codec::h26x::Framing::FourByteLength,
    parameter_set_insertion: ParameterSetInsertion::EachKeyFrame,
    aac_framing: retina::codec::aac::Framing::Raw,
};

/// Links the codec-specific part of the pipeline behind the frame source.
pub type Link = Box<dyn FnOnce(Codec) -> Result<(), super::element::BuildError> + Send>;

/// What the session thread needs.
pub struct Params {
    pub camera: String,
    /// As configured: may hold `user:password@`.
    pub url: String,
    pub transport: RtspTransport,
    pub frames: FrameSrc,
    pub link: Link,
}

/// A running session thread; dropping it stops the session.
pub struct Reader {
    cancel: CancellationToken,
    thread: Option<JoinHandle<()>>,
    camera: String,
}

impl Reader {
    /// Starts the session thread.
    pub fn start(p: Params) -> std::io::Result<Reader> {
        let cancel = CancellationToken::new();
        let camera = p.camera.clone();
        let token = cancel.clone();
        let thread = std::thread::Builder::new()
            .name(format!("rtsp-{}", p.camera))
            .spawn(move || run(p, token))?;
        Ok(Reader {
            cancel,
            thread: Some(thread),
            camera,
        })
    }

    /// Asks the session to end without waiting (a push into a full queue
    /// returns once the pipeline stops).
    pub fn stop(&self) {
        self.cancel.cancel();
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.cancel.cancel();
        let Some(thread) = self.thread.take() else {
            return;
        };
        let until = std::time::Instant::now() + STOP_TIMEOUT;
        while !thread.is_finished() && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        if !thread.is_finished() {
            tracing::error!(camera = %self.camera, "RTSP session did not stop within {} s; abandoning it", STOP_TIMEOUT.as_secs());
        } else if thread.join().is_err() {
            tracing::error!(camera = %self.camera, "RTSP session thread panicked");
        }
    }
}

fn run(p: Params, cancel: CancellationToken) {
    let frames = p.frames.clone();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            fail(&frames, &format!("cannot start the RTSP client: {e}"));
            return;
        }
    };
    let group = Arc::new(SessionGroup::default());
    let started = runtime.block_on(async {
        tokio::select! {
            _ = cancel.cancelled() => Ok(None),
            r = start(p, group.clone()) => r.map(Some),
        }
    });
    let ended = match started {
        Ok(Some(mut playing)) => {
            // The runtime runs only inside `drain`: while this thread sleeps
            // nobody waits on the socket, so arriving packets wake nothing
            // and the next drain reads them in one go.
            let ended = loop {
                match runtime.block_on(playing.drain()) {
                    Ok(true) if !cancel.is_cancelled() => std::thread::sleep(playing.batch),
                    Ok(_) => break Ok(()),
                    Err(e) => break Err(e),
                }
            };
            runtime.block_on(async move { drop(playing) });
            ended
        }
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    };
    // The session is dropped by now, inside the runtime; give its TEARDOWN a
    // moment so the camera frees the session at once.
    runtime.block_on(async {
        let _ = tokio::time::timeout(TEARDOWN_WAIT, group.await_teardown()).await;
    });
    if let Err(reason) = ended {
        if !cancel.is_cancelled() {
            fail(&frames, &reason);
        }
    }
}

/// Posts `reason` as the source's error: the supervisor's bus sees it.
fn fail(frames: &FrameSrc, reason: &str) {
    let reason = super::redact(reason);
    gst::element_error!(frames, gst::ResourceError::Read, ("{}", reason));
}

/// Splits `user:password@` off `url` for retina's authentication.
pub fn split_credentials(url: &str) -> Result<(url::Url, Option<Credentials>), String> {
    let mut parsed = url::Url::parse(url)
        .map_err(|e| format!("{}: {e}", crate::config::redact_userinfo(url)))?;
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let creds = match (parsed.username(), parsed.password()) {
        ("", None) => None,
        (user, password) => Some(Credentials {
            username: decode(user),
            password: password.map(decode).unwrap_or_default(),
        }),
    };
    // Setting them fails only for URLs that cannot have userinfo at all.
    let _ = parsed.set_username("");
    let _ = parsed.set_password(None);
    Ok((parsed, creds))
}

/// DESCRIBE, SETUP, linking the pipeline, PLAY.
async fn start(p: Params, group: Arc<SessionGroup>) -> Result<Playing, String> {
    let (url, creds) = split_credentials(&p.url)?;
    let shown = url.to_string();
    let options = SessionOptions::default()
        .creds(creds)
        .user_agent(format!("sargs/{}", env!("CARGO_PKG_VERSION")))
        .session_group(group);
    let mut described = client::Session::describe(url, options)
        .await
        .map_err(|e| format!("RTSP DESCRIBE of {shown}: {e}"))?;
    let found = described.streams().iter().enumerate().find_map(|(i, s)| {
        (s.media() == "video")
            .then(|| Codec::from_encoding(s.encoding_name()).map(|c| (i, c, s.clock_rate_hz())))
            .flatten()
    });
    let Some((index, codec, clock_rate)) = found else {
        let offered: Vec<String> = described
            .streams()
            .iter()
            .map(|s| format!("{}/{}", s.media(), s.encoding_name()))
            .collect();
        return Err(format!(
            "{shown} offers no H.264 or H.265 video stream (it offers: {})",
            offered.join(", ")
        ));
    };
    let transport = match p.transport {
        RtspTransport::Udp => client::Transport::Udp(Default::default()),
        RtspTransport::Tcp | RtspTransport::Auto => client::Transport::Tcp(Default::default()),
    };
    described
        .setup(
            index,
            SetupOptions::default()
                .transport(transport)
                .frame_format(FRAME_FORMAT),
        )
        .await
        .map_err(|e| format!("RTSP SETUP of {shown}: {e}"))?;
    (p.link)(codec).map_err(|e| e.to_string())?;
    let frames = described
        // The first packet, not the PLAY response's RTP-Info, starts the
        // sequence: servers that share one stream among clients (and some
        // cameras) announce a stale one, which retina would take for loss.
        .play(
            client::PlayOptions::default().initial_seq(client::InitialSequenceNumberPolicy::Ignore),
        )
        .await
        .map_err(|e| format!("RTSP PLAY of {shown}: {e}"))?
        .demuxed()
        .map_err(|e| format!("RTSP stream of {shown}: {e}"))?;
    tracing::info!(camera = %p.camera, codec = ?codec, transport = p.transport.as_str(), "RTSP session playing");
    let batch = match p.transport {
        RtspTransport::Udp => READ_BATCH_UDP,
        RtspTransport::Tcp | RtspTransport::Auto => READ_BATCH_TCP,
    };
    Ok(Playing {
        frames,
        index,
        batch,
        feed: Feed::new(p.camera, p.frames, codec, clock_rate),
        shown,
    })
}

/// A session that plays, and where its frames go.
struct Playing {
    frames: client::Demuxed,
    /// The recorded stream's index in the session.
    index: usize,
    /// Sleep between batches of reads.
    batch: Duration,
    feed: Feed,
    /// The URL without credentials, for messages.
    shown: String,
}

impl Playing {
    /// Pushes every frame that can be had without waiting: `Ok(true)` to
    /// go on, `Ok(false)` once the pipeline takes no more.
    async fn drain(&mut self) -> Result<bool, String> {
        // Let the runtime look at the socket once (the yield parks it with
        // a zero timeout), then read all that arrived.
        tokio::task::yield_now().await;
        loop {
            let Some(next) = self.frames.next().now_or_never() else {
                return Ok(true);
            };
            let shown = &self.shown;
            let item = next
                .ok_or_else(|| format!("{shown} ended the stream"))?
                .map_err(|e| format!("RTSP stream of {shown}: {e}"))?;
            let CodecItem::VideoFrame(frame) = item else {
                continue; // RTCP
            };
            if frame.stream_id() != self.index {
                continue;
            }
            let params = match self.frames.streams()[self.index].parameters() {
                Some(ParametersRef::Video(v)) => Some(v),
                _ => None,
            };
            if !self.feed.push(frame, params)? {
                return Ok(false);
            }
        }
    }
}

/// Turns frames into timestamped buffers for the frame source.
struct Feed {
    camera: String,
    frames: FrameSrc,
    codec: Codec,
    timeline: Timeline,
    started: bool,
    lost_packets: u64,
}

impl Feed {
    fn new(camera: String, frames: FrameSrc, codec: Codec, clock_rate: u32) -> Feed {
        Feed {
            camera,
            frames,
            codec,
            timeline: Timeline::new(NonZeroU32::new(clock_rate).map_or(90_000, |r| r.get())),
            started: false,
            lost_packets: 0,
        }
    }

    /// Pushes one frame; `Ok(false)` once the pipeline takes no more (EOS,
    /// stopping), `Err` when the session must end.
    fn push(
        &mut self,
        frame: VideoFrame,
        params: Option<&VideoParameters>,
    ) -> Result<bool, String> {
        if frame.loss() > 0 {
            self.lost_packets += u64::from(frame.loss());
            tracing::warn!(camera = %self.camera, lost = frame.loss(), lost_total = self.lost_packets,
                "RTP packets lost; frames up to the next keyframe may show damage");
        }
        let keyframe = match self.codec {
            Codec::H264 => frame.is_random_access_point(),
            Codec::H265 => h265_irap(frame.data()),
        };
        if !self.started {
            if !keyframe {
                return Ok(true);
            }
            let params = params.ok_or("the camera sent a keyframe without parameter sets")?;
            if self.frames.start(&self.codec.caps(params)).is_err() {
                return Ok(false); // the pipeline is stopping
            }
            self.started = true;
        } else if frame.has_new_parameters() {
            // One MP4 track has one sample description: close the segment
            // cleanly; the supervisor restarts the source at once.
            tracing::info!(camera = %self.camera, "the camera changed its video parameters; closing the segment and starting anew");
            self.frames.end_of_stream();
            return Ok(false);
        }
        let arrival = self
            .frames
            .current_running_time()
            .map_or(0, gst::ClockTime::nseconds);
        let placed = self
            .timeline
            .place(frame.timestamp().timestamp(), arrival, keyframe);
        let mut buffer = gst::Buffer::from_mut_slice(frame.into_data());
        {
            let b = buffer.get_mut().ok_or("a new buffer is not writable")?;
            b.set_pts(gst::ClockTime::from_nseconds(placed.pts_ns));
            let mut flags = gst::BufferFlags::empty();
            if !keyframe {
                flags |= gst::BufferFlags::DELTA_UNIT;
            }
            if placed.discont {
                flags |= gst::BufferFlags::DISCONT;
            }
            b.set_flags(flags);
        }
        match self.frames.push(buffer) {
            Ok(_) => Ok(true),
            Err(gst::FlowError::Flushing | gst::FlowError::Eos) => Ok(false),
            Err(e) => Err(format!("the pipeline refused a frame: {e:?}")),
        }
    }
}

/// True if an H.265 access unit (4-byte length-prefixed NAL units) is an
/// intra random access point — IDR, CRA or BLA (NAL types 16–23) — as
/// `h265parse` marks keyframes. (retina counts IDR only, and cameras with
/// open GOPs send CRA.)
fn h265_irap(mut au: &[u8]) -> bool {
    while au.len() >= 6 {
        let len = u32::from_be_bytes([au[0], au[1], au[2], au[3]]) as usize;
        let nal_type = (au[4] >> 1) & 0x3f;
        if (16..=23).contains(&nal_type) {
            return true;
        }
        if nal_type < 32 {
            return false; // another picture's slice
        }
        au = au.get(4 + len..).unwrap_or_default();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nal(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut v = ((body.len() + 2) as u32).to_be_bytes().to_vec();
        v.extend([kind << 1, 1]);
        v.extend(body);
        v
    }

    #[test]
    fn h265_keyframes_are_irap_pictures() {
        let vps_sps_pps = [nal(32, b"v"), nal(33, b"s"), nal(34, b"p")].concat();
        for (kind, irap) in [
            (19, true),
            (20, true),
            (21, true),
            (16, true),
            (1, false),
            (0, false),
        ] {
            let au = [vps_sps_pps.clone(), nal(kind, b"slice")].concat();
            assert_eq!(h265_irap(&au), irap, "NAL type {kind}");
        }
        assert!(!h265_irap(&nal(39, b"sei")), "no picture");
        assert!(!h265_irap(&[0, 0, 0, 9, 42]), "truncated");
    }

    #[test]
    fn credentials_leave_the_url() {
        let (url, creds) =
            split_credentials("rtsp://ad%40min:p%3Ass@cam.example:554/live?x=1").expect("parses");
        assert_eq!(url.as_str(), "rtsp://cam.example:554/live?x=1");
        let creds = creds.expect("credentials");
        assert_eq!(creds.username, "ad@min");
        assert_eq!(creds.password, "p:ss");
        let (url, creds) = split_credentials("rtsp://cam/live").expect("parses");
        assert_eq!(url.as_str(), "rtsp://cam/live");
        assert!(creds.is_none());
    }

    #[test]
    fn a_bad_url_is_reported_without_its_password() {
        let err = split_credentials("rtsp://u:secret@[bad/x").expect_err("bad host");
        assert!(!err.contains("secret"), "{err}");
    }
}
