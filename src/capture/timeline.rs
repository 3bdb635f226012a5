//! A camera's RTP clock mapped onto the pipeline's running time.
//!
//! The RTSP client hands over each frame with its RTP timestamp, already
//! extended past the 32-bit wrap by the client (`retina::Timestamp`), and the
//! running time at which it arrived. [`Timeline::place`] gives the frame's
//! presentation time (PTS, nanoseconds of running time):
//!
//! - The first frame is placed at its arrival; every later one at the first's
//!   PTS plus the camera-clock time between them. Frame spacing, and so every
//!   duration in a segment, is the camera's own.
//! - The camera's crystal is not the agent's: at 100 ppm a day drifts by
//!   8.6 s, and segment start and end instants (taken from running time) would
//!   drift with it. At every keyframe the placement is slewed by at most
//!   [`MAX_SLEW_NS`] towards the smoothed arrival lag, which follows a drift
//!   of up to 500 ppm at a 2 s GOP while changing no frame's duration by more
//!   than a millisecond.
//! - A jump in the camera's clock (more than [`MAX_BACKWARDS_NS`] back — B
//!   frames step back less — or more than [`MAX_FORWARD_NS`] ahead) re-anchors
//!   the timeline one frame interval after the latest PTS so far, with
//!   `discont` set: PTS never go back past what was already recorded.
//!
//! Invariant: the PTS of a frame is never earlier than the latest PTS placed
//! before it minus [`MAX_BACKWARDS_NS`], and never negative.

/// Largest step back a frame's RTP time may take without re-anchoring
/// (presentation order differs from arrival order by a few B frames).
pub const MAX_BACKWARDS_NS: i64 = 1_000_000_000;
/// Largest step ahead accepted as the same timeline (a camera that skipped
/// frames); beyond it the camera's clock is taken to have jumped.
pub const MAX_FORWARD_NS: i64 = 10_000_000_000;
/// Largest correction towards the arrival lag at one keyframe.
pub const MAX_SLEW_NS: i64 = 1_000_000;
/// Frame interval assumed until two frames were seen.
const DEFAULT_STEP_NS: i64 = 40_000_000;

/// Where a frame goes on the running-time axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    pub pts_ns: u64,
    /// The timeline was (re-)anchored at this frame.
    pub discont: bool,
}

/// One RTSP session's mapping of RTP time to running time.
#[derive(Debug)]
pub struct Timeline {
    clock_rate: i64,
    /// RTP ticks and PTS of the anchor frame.
    anchor: Option<(i64, i64)>,
    /// Correction applied on top of the anchor, ns.
    slew: i64,
    /// Smoothed (arrival − PTS), ns.
    lag: i64,
    latest: i64,
    step: i64,
}

impl Timeline {
    /// A timeline for an RTP clock of `clock_rate` Hz (90 000 for video).
    pub fn new(clock_rate: u32) -> Timeline {
        Timeline {
            clock_rate: i64::from(clock_rate.max(1)),
            anchor: None,
            slew: 0,
            lag: 0,
            latest: 0,
            step: DEFAULT_STEP_NS,
        }
    }

    /// Places a frame with extended RTP timestamp `ticks`, which arrived at
    /// running time `arrival_ns`; `keyframe` frames may carry a slew step.
    pub fn place(&mut self, ticks: i64, arrival_ns: u64, keyframe: bool) -> Placed {
        let arrival = i64::try_from(arrival_ns).unwrap_or(i64::MAX);
        let Some((anchor_ticks, anchor_pts)) = self.anchor else {
            return self.reanchor(ticks, arrival);
        };
        let since = (i128::from(ticks - anchor_ticks) * 1_000_000_000 / i128::from(self.clock_rate))
            .clamp(i128::from(i64::MIN / 4), i128::from(i64::MAX / 4)) as i64;
        let pts = anchor_pts + since + self.slew;
        if pts < self.latest - MAX_BACKWARDS_NS || pts > self.latest + MAX_FORWARD_NS {
            let at = self.latest + self.step;
            return self.reanchor(ticks, at);
        }
        if pts > self.latest {
            self.step = (pts - self.latest).min(MAX_BACKWARDS_NS);
            self.latest = pts;
        }
        self.lag += (arrival - pts - self.lag) / 16;
        if keyframe {
            let s = self.lag.clamp(-MAX_SLEW_NS, MAX_SLEW_NS);
            self.slew += s;
            self.lag -= s;
        }
        Placed {
            pts_ns: pts.max(0) as u64,
            discont: false,
        }
    }

    fn reanchor(&mut self, ticks: i64, at: i64) -> Placed {
        let at = at.max(0);
        self.anchor = Some((ticks, at));
        self.slew = 0;
        self.lag = 0;
        self.latest = self.latest.max(at);
        Placed {
            pts_ns: at as u64,
            discont: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn first_frame_at_arrival_then_camera_spacing() {
        let mut t = Timeline::new(90_000);
        let p = t.place(1_000, 500 * MS, true);
        assert_eq!(
            p,
            Placed {
                pts_ns: 500 * MS,
                discont: true
            }
        );
        // Arrival jitter does not move frames: 3600 ticks = 40 ms apart.
        for (i, arrival) in [(1, 560), (2, 570), (3, 640)] {
            let p = t.place(1_000 + 3_600 * i, arrival * MS, false);
            assert_eq!(p.pts_ns, 500 * MS + 40 * MS * i as u64);
            assert!(!p.discont);
        }
    }

    #[test]
    fn rtp_time_past_the_32_bit_wrap_stays_monotonic() {
        // retina extends the 32-bit RTP time; the timeline must accept values
        // on both sides of 2^32 as one clock.
        let mut t = Timeline::new(90_000);
        let start = (1i64 << 32) - 3_600 * 2;
        let mut last = 0;
        for i in 0..5 {
            let p = t.place(start + 3_600 * i, 40 * MS * i as u64, false);
            assert!(!p.discont || i == 0);
            assert!(p.pts_ns >= last);
            last = p.pts_ns;
        }
        assert_eq!(last, 160 * MS);
    }

    #[test]
    fn b_frames_step_back_without_reanchoring() {
        let mut t = Timeline::new(90_000);
        t.place(0, 0, true);
        let p = t.place(3 * 3_600, 40 * MS, false); // P, shown 3rd
        assert_eq!(p.pts_ns, 120 * MS);
        let b = t.place(3_600, 80 * MS, false); // B, shown 1st
        assert_eq!((b.pts_ns, b.discont), (40 * MS, false));
    }

    #[test]
    fn a_clock_jump_reanchors_after_the_latest_frame() {
        let mut t = Timeline::new(90_000);
        t.place(0, 0, true);
        t.place(3_600, 40 * MS, false);
        // Camera clock jumps back 1 hour (reboot behind the same session).
        let p = t.place(-90_000 * 3600, 80 * MS, true);
        assert_eq!(
            p,
            Placed {
                pts_ns: 80 * MS,
                discont: true
            }
        );
        let p = t.place(-90_000 * 3600 + 3_600, 120 * MS, false);
        assert_eq!(p.pts_ns, 120 * MS);
        // And forward by a day.
        let p = t.place(90_000 * 86_400, 160 * MS, true);
        assert_eq!(
            p,
            Placed {
                pts_ns: 160 * MS,
                discont: true
            }
        );
    }

    #[test]
    fn drift_is_followed_in_bounded_steps() {
        // Camera clock 200 ppm slow: a frame it stamps 40 ms apart arrives
        // 40.008 ms apart. After an hour the placement follows arrival
        // within a frame, and no step differs from 40 ms by more than the slew.
        let mut t = Timeline::new(90_000);
        let mut prev: Option<u64> = None;
        let mut last = Placed {
            pts_ns: 0,
            discont: false,
        };
        let frames = 25 * 3600;
        for i in 0..frames {
            let arrival = (i as f64 * 40.008e6) as u64;
            last = t.place(3_600 * i, arrival, i % 50 == 0);
            if let Some(p) = prev {
                let d = last.pts_ns as i64 - p as i64;
                assert!((d - 40_000_000).abs() <= MAX_SLEW_NS, "step {d} at {i}");
            }
            prev = Some(last.pts_ns);
        }
        let arrival = ((frames - 1) as f64 * 40.008e6) as i64;
        let off = arrival - last.pts_ns as i64;
        assert!(off.abs() < 40_000_000, "{off} ns behind after an hour");
    }
}
