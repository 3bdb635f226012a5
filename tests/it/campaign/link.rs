//! Scenarios "outbox" and "hq": the link to HQ through a real Mosquitto on
//! a free 127.0.0.1 port.
//!
//! "outbox": the agent killed while its durable outbox sends the receipts
//! of a burst of deletions (records past their deadline, sealed by the
//! test) with a live camera's events, at an instant uniform over the time
//! from the burst's first receipt until all reach HQ's side of the broker
//! (measured first); after each restart every receipt on
//! its disk at the kill must reach HQ's side of the broker (a subscriber
//! on the agent's topics). Its recovery time runs from the restart to
//! recording resumed and every such receipt arrived.
//!
//! "hq": HQ's service `sargs-hq` (SQLite ledger) killed while it commits
//! a burst of records and receipts an agent streams (deletions, and the
//! records announced by a `resend`); restarted, its ledger must come to
//! balance with the agent's files — every record and receipt, none
//! missing — with ledger healing off, so nothing the service acknowledged
//! to the broker can come back any other way; and it never holds less
//! than it held at a kill. Its recovery time runs from the restart to the
//! ledger balancing.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use super::checks::*;
use super::{sleep_until, Campaign};
use crate::harness::*;
use crate::hq_service::{hq, hq_bin, start_hq_with};
use crate::mqtt::{hq_tables, sargsctl_command, topic};
use crate::support::mosquitto::{Broker, Watcher};

const LIVE: &str = "cam-live";
const OLD: &str = "cam-old";
const PER_HOME: usize = 8;
const BURST: usize = 30;
/// How long a ledger or a subscriber may take to catch up.
const T: Duration = Duration::from_secs(90);

/// Receipts (by segment id) that reached the subscriber so far.
fn arrived(w: &mut Watcher, got: &mut BTreeSet<String>, want: &BTreeSet<String>, limit: Duration) {
    w.wait("/events", limit, |v| {
        if v["event"] == "segment.deleted" {
            if let Some(id) = v["receipt"]["segment_id"].as_str() {
                got.insert(id.to_owned());
            }
        }
        want.is_subset(got)
    });
}

/// Whether the agent's outbox holds messages not yet sent.
pub(super) fn queued(data: &Path) -> bool {
    std::fs::read_dir(data.join("outbox"))
        .map(|rd| rd.flatten().any(|e| e.path().is_file()))
        .unwrap_or(false)
}

#[test]
fn kill_9_while_the_outbox_sends() {
    let mut camp = Campaign::new("outbox");
    let mut cuts = Cuts::default();
    let mut window: Option<Duration> = None;
    let (mut kills, mut with_queue) = (0, 0);
    while camp.more() {
        let home = Home::new();
        let broker = Broker::start(home.path(), None);
        let key = hq_keygen(home.path());
        let cams = hq_tables(&broker.url(), &key, None)
            + &test_camera(LIVE, "cctv", "")
            + &test_camera(OLD, "cctv", "enabled = false");
        home.config_with(2, "min_free_mb = 1", &cams);
        let mut w = Watcher::connect(
            broker.port,
            "hq-campaign",
            None,
            &["sargs/agents/test-gw/#"],
        );
        let (mut agent, data, mut since) = match start_recording(&home, &[LIVE]) {
            Ok(started) => started,
            Err(e) => {
                camp.fail(e);
                break;
            }
        };
        let mut got = BTreeSet::new();
        for b in 0..PER_HOME {
            if !camp.more() {
                break;
            }
            let before = receipts(&data).len();
            let due = before + BURST;
            old_segments(&home, OLD, BURST, 200 - b as i64);
            // The sweep (every second) writes the burst's receipts and hands
            // them to the outbox: the window starts there.
            if !wait_fine(T, || receipt_count(&data) > before) {
                camp.fail(format!("burst {b} is not swept:\n{}", log_tail(&home)));
                break;
            }
            let anchor = Instant::now();
            let what = format!("from the first receipt of a burst of {BURST}");
            let (win, measured) = camp.window(&mut window, &what, || {
                assert!(
                    wait_until(T, || receipts(&data).len() >= due),
                    "the first burst is deleted:\n{}",
                    log_tail(&home)
                );
                let want: BTreeSet<String> = receipted(&data).into_iter().collect();
                arrived(&mut w, &mut got, &want, T);
                assert!(want.is_subset(&got), "the first burst's receipts arrive");
                anchor.elapsed()
            });
            if measured {
                continue;
            }
            let instant = camp.rng.within(win);
            let label = camp.label(instant, "a burst's first receipt");
            sleep_until(anchor, instant);
            kill_9(&mut agent);
            kills += 1;
            with_queue += usize::from(queued(&data));
            let want: BTreeSet<String> = receipted(&data).into_iter().collect();
            let problems = after_kill(&home, since, &[], &mut cuts);
            since = SystemTime::now() - Duration::from_secs(1);
            let restarted = Instant::now();
            let (again, recovered) = restart(&home, &[LIVE]);
            agent = again;
            let recovered = recovered.and_then(|_| {
                arrived(&mut w, &mut got, &want, T);
                let missing: Vec<&String> = want.difference(&got).collect();
                if missing.is_empty() {
                    Ok(restarted.elapsed())
                } else {
                    Err(format!("receipts missing at HQ: {missing:?}"))
                }
            });
            let at = instant.as_secs_f64() / win.as_secs_f64();
            camp.point(&label, at, merge(problems, recovered));
        }
        // Those made since the last restart, while the agent still runs.
        let want: BTreeSet<String> = receipted(&data).into_iter().collect();
        arrived(&mut w, &mut got, &want, T);
        for id in want.difference(&got) {
            camp.fail(format!("the receipt for {id} never reached HQ"));
        }
        for p in stop_and_verify(agent, &home) {
            camp.fail(p);
        }
        drop(broker);
    }
    camp.note(cuts.note());
    camp.note(format!(
        "{with_queue} of {kills} kills with messages queued in the outbox"
    ));
    camp.finish();
}

/// `[broker]`, `[database]`… of HQ's service: SQLite in the home, the API
/// off; with `healing`, its command key (`hq/signing.pk8`), so that it asks
/// the agents for the holes in its ledger.
pub(super) fn hq_toml(dir: &Path, broker: &str, key: &str, healing: bool) -> std::path::PathBuf {
    let path = dir.join("hq.toml");
    let key_file = if healing {
        "key_file = \"hq/signing.pk8\"\n"
    } else {
        ""
    };
    std::fs::write(
        &path,
        format!(
            "[broker]\nurl = \"{broker}\"\nclient_id = \"hq-campaign\"\nkeep_alive_s = 5\n\n[database]\nurl = \"sqlite://hq.db\"\n\n[commands]\ntrusted_keys = [\"{key}\"]\n{key_file}\n[api]\nlisten = \"\"\n\n[ledger]\ncheck_interval_s = 1\nclaim_grace_s = 3\n"
        ),
    )
    .expect("hq.toml");
    path
}

/// The ledger's totals for the records that started before `to` (segments
/// recorded, receipts, missing, gap records), read by `sargs-hq report`
/// (None if it failed: the message is in the failure that follows).
pub(super) fn ledger_until(dir: &Path, to: &str) -> Option<(u64, u64, u64, u64)> {
    let conf = dir.join("hq.toml").display().to_string();
    let args = [
        "report",
        "--format",
        "json",
        "--from",
        "2000-01-01T00:00:00Z",
        "--to",
        to,
        "--config",
        conf.as_str(),
    ];
    let (ok, out, _) = run_in(&hq_bin(), &args, dir);
    let r: serde_json::Value = serde_json::from_str(&out).ok().filter(|_| ok)?;
    let t = &r["totals"];
    let n = |k: &str| t[k].as_u64().unwrap_or(0);
    Some((
        n("recorded"),
        n("on_time") + n("late"),
        n("missing"),
        n("gaps"),
    ))
}

/// The whole ledger's (segments recorded, receipts, missing).
fn ledger(dir: &Path) -> Option<(u64, u64, u64)> {
    ledger_until(dir, "2100-01-01T00:00:00Z").map(|(rec, rcp, missing, _)| (rec, rcp, missing))
}

/// The agent's own files: (segment records, receipts).
fn on_agent(data: &Path) -> (u64, u64) {
    let segments = records_after(&data.join("cameras").join(OLD), 0)
        .iter()
        .filter_map(|(_, p)| read_manifest(p))
        .filter(|m| m.record == sargs_core::seal::manifest::RecordKind::Segment)
        .count();
    (segments as u64, receipts(data).len() as u64)
}

/// Runs the agent once on the home (its device key exists then) and
/// enrols it in HQ's ledger (`sargs-hq agent add`, the home's `hq.toml`).
pub(super) fn enrol(home: &Home, config: &sargs::config::Config) {
    sargs::agent::Agent::start(config)
        .expect("agent")
        .stop()
        .expect("stop");
    use base64::Engine;
    let device_key = base64::engine::general_purpose::STANDARD.encode(home.device_key());
    hq(
        home.path(),
        &["agent", "add", AGENT, "--device-key", &device_key],
    );
}

#[test]
fn kill_9_of_the_hq_service_while_it_commits() {
    let mut camp = Campaign::new("hq");
    let mut window: Option<Duration> = None;
    let mut behind = 0;
    while camp.more() {
        let home = Home::new();
        let dir = home.path();
        let broker = Broker::start(dir, None);
        let key = hq_keygen(dir);
        let cams =
            hq_tables(&broker.url(), &key, None) + &test_camera(OLD, "cctv", "enabled = false");
        let config = home.config_with(2, "min_free_mb = 1", &cams);
        let conf = hq_toml(dir, &broker.url(), &key, false);
        enrol(&home, &config);
        let mut service = start_hq_with(dir, &conf, "hq.log");
        let agent = sargs::agent::Agent::start(&config).expect("agent");
        let data = dir.join("data");
        let w = Watcher::connect(broker.port, "hq-operator", None, &[]);
        let balanced = || {
            ledger(dir)
                .is_some_and(|(rec, rcp, missing)| (rec, rcp) == on_agent(&data) && missing == 0)
        };
        let mut held = (0, 0);
        for b in 0..PER_HOME {
            if !camp.more() {
                break;
            }
            // A burst: records past their deadline (deleted with receipts),
            // announced by a resend from the burst's first record on.
            let first = heads(&data).get(OLD).copied().unwrap_or(0) + 1;
            old_segments(&home, OLD, BURST, 200 - b as i64);
            let id = format!("c-resend-{}-{b}", camp.next());
            let resend = sargsctl_command(
                dir,
                &id,
                &["resend", "--records-from", &format!("{OLD}={first}")],
            );
            w.publish(&topic("commands"), resend);
            let anchor = Instant::now();
            let what = format!("from a burst of {BURST} records and deletions");
            let (win, measured) = camp.window(&mut window, &what, || {
                assert!(
                    wait_until(T, || receipts(&data).len() >= BURST && balanced()),
                    "the first burst reaches the ledger: {:?} of {:?}\n{}",
                    ledger(dir),
                    on_agent(&data),
                    std::fs::read_to_string(dir.join("hq.log")).unwrap_or_default()
                );
                anchor.elapsed()
            });
            if measured {
                continue;
            }
            let instant = camp.rng.within(win);
            let label = camp.label(instant, "a burst of records and deletions");
            sleep_until(anchor, instant);
            // SAFETY: SIGKILL to our own child.
            unsafe { libc::kill(service.id() as i32, libc::SIGKILL) };
            service.wait().expect("killed");
            let mut problems = Vec::new();
            // What the ledger held at a kill is never less at the next.
            match ledger(dir) {
                Some((rec, rcp, _)) => {
                    if rec < held.0 || rcp < held.1 {
                        problems.push(format!(
                            "the ledger went back: {rec} records and {rcp} receipts, {held:?} before"
                        ));
                    }
                    held = (rec, rcp);
                    behind += usize::from((rec, rcp) != on_agent(&data));
                }
                None => problems.push("the ledger cannot be read after the kill".to_owned()),
            }
            let restarted = Instant::now();
            service = start_hq_with(dir, &conf, "hq.log");
            let recovered = if wait_until(T, balanced) {
                Ok(restarted.elapsed())
            } else {
                Err(format!(
                    "the ledger does not balance after the restart: {:?} (records, receipts, missing), the agent has {:?}",
                    ledger(dir),
                    on_agent(&data)
                ))
            };
            let at = instant.as_secs_f64() / win.as_secs_f64();
            camp.point(&label, at, merge(problems, recovered));
        }
        agent.stop().expect("the agent stops");
        // SAFETY: SIGTERM to our own child: a clean stop.
        unsafe { libc::kill(service.id() as i32, libc::SIGTERM) };
        if !service.wait().is_ok_and(|s| s.success()) {
            camp.fail("sargs-hq did not stop cleanly".to_owned());
        }
        drop(broker);
    }
    camp.note(format!("{behind} kills with the ledger behind the agent"));
    camp.finish();
}
