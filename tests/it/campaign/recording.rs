//! Scenarios "recording" and "sealing": an agent recording three test
//! cameras in 2 s segments, killed with SIGKILL and restarted on the same
//! data directory again and again (a fresh one every few kills).
//!
//! "recording" kills at an instant uniform over two segments' time after
//! recording resumed; "sealing" kills inside a rotation of the first
//! camera: at an instant uniform over twice the time a seal takes on this
//! machine (measured first), from the moment the next segment's file
//! appears — the previous one is then being finished, fsynced, given its
//! manifest and renamed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::checks::*;
use super::{sleep_until, Campaign};
use crate::harness::*;

const CAMERAS: [&str; 3] = ["cam-a", "cam-b", "cam-c"];
const SEGMENT_S: u32 = 2;
/// Kills on one data directory before the next point starts a fresh one.
const PER_HOME: usize = 10;

fn recording_home() -> Home {
    let home = Home::new();
    let cams: String = CAMERAS.iter().map(|c| test_camera(c, "cctv", "")).collect();
    home.config_with(SEGMENT_S, "min_free_mb = 1", &cams);
    home
}

/// When a point's kill falls, decided while the agent runs.
struct Timing {
    instant: Duration,
    anchor: &'static str,
    /// Where in its window (0..1).
    at: f64,
    /// For a kill in a rotation: the previous segment's unfinished file.
    sealing: Option<PathBuf>,
}

/// The unfinished segment files of a camera, by name.
fn partials(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".partial"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Waits (polling every millisecond) for the next rotation of the camera
/// in `dir`: a segment file newer than every one open now appears. Returns
/// that instant and the previous segment's file, now being sealed.
fn next_rotation(dir: &Path) -> Option<(Instant, PathBuf)> {
    if !wait_until(RECORDING, || !partials(dir).is_empty()) {
        return None;
    }
    let newest = partials(dir).last()?.clone();
    wait_fine(RECORDING, || {
        partials(dir).last().is_some_and(|n| *n > newest)
    })
    .then(|| (Instant::now(), dir.join(&newest)))
}

/// How long a seal takes here: from the next file's appearance to the
/// previous file's rename, the median of three rotations.
fn measure_seal(dir: &Path) -> Duration {
    let mut took: Vec<Duration> = (0..3)
        .map(|_| {
            let (t, old) = next_rotation(dir).expect("the camera rotates its segments");
            // Polled every millisecond: a seal takes a few.
            assert!(
                wait_fine(RECORDING, || !old.exists()),
                "{} is sealed",
                old.display()
            );
            t.elapsed()
        })
        .collect();
    took.sort();
    took[1]
}

fn run(mut camp: Campaign, mut timing: impl FnMut(&mut Campaign, &Home) -> Option<Timing>) {
    let mut cuts = Cuts::default();
    let (mut in_seal, mut rotations) = (0, 0);
    'homes: while camp.more() {
        let home = recording_home();
        let (mut agent, _, mut since) = match start_recording(&home, &CAMERAS) {
            Ok(started) => started,
            Err(e) => {
                camp.fail(e);
                break;
            }
        };
        for _ in 0..PER_HOME {
            if !camp.more() {
                break;
            }
            let Some(t) = timing(&mut camp, &home) else {
                camp.fail(format!("no rotation came:\n{}", log_tail(&home)));
                break 'homes;
            };
            let label = camp.label(t.instant, t.anchor);
            kill_9(&mut agent);
            if let Some(old) = &t.sealing {
                rotations += 1;
                in_seal += usize::from(old.exists());
            }
            let problems = after_kill(&home, since, &[], &mut cuts);
            since = SystemTime::now() - Duration::from_secs(1);
            let (again, recovered) = restart(&home, &CAMERAS);
            agent = again;
            camp.point(&label, t.at, merge(problems, recovered));
        }
        for p in stop_and_verify(agent, &home) {
            camp.fail(p);
        }
    }
    camp.note(cuts.note());
    if rotations > 0 {
        camp.note(format!(
            "{in_seal} of {rotations} kills before the sealed segment's rename"
        ));
    }
    camp.finish();
}

#[test]
fn kill_9_while_recording_several_cameras() {
    let camp = Campaign::new("recording");
    let window = Duration::from_secs(2 * u64::from(SEGMENT_S));
    run(camp, |camp, _| {
        let anchor = Instant::now();
        let instant = camp.rng.within(window);
        sleep_until(anchor, instant);
        Some(Timing {
            instant,
            anchor: "recording resumed",
            at: instant.as_secs_f64() / window.as_secs_f64(),
            sealing: None,
        })
    });
}

#[test]
fn kill_9_inside_a_segment_seal() {
    let mut window: Option<Duration> = None;
    run(Campaign::new("sealing"), |camp, home| {
        let dir = home.camera_dir(CAMERAS[0]);
        let what = "from the next segment's file appearing";
        let (w, _) = camp.window(&mut window, what, || {
            // Twice the seal, at least 20 ms: instants before and after
            // each step of it.
            (2 * measure_seal(&dir)).max(Duration::from_millis(20))
        });
        let (anchor, old) = next_rotation(&dir)?;
        let instant = camp.rng.within(w);
        sleep_until(anchor, instant);
        Some(Timing {
            instant,
            anchor: "the next segment's file appeared",
            at: instant.as_secs_f64() / w.as_secs_f64(),
            sealing: Some(old),
        })
    });
}
