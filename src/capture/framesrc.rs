//! `FrameSrc`: the element through which the RTSP client's frames enter the
//! pipeline, pushed on the client's own thread.
//!
//! Why not `appsrc`: `appsrc` queues every buffer and pushes it downstream
//! from a streaming thread of its own, so each batch of frames costs a
//! hand-off and a wake-up of that thread, which took ≈ 10 % of a passthrough
//! camera's CPU; without it the camera costs ≈ 2 % less, the push itself
//! having moved to the client's thread (docs/BENCHMARKS.md §2, "Frames pushed
//! on the client's thread"). This element has neither queue nor thread:
//! [`FrameSrc::push`] runs the downstream chain on the caller's thread, up to
//! the segmenter's own queue. Where a cushion is wanted the pipeline puts a
//! `queue` behind it (see [`super::pipeline`]): over UDP, whose socket buffer
//! holds well under a second of video while the reader waits on a slow disk,
//! and on the transcode path, whose decoder and encoder must not run on the
//! reader's thread.
//!
//! It behaves as a live source: no preroll (PAUSED answers `NO_PREROLL`), the
//! latency query answers live with no latency of its own, it sends
//! stream-start as it starts and the caps and a TIME segment from 0 before
//! the first buffer (buffers carry running-time PTS), and an EOS sent to it
//! (the pipeline's, at shutdown) leaves its pad from GStreamer's thread pool,
//! so the sender never waits on a push blocked downstream — as a base source
//! does from its streaming thread.
//!
//! Invariant: its pad is active only between PAUSED and the way back to
//! READY, so a push before the pipeline runs or after it stops returns
//! `Flushing`, and a push blocked downstream (a full queue) returns once the
//! pipeline stops: the reader never hangs on a stopped pipeline.

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use gstreamer::subclass::prelude::*;

glib::wrapper! {
    /// See the module doc.
    pub struct FrameSrc(ObjectSubclass<imp::FrameSrc>) @extends gst::Element, gst::Object;
}

impl FrameSrc {
    pub fn new(name: &str) -> FrameSrc {
        glib::Object::builder().property("name", name).build()
    }

    /// Announces the stream's `caps` and segment. `Err(Flushing)` if the
    /// pipeline is not running.
    pub fn start(&self, caps: &gst::Caps) -> Result<(), gst::FlowError> {
        let pad = self.imp().pad();
        let events = [
            gst::event::Caps::new(caps),
            gst::event::Segment::new(&gst::FormattedSegment::<gst::ClockTime>::new()),
        ];
        for event in events {
            if !pad.push_event(event) {
                return Err(gst::FlowError::Flushing);
            }
        }
        Ok(())
    }

    /// Pushes one buffer downstream on this thread; blocks while downstream
    /// is full.
    pub fn push(&self, buffer: gst::Buffer) -> Result<gst::FlowSuccess, gst::FlowError> {
        self.imp().pad().push(buffer)
    }

    /// Ends the stream (EOS): the open segment is closed cleanly.
    pub fn end_of_stream(&self) {
        self.imp().pad().push_event(gst::event::Eos::new());
    }
}

mod imp {
    use super::*;
    use std::sync::LazyLock;

    pub struct FrameSrc {
        pad: gst::Pad,
    }

    impl FrameSrc {
        pub fn pad(&self) -> &gst::Pad {
            &self.pad
        }

        fn query(&self, pad: &gst::Pad, query: &mut gst::QueryRef) -> bool {
            match query.view_mut() {
                gst::QueryViewMut::Latency(q) => {
                    q.set(true, gst::ClockTime::ZERO, gst::ClockTime::NONE);
                    true
                }
                _ => gst::Pad::query_default(pad, Some(&*self.obj()), query),
            }
        }
    }

    #[glib::object_subclass]
    impl ObjectSubclass for FrameSrc {
        const NAME: &'static str = "SargsFrameSrc";
        type Type = super::FrameSrc;
        type ParentType = gst::Element;

        fn with_class(_klass: &Self::Class) -> Self {
            let pad = gst::Pad::builder(gst::PadDirection::Src)
                .name("src")
                .query_function(|pad, parent, query| {
                    FrameSrc::catch_panic_pad_function(parent, || false, |s| s.query(pad, query))
                })
                .build();
            FrameSrc { pad }
        }
    }

    impl ObjectImpl for FrameSrc {
        fn constructed(&self) {
            self.parent_constructed();
            let obj = self.obj();
            obj.set_element_flags(gst::ElementFlags::SOURCE);
            if let Err(e) = obj.add_pad(&self.pad) {
                // Only fails for a second pad of the same name: never here.
                tracing::error!("FrameSrc: cannot add its pad: {e}");
            }
        }
    }

    impl GstObjectImpl for FrameSrc {}

    impl ElementImpl for FrameSrc {
        fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
            static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
                gst::subclass::ElementMetadata::new(
                    "sargs frame source",
                    "Source/Video",
                    "Pushes the frames of sargs' RTSP client on the client's thread",
                    "sargs",
                )
            });
            Some(&METADATA)
        }

        fn send_event(&self, event: gst::Event) -> bool {
            if !event.is_downstream() {
                return self.parent_send_event(event);
            }
            self.obj().call_async(move |src| {
                src.imp().pad.push_event(event);
            });
            true
        }

        fn change_state(
            &self,
            transition: gst::StateChange,
        ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
            let done = self.parent_change_state(transition)?;
            if transition == gst::StateChange::ReadyToPaused {
                // The pad is active now; the event is kept until it is linked.
                let id = self.pad.create_stream_id(&*self.obj(), None::<&str>);
                self.pad.push_event(gst::event::StreamStart::new(&id));
            }
            Ok(match transition {
                gst::StateChange::ReadyToPaused | gst::StateChange::PlayingToPaused => {
                    gst::StateChangeSuccess::NoPreroll
                }
                _ => done,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gstreamer_app as gst_app;
    use std::time::{Duration, Instant};

    /// `FrameSrc ! appsink` holding at most one buffer, nobody pulling: the
    /// second push waits downstream.
    fn pipeline() -> (gst::Pipeline, FrameSrc, gst_app::AppSink) {
        gst::init().expect("gstreamer");
        let pipeline = gst::Pipeline::new();
        let src = FrameSrc::new("frames");
        let sink = gst_app::AppSink::builder()
            .sync(false)
            .max_buffers(1)
            .build();
        pipeline.add(&src).expect("add");
        pipeline.add(&sink).expect("add");
        src.link(&sink).expect("link");
        (pipeline, src, sink)
    }

    fn caps() -> gst::Caps {
        gst::Caps::builder("video/x-h264").build()
    }

    fn buffer(ms: u64) -> gst::Buffer {
        let mut b = gst::Buffer::from_slice([0u8; 16]);
        b.get_mut()
            .expect("new")
            .set_pts(gst::ClockTime::from_mseconds(ms));
        b
    }

    /// Plays the pipeline, fills the sink, and pushes one more buffer on a
    /// thread of its own, which waits there.
    fn blocked_push(
        pipeline: &gst::Pipeline,
        src: &FrameSrc,
    ) -> std::thread::JoinHandle<Result<gst::FlowSuccess, gst::FlowError>> {
        pipeline.set_state(gst::State::Playing).expect("playing");
        src.start(&caps()).expect("started");
        src.push(buffer(0)).expect("the sink holds one");
        let src = src.clone();
        let pusher = std::thread::spawn(move || src.push(buffer(40)));
        std::thread::sleep(Duration::from_millis(200));
        pusher
    }

    #[test]
    fn it_is_live_and_pushes_on_the_callers_thread() {
        let (pipeline, src, sink) = pipeline();
        assert_eq!(
            pipeline.set_state(gst::State::Paused),
            Ok(gst::StateChangeSuccess::NoPreroll),
            "a live source: PAUSED does not wait for data"
        );
        pipeline.set_state(gst::State::Playing).expect("playing");
        let mut q = gst::query::Latency::new();
        assert!(src.static_pad("src").expect("pad").query(&mut q));
        assert!(q.result().0, "answers the latency query as live");
        src.start(&caps()).expect("started");
        src.push(buffer(0)).expect("pushed");
        // The buffer is in the sink when push returns: no queue in between.
        let sample = sink
            .try_pull_sample(gst::ClockTime::ZERO)
            .expect("already downstream");
        assert_eq!(sample.caps().map(|c| c.to_owned()), Some(caps()));
        let _ = pipeline.set_state(gst::State::Null);
    }

    #[test]
    fn a_push_before_start_or_after_stop_is_refused_as_flushing() {
        let (pipeline, src, _sink) = pipeline();
        assert_eq!(src.start(&caps()), Err(gst::FlowError::Flushing));
        assert_eq!(src.push(buffer(0)), Err(gst::FlowError::Flushing));
        pipeline.set_state(gst::State::Playing).expect("playing");
        src.start(&caps()).expect("started");
        src.push(buffer(0)).expect("pushed");
        pipeline.set_state(gst::State::Null).expect("stopped");
        assert_eq!(src.push(buffer(40)), Err(gst::FlowError::Flushing));
    }

    #[test]
    fn a_push_blocked_downstream_returns_when_the_pipeline_stops() {
        let (pipeline, src, _sink) = pipeline();
        let pusher = blocked_push(&pipeline, &src);
        assert!(!pusher.is_finished(), "the second push waits for the sink");
        pipeline.set_state(gst::State::Null).expect("stopped");
        assert_eq!(
            pusher.join().expect("no panic"),
            Err(gst::FlowError::Flushing)
        );
    }

    #[test]
    fn the_pipelines_eos_reaches_the_sink_without_waiting_on_a_blocked_push() {
        let (pipeline, src, sink) = pipeline();
        let pusher = blocked_push(&pipeline, &src);
        // The sender returns at once although a push holds the stream.
        assert!(pipeline.send_event(gst::event::Eos::new()));
        // Draining the sink lets the blocked push through, then the EOS.
        let mut pulled = 0;
        let until = Instant::now() + Duration::from_secs(10);
        while !sink.is_eos() && Instant::now() < until {
            if sink
                .try_pull_sample(gst::ClockTime::from_mseconds(100))
                .is_some()
            {
                pulled += 1;
            }
        }
        assert!(sink.is_eos(), "EOS arrived");
        assert_eq!(pulled, 2, "both buffers, then EOS");
        assert_eq!(pusher.join().expect("no panic"), Ok(gst::FlowSuccess::Ok));
        assert_eq!(src.push(buffer(80)), Err(gst::FlowError::Eos));
        let _ = pipeline.set_state(gst::State::Null);
    }
}
