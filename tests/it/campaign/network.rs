//! The network campaign: faults on the links between the agent and the
//! broker and between HQ's service and the broker, with everything real —
//! the agent (`sargs run`), `sargs-hq run` on SQLite, Mosquitto without
//! persistence — and each link through its own fault proxy
//! (`support::faultproxy`).
//!
//! Each round: a burst of records past their deadline (the sweep, every
//! second, deletes them with receipts) and a `resend` command announcing
//! them, then the fault, at a seeded random instant within the first
//! second of the burst, so deletions, receipts and the command's answer are
//! made while it lasts:
//! - "outage": both links cut (connections closed, new ones closed as
//!   they come) for the outage's length, the command issued meanwhile;
//! - "stall": each link stopped mid-packet (one byte of a read forwarded,
//!   the rest held, the connection kept open) — the agent's way up, HQ's
//!   way down — for the stall's length;
//! - "loss": 30 % of the chunks each way held back by a retransmission
//!   timeout doubling at each loss in a row, for the round;
//! - "restart": the broker (no persistence) killed once the command was
//!   answered, while the burst's messages are in flight, and started again
//!   on its port after the outage's length;
//! - "restart-away": HQ's link cut, the burst and the command's answer
//!   sent (the agent's outbox empty: all with the broker, queued for HQ's
//!   session), then the broker restarted as in "restart" — what it queued
//!   for HQ is lost — and HQ's link back.
//!
//! Invariant (docs/RELIABILITY.md): once the link is back, HQ's ledger
//! balances with the agent's files — every segment record that started
//! before the fault's end and every receipt on the agent's disk, none
//! missing (with ledger healing on, as deployed: a hole HQ sees is asked
//! for again, and the campaign counts those requests) — every command is
//! answered exactly once, the live camera never stopped (no gap record),
//! and `sargs verify` passes at the end. A round's recovery time runs from
//! the fault's end to the ledger balancing.
//!
//! `SARGS_NETWORK_FAULT_S` sets the outage's, stall's and loss's length
//! (default 3 s: the short version; the full campaign uses 600 s).

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sargs_core::seal::manifest::RecordKind;

use super::checks::*;
use super::link::{enrol, hq_toml, ledger_until, queued};
use super::{env_u64, sleep_until, Campaign};
use crate::harness::*;
use crate::hq_service::start_hq_with;
use crate::mqtt::{hq_tables, sargsctl_command, topic};
use crate::support::faultproxy::{Dir, Proxy};
use crate::support::mosquitto::{Broker, Watcher};

const LIVE: &str = "cam-live";
const OLD: &str = "cam-old";
const BURST: usize = 20;
const LOSS: f64 = 0.3;

/// The faults, one test each.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    Outage,
    Stall,
    Loss,
    Restart,
    RestartAway,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Outage => "outage",
            Fault::Stall => "stall",
            Fault::Loss => "loss",
            Fault::Restart => "restart",
            Fault::RestartAway => "restart-away",
        }
    }
}

/// The agent's own files: (segment records, gap records) of every camera
/// that started before `to`, and the receipts.
fn on_agent(data: &Path, to: DateTime<Utc>) -> (u64, u64, u64) {
    let kinds: Vec<RecordKind> = [LIVE, OLD]
        .iter()
        .flat_map(|cam| records_after(&data.join("cameras").join(cam), 0))
        .filter_map(|(_, p)| read_manifest(&p))
        .filter(|m| m.start < to)
        .map(|m| m.record)
        .collect();
    let n = |k: RecordKind| kinds.iter().filter(|r| **r == k).count() as u64;
    (
        n(RecordKind::Segment),
        n(RecordKind::Gap),
        receipts(data).len() as u64,
    )
}

/// Gap records of the live camera: recording stopped. (The test's own
/// bursts of old records, a day apart, have gap records between them.)
fn live_gaps(data: &Path) -> usize {
    records_after(&data.join("cameras").join(LIVE), 0)
        .iter()
        .filter_map(|(_, p)| read_manifest(p))
        .filter(|m| m.record == RecordKind::Gap)
        .count()
}

/// Answers to command `id` seen once it is answered (or `limit` passed).
fn answers(w: &mut Watcher, id: &str, limit: Duration) -> usize {
    w.wait("/responses", limit, |v| v["command_id"] == id);
    w.seen
        .iter()
        .filter(|(t, p, _)| {
            t.ends_with("/responses")
                && serde_json::from_slice::<serde_json::Value>(p)
                    .is_ok_and(|v| v["command_id"] == id)
        })
        .count()
}

fn run(fault: Fault) {
    let mut camp = Campaign::new(fault.name());
    let length = Duration::from_secs(env_u64("SARGS_NETWORK_FAULT_S").unwrap_or(3));
    // How long a ledger may take to catch up once the fault is over.
    let limit = Duration::from_secs(120) + length;
    let home = Home::new();
    let dir = home.path();
    let mut broker = Broker::start(dir, None);
    let port = broker.port;
    let agent_link = Proxy::start(port);
    let hq_link = Proxy::start(port);
    let key = hq_keygen(dir);
    let cams = hq_tables(&agent_link.url(), &key, None)
        + &test_camera(LIVE, "cctv", "")
        + &test_camera(OLD, "cctv", "enabled = false");
    let config = home.config_with(2, "min_free_mb = 1", &cams);
    let conf = hq_toml(dir, &hq_link.url(), &key, true);
    enrol(&home, &config);
    let mut service = start_hq_with(dir, &conf, "hq.log");
    let mut w = Watcher::connect(port, "hq-operator", None, &["sargs/agents/test-gw/#"]);
    let (agent, data, _) = match start_recording(&home, &[LIVE]) {
        Ok(started) => started,
        Err(e) => panic!("{e}"),
    };
    let mut issued = 0;
    for round in 0.. {
        if !camp.more() {
            break;
        }
        let first = heads(&data).get(OLD).copied().unwrap_or(0) + 1;
        let due = receipt_count(&data) + BURST;
        old_segments(&home, OLD, BURST, 300 - round);
        let id = format!("c-net-{}-{round}", fault.name());
        let resend = sargsctl_command(
            dir,
            &id,
            &["resend", "--records-from", &format!("{OLD}={first}")],
        );
        let anchor = Instant::now();
        let instant = camp.rng.within(Duration::from_secs(1));
        let label = camp.label(instant, "a burst of records past their deadline");
        let label = label.replace("(kill", "(fault");
        let mut problems = Vec::new();
        let before = (agent_link.counts(), hq_link.counts());
        if fault != Fault::Restart {
            sleep_until(anchor, instant);
        }
        match fault {
            Fault::Outage => {
                agent_link.cut();
                hq_link.cut();
                w.publish(&topic("commands"), resend);
                issued += 1;
                // It lasts its length, and until the burst is deleted.
                if !wait_until(limit, || receipts(&data).len() >= due) {
                    problems.push(format!(
                        "the burst was not deleted during the outage ({} receipts of {due})",
                        receipts(&data).len()
                    ));
                }
                sleep_until(anchor, instant + length);
                agent_link.resume();
                hq_link.resume();
            }
            Fault::Stall => {
                w.publish(&topic("commands"), resend);
                issued += 1;
                agent_link.stall(Dir::Up, length);
                hq_link.stall(Dir::Down, length);
                let stalled =
                    || agent_link.counts().2 > before.0 .2 && hq_link.counts().2 > before.1 .2;
                if !wait_until(limit, stalled) {
                    problems.push("a link never stalled".to_owned());
                }
                sleep_until(Instant::now(), length);
            }
            Fault::Loss => {
                let seed = camp.rng.next_u64();
                agent_link.loss(Some(LOSS), seed);
                hq_link.loss(Some(LOSS), seed.rotate_left(17));
                w.publish(&topic("commands"), resend);
                issued += 1;
                sleep_until(anchor, instant + length);
                agent_link.loss(None, 0);
                hq_link.loss(None, 0);
            }
            Fault::Restart => {
                w.publish(&topic("commands"), resend);
                issued += 1;
                if w.wait("/responses", limit, |v| v["command_id"] == id.as_str())
                    .is_none()
                {
                    problems.push(format!("{id} was not answered before the restart"));
                }
                sleep_until(Instant::now(), instant / 2);
                broker.stop();
                sleep_until(Instant::now(), length);
                broker = Broker::start_on(dir, None, port);
            }
            Fault::RestartAway => {
                hq_link.cut();
                w.publish(&topic("commands"), resend);
                issued += 1;
                // Everything with the broker, queued for HQ's session.
                let sent = || receipts(&data).len() >= due && !queued(&data);
                if w.wait("/responses", limit, |v| v["command_id"] == id.as_str())
                    .is_none()
                    || !wait_until(limit, sent)
                {
                    problems.push(format!(
                        "{id} and its burst were not sent before the restart"
                    ));
                }
                broker.stop();
                sleep_until(Instant::now(), length);
                broker = Broker::start_on(dir, None, port);
                hq_link.resume();
            }
        }
        let ended = Utc::now();
        let restored = Instant::now();
        let balanced = || {
            ledger_until(dir, &ended.to_rfc3339()).is_some_and(|(rec, rcp, missing, gaps)| {
                (rec, gaps, rcp) == on_agent(&data, ended) && missing == 0
            })
        };
        let recovered = if wait_until(limit, balanced) {
            Ok(restored.elapsed())
        } else {
            Err(format!(
                "the ledger does not balance once the link is back: {:?} (records, receipts, missing, gaps) before {ended}, the agent has {:?} (records, gaps, receipts)\n{}",
                ledger_until(dir, &ended.to_rfc3339()),
                on_agent(&data, ended),
                log_tail(&home)
            ))
        };
        let answered = answers(&mut w, &id, limit);
        if answered != 1 {
            problems.push(format!("{id} answered {answered} times"));
        }
        if fault == Fault::Outage && agent_link.counts().1 == before.0 .1 {
            problems
                .push("the outage closed no connection of the agent, nor refused one".to_owned());
        }
        if fault == Fault::Loss && agent_link.counts().3 == before.0 .3 {
            problems.push("no chunk was held back by the loss".to_owned());
        }
        let at = instant.as_secs_f64();
        camp.point(&label, at, merge(problems, recovered));
    }
    let stopped = live_gaps(&data);
    if stopped > 0 {
        camp.fail(format!(
            "recording stopped: {stopped} gap record(s) of {LIVE}"
        ));
    }
    let commands = w
        .seen
        .iter()
        .filter(|(t, _, _)| t.ends_with("/commands"))
        .count();
    let (a, h) = (agent_link.counts(), hq_link.counts());
    camp.note(format!(
        "{issued} command(s) issued, {} heal request(s) from HQ; agent link: {} connection(s), {} closed or refused by cuts, {} stall(s), {} chunk(s) held back; HQ link: {} connection(s), {} closed or refused by cuts, {} stall(s), {} chunk(s) held back; fault length {} s",
        commands.saturating_sub(issued),
        a.0, a.1, a.2, a.3, h.0, h.1, h.2, h.3,
        length.as_secs()
    ));
    let (rec, gaps, rcp) = on_agent(&data, Utc::now());
    camp.note(format!(
        "{rec} segment records, {gaps} gap records and {rcp} receipts on the agent"
    ));
    for p in stop_and_verify(agent, &home) {
        camp.fail(p);
    }
    // SAFETY: SIGTERM to our own child: a clean stop.
    unsafe { libc::kill(service.id() as i32, libc::SIGTERM) };
    if !service.wait().is_ok_and(|s| s.success()) {
        camp.fail("sargs-hq did not stop cleanly".to_owned());
    }
    drop(broker);
    camp.finish();
}

#[test]
fn network_outage_of_both_links_during_deletions() {
    run(Fault::Outage);
}

#[test]
fn network_links_stalled_mid_packet() {
    run(Fault::Stall);
}

#[test]
fn network_links_losing_30_percent() {
    run(Fault::Loss);
}

/// What the broker had acknowledged to the agent and not yet delivered to
/// HQ when it went down is lost, and is the newest of its numbering: HQ
/// finds it by the agent's telemetry (`outbox.acknowledged`).
#[test]
fn network_broker_restarted_without_persistence() {
    run(Fault::Restart);
}

/// What the broker held for HQ is lost, the burst's records and receipts
/// the newest of their numberings: no later one shows the hole, the
/// agent's telemetry does.
#[test]
fn network_broker_restarted_while_hq_is_away() {
    run(Fault::RestartAway);
}
