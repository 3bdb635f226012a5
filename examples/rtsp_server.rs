//! A stand-alone RTSP server for benchmarks and manual tries.
//!
//! ```text
//! cargo run --example rtsp_server -- --port 8554 --codec h264 \
//!     --width 1920 --height 1080 --fps 25 [--file PATH]
//! ```
//!
//! Without `--file` it serves a live test pattern encoded by the server
//! (`videotestsrc ! x264enc/x265enc`, 1 s GOP). With `--file` it serves a
//! pre-encoded H.264 (or H.265) MP4/MKV/… file in an endless loop without
//! re-encoding, so the server costs almost no CPU while a client is measured.
//!
//! How the file loops: the media is `appsrc ! rtph264pay`. A feeder thread per
//! media reads the file with `filesrc ! parsebin ! appsink` (no decoding),
//! rewrites each access unit's timestamps onto the pipeline's running time,
//! paces the pushes in real time, and on EOS opens the file again, continuing
//! the timestamps where the previous pass ended. The RTSP stream itself never
//! sees an EOS, a seek or a flush.
//!
//! The stream is at `rtsp://ADDRESS:PORT/cam`; the server runs until killed
//! (Ctrl-C).

// Test and measurement code: a panic here is a failed run with its reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use gstreamer as gst;
use gstreamer_app as gst_app;
use gstreamer_rtsp_server as gst_rtsp_server;

use gst::glib;
use gst::prelude::*;
use gst_rtsp_server::prelude::*;

/// Encoding of the generated test stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Codec {
    H264,
    H265,
}

/// Serve a live RTSP stream (test pattern or a looped file) for sargs.
#[derive(Debug, Parser)]
#[command(name = "rtsp_server")]
struct Args {
    /// TCP port to listen on.
    #[arg(long, default_value_t = 8554)]
    port: u16,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    address: String,
    /// Mount path of the stream.
    #[arg(long, default_value = "/cam")]
    mount: String,
    /// Codec of the generated test pattern (ignored with --file: the file's
    /// own codec is served).
    #[arg(long, value_enum, default_value_t = Codec::H264)]
    codec: Codec,
    /// Width of the generated test pattern.
    #[arg(long, default_value_t = 1920)]
    width: u32,
    /// Height of the generated test pattern.
    #[arg(long, default_value_t = 1080)]
    height: u32,
    /// Frame rate of the generated test pattern (the GOP is one second).
    #[arg(long, default_value_t = 25)]
    fps: u32,
    /// Serve this pre-encoded H.264/H.265 file (MP4, MKV, …) in a loop,
    /// without re-encoding.
    #[arg(long)]
    file: Option<PathBuf>,
}

/// How long the reader may go without producing a sample.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Re-anchor the output timestamps when they drift this far from the clock
/// (e.g. after the media was paused or the feeder was held back).
const MAX_DRIFT: Duration = Duration::from_secs(1);
/// Frame duration assumed when the file gives none.
const DEFAULT_FRAME: Duration = Duration::from_millis(40);

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("rtsp_server: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    gst::init().map_err(|err| format!("GStreamer init failed: {err}"))?;
    if !args.mount.starts_with('/') {
        return Err(format!("--mount must start with '/': {}", args.mount));
    }
    if args.width == 0 || args.height == 0 || args.fps == 0 {
        return Err("--width, --height and --fps must be positive".into());
    }

    let server = gst_rtsp_server::RTSPServer::new();
    server.set_address(&args.address);
    server.set_service(&args.port.to_string());
    let mounts = server
        .mount_points()
        .ok_or("the RTSP server has no mount points")?;
    let factory = gst_rtsp_server::RTSPMediaFactory::new();
    factory.set_shared(true);
    // Bind RTP/RTCP UDP ports to the same address as RTSP (without a pool the
    // server binds them to every interface).
    let udp = gst_rtsp_server::RTSPAddressPool::new();
    match udp.add_range(&args.address, &args.address, 20000, 59999, 0) {
        Ok(()) => factory.set_address_pool(Some(&udp)),
        Err(err) => eprintln!(
            "rtsp_server: UDP ports bind to all interfaces ({} is not an IP address: {err})",
            args.address
        ),
    }

    let what = match &args.file {
        None => {
            let (enc, pay) = match args.codec {
                Codec::H264 => ("x264enc", "rtph264pay"),
                Codec::H265 => ("x265enc", "rtph265pay"),
            };
            require_elements(&["videotestsrc", enc, pay])?;
            factory.set_launch(&format!(
                "( videotestsrc is-live=true \
                 ! video/x-raw,format=I420,width={w},height={h},framerate={fps}/1 \
                 ! {enc} tune=zerolatency speed-preset=ultrafast key-int-max={fps} \
                 ! {pay} name=pay0 pt=96 config-interval=1 )",
                w = args.width,
                h = args.height,
                fps = args.fps,
            ));
            format!(
                "live {:?} test pattern {}x{} @ {} fps",
                args.codec, args.width, args.height, args.fps
            )
        }
        Some(path) => {
            require_elements(&["filesrc", "parsebin", "appsrc", "appsink"])?;
            let caps = probe_file(path)?;
            let pay = payloader_for(&caps)?;
            require_elements(&[pay])?;
            factory.set_launch(&format!(
                "( appsrc name=src is-live=true format=time do-timestamp=false block=true \
                   max-bytes=0 max-buffers=0 max-time=500000000 \
                 ! {pay} name=pay0 pt=96 config-interval=1 )"
            ));
            let what = format!("{} in a loop", path.display());
            let path = path.clone();
            factory.connect_media_configure(move |_, media| {
                if let Err(err) = start_feeder(media, &path, &caps) {
                    eprintln!("rtsp_server: cannot feed the media: {err}");
                }
            });
            what
        }
    };
    mounts.add_factory(&args.mount, factory);

    let main_loop = glib::MainLoop::new(None, false);
    server
        .attach(None)
        .map_err(|err| format!("cannot listen on {}:{}: {err}", args.address, args.port))?;
    let host = if args.address.contains(':') {
        format!("[{}]", args.address)
    } else {
        args.address.clone()
    };
    println!("rtsp://{host}:{}{}", args.port, args.mount);
    eprintln!("rtsp_server: serving {what}; Ctrl-C to stop");
    main_loop.run();
    Ok(())
}

fn require_elements(names: &[&str]) -> Result<(), String> {
    for name in names {
        if gst::ElementFactory::find(name).is_none() {
            return Err(format!("GStreamer element {name} is missing"));
        }
    }
    Ok(())
}

fn payloader_for(caps: &gst::Caps) -> Result<&'static str, String> {
    match caps.structure(0).map(|s| s.name().as_str()) {
        Some("video/x-h264") => Ok("rtph264pay"),
        Some("video/x-h265") => Ok("rtph265pay"),
        _ => Err(format!("unsupported stream caps {caps}")),
    }
}

/// Caps the reader's appsink accepts: whole access units, length-prefixed.
fn reader_caps() -> gst::Caps {
    gst::Caps::builder_full()
        .structure(
            gst::Structure::builder("video/x-h264")
                .field("stream-format", "avc")
                .field("alignment", "au")
                .build(),
        )
        .structure(
            gst::Structure::builder("video/x-h265")
                .field("stream-format", "hvc1")
                .field("alignment", "au")
                .build(),
        )
        .build()
}

/// `filesrc ! parsebin ! appsink` over `path`: the compressed video, parsed
/// but not decoded. Other streams (audio, …) go to fakesinks.
struct Reader {
    pipeline: gst::Pipeline,
    sink: gst_app::AppSink,
}

impl Reader {
    fn open(path: &Path) -> Result<Reader, String> {
        let location = path
            .to_str()
            .ok_or_else(|| format!("path is not UTF-8: {}", path.display()))?;
        let pipeline = gst::Pipeline::new();
        let src = gst::ElementFactory::make("filesrc")
            .property("location", location)
            .build()
            .map_err(|err| format!("filesrc: {err}"))?;
        let parse = gst::ElementFactory::make("parsebin")
            .build()
            .map_err(|err| format!("parsebin: {err}"))?;
        let sink = gst_app::AppSink::builder()
            .caps(&reader_caps())
            .sync(false)
            .max_buffers(8)
            .enable_last_sample(false)
            .build();
        pipeline
            .add_many([&src, &parse, sink.upcast_ref()])
            .map_err(|err| format!("reader: {err}"))?;
        src.link(&parse)
            .map_err(|err| format!("reader link: {err}"))?;

        let sink_weak = sink.downgrade();
        let pipeline_weak = pipeline.downgrade();
        parse.connect_pad_added(move |_, pad| {
            let (Some(sink), Some(pipeline)) = (sink_weak.upgrade(), pipeline_weak.upgrade())
            else {
                return;
            };
            let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
            let is_video = caps
                .structure(0)
                .is_some_and(|s| matches!(s.name().as_str(), "video/x-h264" | "video/x-h265"));
            if let Some(sink_pad) = sink.static_pad("sink") {
                if is_video && !sink_pad.is_linked() && pad.link(&sink_pad).is_ok() {
                    return;
                }
            }
            // Not the (first) video stream: swallow it.
            let Ok(fakesink) = gst::ElementFactory::make("fakesink")
                .property("sync", false)
                .property("async", false)
                .build()
            else {
                return;
            };
            if pipeline.add(&fakesink).is_ok() {
                let _ = fakesink.sync_state_with_parent();
                if let Some(fake_pad) = fakesink.static_pad("sink") {
                    let _ = pad.link(&fake_pad);
                }
            }
        });

        pipeline
            .set_state(gst::State::Playing)
            .map_err(|err| format!("cannot start reading {}: {err}", path.display()))?;
        Ok(Reader { pipeline, sink })
    }

    /// The next access unit, `Ok(None)` at the end of the file.
    fn next(&self) -> Result<Option<gst::Sample>, String> {
        let deadline = Instant::now() + READ_TIMEOUT;
        loop {
            if let Some(bus) = self.pipeline.bus() {
                if let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
                    if let gst::MessageView::Error(err) = msg.view() {
                        return Err(format!(
                            "reading failed: {} ({:?})",
                            err.error(),
                            err.debug()
                        ));
                    }
                }
            }
            if let Some(sample) = self
                .sink
                .try_pull_sample(gst::ClockTime::from_mseconds(100))
            {
                return Ok(Some(sample));
            }
            if self.sink.is_eos() {
                return Ok(None);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no video from the file within {READ_TIMEOUT:?} (not H.264/H.265?)"
                ));
            }
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// Checks the file has H.264/H.265 video and returns its caps.
fn probe_file(path: &Path) -> Result<gst::Caps, String> {
    std::fs::File::open(path).map_err(|err| format!("cannot open {}: {err}", path.display()))?;
    let reader = Reader::open(path)?;
    let sample = reader
        .next()?
        .ok_or_else(|| format!("{} has no H.264/H.265 video", path.display()))?;
    sample
        .caps_owned()
        .ok_or_else(|| format!("{}: video without caps", path.display()))
}

/// Starts the thread that feeds `media`'s appsrc until the media is unprepared.
fn start_feeder(
    media: &gst_rtsp_server::RTSPMedia,
    path: &Path,
    caps: &gst::Caps,
) -> Result<(), String> {
    let bin = media
        .element()
        .downcast::<gst::Bin>()
        .map_err(|_| "the media element is not a bin")?;
    let appsrc = bin
        .by_name("src")
        .ok_or("no appsrc named src in the media")?
        .downcast::<gst_app::AppSrc>()
        .map_err(|_| "element src is not an appsrc")?;
    appsrc.set_caps(Some(caps));

    let stop = Arc::new(AtomicBool::new(false));
    let stop_on_unprepare = stop.clone();
    media.connect_unprepared(move |_| stop_on_unprepare.store(true, Ordering::SeqCst));

    let path = path.to_path_buf();
    let caps = caps.clone();
    std::thread::Builder::new()
        .name("rtsp-file-feeder".into())
        .spawn(move || {
            let mut feeder = Feeder::new(appsrc, caps, stop);
            if let Err(err) = feeder.run(&path) {
                eprintln!("rtsp_server: file feeder stopped: {err}");
            }
        })
        .map_err(|err| format!("cannot spawn the feeder thread: {err}"))?;
    Ok(())
}

/// Where the output timeline is pinned to the clock.
#[derive(Clone, Copy)]
struct Anchor {
    /// Wall-clock instant at which `position` is due.
    instant: Instant,
    /// Output timestamp (pipeline running time) of `position`.
    running_time: u64,
    /// Position in the endless looped timeline, in ns.
    position: u64,
}

struct Feeder {
    appsrc: gst_app::AppSrc,
    caps: gst::Caps,
    stop: Arc<AtomicBool>,
    anchor: Option<Anchor>,
}

impl Feeder {
    fn new(appsrc: gst_app::AppSrc, caps: gst::Caps, stop: Arc<AtomicBool>) -> Feeder {
        Feeder {
            appsrc,
            caps,
            stop,
            anchor: None,
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Plays the file again and again, each pass continuing the timeline.
    fn run(&mut self, path: &Path) -> Result<(), String> {
        // Position (ns, looped timeline) at which the current pass starts.
        let mut pass_start: u64 = 0;
        let mut pass = 0u64;
        while !self.stopped() {
            pass += 1;
            let reader = Reader::open(path)?;
            // Timestamp of the first access unit of the pass in the file.
            let mut first: Option<u64> = None;
            let mut pass_end = pass_start;
            let mut prev_ts: Option<u64> = None;
            let mut frame = DEFAULT_FRAME.as_nanos() as u64;
            let mut samples = 0u64;
            while !self.stopped() {
                let Some(sample) = reader.next()? else { break };
                let Some(buffer) = sample.buffer_owned() else {
                    continue;
                };
                if let Some(caps) = sample.caps() {
                    if *caps != self.caps {
                        self.caps = caps.to_owned();
                        self.appsrc.set_caps(Some(&self.caps));
                    }
                }
                // Decode order drives the timeline; PTS keeps its offset.
                let has_dts = buffer.dts().is_some();
                let Some(ts) = buffer.dts().or(buffer.pts()).map(|t| t.nseconds()) else {
                    continue;
                };
                let pts_offset = buffer
                    .pts()
                    .map(|p| p.nseconds().saturating_sub(ts))
                    .unwrap_or(0);
                let first_ts = *first.get_or_insert(ts);
                if let Some(prev) = prev_ts {
                    if ts > prev {
                        frame = ts - prev;
                    }
                }
                prev_ts = Some(ts);
                let duration = buffer.duration().map(|d| d.nseconds()).unwrap_or(frame);
                let position = pass_start + ts.saturating_sub(first_ts);
                pass_end = pass_end.max(position + duration);

                let Some(running_time) = self.pace(position) else {
                    return Ok(());
                };
                let mut buffer = buffer;
                {
                    let buffer = buffer.make_mut();
                    buffer.set_dts(has_dts.then(|| gst::ClockTime::from_nseconds(running_time)));
                    buffer.set_pts(gst::ClockTime::from_nseconds(running_time + pts_offset));
                    if samples == 0 && pass > 1 {
                        buffer.set_flags(gst::BufferFlags::DISCONT);
                    }
                }
                samples += 1;
                if self.appsrc.push_buffer(buffer).is_err() {
                    // Flushing: the media is shutting down.
                    return Ok(());
                }
            }
            if samples == 0 {
                return Err(format!("{} gave no video", path.display()));
            }
            eprintln!(
                "rtsp_server: pass {pass} done ({samples} frames, {:.1} s)",
                (pass_end - pass_start) as f64 / 1e9
            );
            pass_start = pass_end;
        }
        Ok(())
    }

    /// Waits until `position` is due and returns its output timestamp, or
    /// `None` when the media stopped meanwhile.
    fn pace(&mut self, position: u64) -> Option<u64> {
        // The media must run (PLAYING, with a base time) to map onto its clock.
        let now_rt = loop {
            if self.stopped() {
                return None;
            }
            match self.appsrc.current_running_time() {
                Some(rt) if self.appsrc.current_state() == gst::State::Playing => {
                    break rt.nseconds()
                }
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        // Signed: without DTS, B-frames come before the anchor's position.
        let offset_from = |anchor: &Anchor| position as i128 - anchor.position as i128;
        let anchor = self
            .anchor
            .filter(|anchor| {
                let out = anchor.running_time as i128 + offset_from(anchor);
                out >= 0 && out.abs_diff(now_rt as i128) <= MAX_DRIFT.as_nanos()
            })
            // None yet, or the media was paused or the feeder held back
            // meanwhile: pin the timeline to now again (no burst, no gap).
            .unwrap_or(Anchor {
                instant: Instant::now(),
                running_time: now_rt,
                position,
            });
        self.anchor = Some(anchor);

        let offset = offset_from(&anchor);
        if let Ok(ahead) = u64::try_from(offset) {
            let due = anchor.instant + Duration::from_nanos(ahead);
            loop {
                if self.stopped() {
                    return None;
                }
                let now = Instant::now();
                if now >= due {
                    break;
                }
                std::thread::sleep((due - now).min(Duration::from_millis(100)));
            }
        }
        // Non-negative: checked when the anchor was kept, zero when it was set.
        let out = (anchor.running_time as i128 + offset).max(0);
        Some(u64::try_from(out).unwrap_or(0))
    }
}
