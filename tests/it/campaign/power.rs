//! Scenario "power": the real agent (`sargs run`, two test cameras in 2 s
//! segments, the retention sweep every second) with its data directory on
//! the power-loss disk (`support::faultfs` mounted with
//! `Disk::mount_power`, over a tmpfs), the power cut at random instants.
//! Before each cut a hold is placed (`sargs apply`) over the first records
//! of a burst of old records then sealed, the rest of which are past their
//! deadline: the cut falls, uniform over two segments' time from the
//! burst's end, while cameras record and seal, the sweep deletes and the
//! index commits.
//!
//! A cut: the disk stops keeping syncs and the agent is killed (SIGKILL)
//! at the same instant; the disk is unmounted and its backing directory
//! rewritten to what fsync made durable — everything else written is lost
//! (the model is `power`'s in `support::faultfs`) — then mounted again.
//! A kill -9 loses only what the process held; a power cut also loses
//! what the kernel held: a missing fsync of a file or of a directory
//! shows here.
//!
//! Invariant checked at every point: the same as after a kill -9
//! (`checks::after_kill`: `sargs verify` passes or names only the record
//! the cut cut short, no held record gone, no plaintext under the data
//! directory), no record of a live camera committed before the point
//! gone, and recording resumes on every camera after the restart.
//! After the points of one data directory: each due deletion made once
//! (one receipt each), the held records all there, and `sargs verify`
//! passes whole after a clean stop.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use sargs_core::seal::manifest::Manifest;

use super::checks::*;
use super::retention::{held_burst, retention_config};
use super::{sleep_until, Campaign};
use crate::faults::SmallDisk;
use crate::harness::*;
use crate::support::faultfs::{Disk, Lost};

const CAMERAS: [&str; 2] = ["cam-a", "cam-b"];
const SEGMENT_S: u64 = 2;
/// Cuts on one data directory before the next point starts a fresh one.
const PER_HOME: usize = 10;
/// Old records per burst, of which the first `HELD` are under a hold.
const BURST: usize = 12;
const HELD: usize = 3;

/// One data directory: the agent, its power-loss disk over a tmpfs, the
/// home (dropped in this order).
struct Rig {
    agent: Option<Spawned>,
    disk: Option<Disk>,
    ram: SmallDisk,
    home: Home,
}

impl Rig {
    fn new() -> Rig {
        let home = Home::new();
        retention_config(&home, &CAMERAS);
        let ram = SmallDisk::mount(&home.path().join("data.backing"), "256m");
        let disk = Disk::mount_power(&ram.0, &home.path().join("data"));
        Rig {
            agent: None,
            disk: Some(disk),
            ram,
            home,
        }
    }

    fn mount(&self) -> PathBuf {
        self.home.path().join("data")
    }

    /// The power cut: syncs stop counting and the agent is killed at once;
    /// the disk comes back with what was durable.
    fn cut(&mut self) -> std::io::Result<Lost> {
        let disk = self.disk.take().expect("a mounted disk");
        disk.cut();
        if let Some(mut agent) = self.agent.take() {
            kill_9(&mut agent);
        }
        let lost = disk.restore();
        self.disk = Some(Disk::mount_power(&self.ram.0, &self.mount()));
        lost
    }
}

/// The records of each camera numbered below its head in `heads` (each
/// committed — fsynced, renamed, its directory fsynced — before the next
/// one began, so durable before the cut) that are gone.
fn lost_records(data: &Path, heads: &BTreeMap<String, u64>) -> Vec<String> {
    heads
        .iter()
        .flat_map(|(cam, head)| {
            let dir = data.join("cameras").join(cam);
            let there: BTreeSet<u64> = records_after(&dir, 0).iter().map(|(n, _)| *n).collect();
            (1..*head)
                .filter(move |n| !there.contains(n))
                .map(move |n| format!("record {cam}/{n}, committed before the cut, is gone"))
        })
        .collect()
}

/// The sums of what the cuts took away, for the note.
#[derive(Default)]
struct Losses {
    cuts: usize,
    lost: Lost,
}

impl Losses {
    fn add(&mut self, l: &Lost) {
        self.cuts += 1;
        self.lost.files_reverted += l.files_reverted;
        self.lost.names_gone += l.names_gone;
        self.lost.names_back += l.names_back;
        self.lost.file_syncs += l.file_syncs;
        self.lost.dir_syncs += l.dir_syncs;
    }

    fn note(&self) -> String {
        let l = &self.lost;
        format!(
            "{} cuts took away {} file contents, {} names made since a directory fsync, brought back {} names unlinked since one ({} file and {} directory fsyncs seen)",
            self.cuts, l.files_reverted, l.names_gone, l.names_back, l.file_syncs, l.dir_syncs
        )
    }
}

#[test]
fn power_cut_while_recording_sweeping_and_holding() {
    let mut camp = Campaign::new("power");
    let window = Duration::from_secs(2 * SEGMENT_S);
    let mut cuts = Cuts::default();
    let mut losses = Losses::default();
    while camp.more() {
        let mut rig = Rig::new();
        let (agent, data, mut since) = match start_recording(&rig.home, &CAMERAS) {
            Ok(started) => started,
            Err(e) => {
                camp.fail(e);
                break;
            }
        };
        rig.agent = Some(agent);
        let mut protected: Vec<Manifest> = Vec::new();
        let mut due = 0;
        for b in 0..PER_HOME {
            if !camp.more() {
                break;
            }
            // Committed before the point: every record below the heads.
            let mut committed = heads(&data);
            committed.retain(|cam, _| CAMERAS.contains(&cam.as_str()));
            let held = match held_burst(&rig.home, &format!("H-{b}"), 200 - b as i64, BURST, HELD) {
                Ok(held) => held,
                Err(e) => {
                    camp.fail(format!("{e}:\n{}", log_tail(&rig.home)));
                    break;
                }
            };
            protected.extend(held);
            due += BURST - HELD;
            let anchor = Instant::now();
            let instant = camp.rng.within(window);
            let label = camp
                .label(instant, "a burst of old records sealed")
                .replace("(kill", "(power cut");
            sleep_until(anchor, instant);
            let lost = match rig.cut() {
                Ok(lost) => lost,
                Err(e) => {
                    camp.fail(format!("{label}: restoring the durable state: {e}"));
                    break;
                }
            };
            losses.add(&lost);
            let mut problems = after_kill(&rig.home, since, &protected, &mut cuts);
            problems.extend(lost_records(&data, &committed));
            since = SystemTime::now() - Duration::from_secs(1);
            let (again, recovered) = restart(&rig.home, &CAMERAS);
            rig.agent = Some(again);
            let at = instant.as_secs_f64() / window.as_secs_f64();
            camp.point(&label, at, merge(problems, recovered));
        }
        for p in swept_once(&rig.home, due, &protected) {
            camp.fail(p);
        }
        if let Some(agent) = rig.agent.take() {
            for p in stop_and_verify(agent, &rig.home) {
                camp.fail(p);
            }
        }
    }
    camp.note(cuts.note().replace("kills", "cuts"));
    camp.note(losses.note());
    camp.finish();
}
