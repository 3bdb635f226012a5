//! Scenario "offload": the agent killed while it uploads each sealed
//! segment to a real Garage, verifies it and frees the local media
//! (`[offload] local = "free"`), restarted on the same data directory.
//!
//! Each point waits for a new segment to be sealed and kills at an instant
//! uniform over the time the agent takes here from sealing a segment to
//! freeing it (measured first): the upload, the read-back, the index
//! commit, the receipt and the unlink. Besides the checks of every point,
//! after each kill:
//! - every object in the store is a record's: the manifest object is the
//!   manifest file byte for byte, and the media object has the digest that
//!   manifest signs (an upload the kill cut short leaves no object, or a
//!   whole one) — or a receipt's: the agent's receipt file byte for byte,
//!   and every receipt up to the index's mark is there;
//! - every record the index counts as offloaded has both objects in the
//!   store, with the digests the index keeps;
//! - every record whose local media is gone has a receipt of reason
//!   `offloaded` naming its media object, verified in the store (the
//!   checks of every point already ask `sargs verify` for the receipt).
//!
//! At the end, once the restarted agent has caught up: every record sealed
//! before the last kill is offloaded, and the store holds exactly the
//! objects of the records the index counts, and receipts — none twice,
//! none extra.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use sargs_core::retention::receipt::Reason;
use sargs_core::seal::manifest::{self, Manifest};
use sargs_core::seal::sign::Envelope;

use super::checks::*;
use super::{sleep_until, Campaign};
use crate::harness::*;
use crate::offload::{offloaded, offloading_camera, receipts_in_store, site, Reader};

const CAM: &str = "cam-off";
const AGENT: &str = "test-gw";

/// The signed manifests of the camera's records, by sequence, with their
/// files' bytes.
fn manifests(home: &Home) -> BTreeMap<u64, (Manifest, Vec<u8>)> {
    let key = home.device_key();
    let mut out = BTreeMap::new();
    for (seq, path) in records_after(&home.camera_dir(CAM), 0) {
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let Ok(env) = Envelope::open(&bytes, Some(&key)) else {
            continue;
        };
        if let Ok(m) = serde_json::from_str::<Manifest>(&env.payload) {
            out.insert(seq, (m, bytes));
        }
    }
    out
}

/// What is wrong between the store, the index, the receipts and the files.
fn store_problems(home: &Home, reader: &Reader) -> Vec<String> {
    let mut problems = Vec::new();
    let records = manifests(home);
    let listed = reader.list();
    let prefix = format!("{AGENT}/{CAM}/");
    let (receipted, wrong) = receipts_in_store(home, reader);
    problems.extend(wrong);
    for key in listed.difference(&receipted) {
        let Some((seq, kind)) = key
            .strip_prefix(&prefix)
            .and_then(|rest| rest.split_once('.'))
            .and_then(|(n, kind)| Some((n.parse::<u64>().ok()?, kind)))
        else {
            problems.push(format!("object {key} is no record's"));
            continue;
        };
        let Some((m, bytes)) = records.get(&seq) else {
            problems.push(format!("object {key}: no record {seq} on the gateway"));
            continue;
        };
        let object = reader.get(key);
        match kind {
            "json" if object != *bytes => {
                problems.push(format!("object {key} is not the manifest file"))
            }
            "mp4.age" => match &m.media {
                Some(media) if manifest::sha256_hex(&object) == media.ciphertext_sha256 => {}
                _ => problems.push(format!(
                    "object {key} ({} bytes) has not the digest its manifest signs",
                    object.len()
                )),
            },
            "json" => {}
            _ => problems.push(format!("object {key} is no record's")),
        }
    }
    for (cam, seq, o) in offloaded(home) {
        if !listed.contains(&o.manifest_key) {
            problems.push(format!(
                "{cam}/{seq} counted as offloaded, its manifest object missing"
            ));
        }
        if let Some((media_key, _)) = &o.media {
            if !listed.contains(media_key) {
                problems.push(format!(
                    "{cam}/{seq} counted as offloaded, {media_key} missing"
                ));
            }
        }
    }
    let freed: BTreeMap<String, _> = receipts(&home.path().join("data"))
        .into_iter()
        .filter(|r| r.reason == Reason::Offloaded)
        .map(|r| (r.segment_id.clone(), r))
        .collect();
    let dir = home.camera_dir(CAM);
    for (seq, (m, _)) in &records {
        let Some(media) = &m.media else { continue };
        if dir.join(&media.file).exists() {
            continue;
        }
        let Some(r) = freed.get(&m.segment_id) else {
            continue; // deleted otherwise: `sargs verify` accounts for it
        };
        match &r.offloaded {
            Some(o)
                if o.sha256 == media.ciphertext_sha256
                    && listed.contains(&o.key)
                    && manifest::sha256_hex(&reader.get(&o.key)) == o.sha256 => {}
            other => problems.push(format!(
                "{CAM}/{seq} freed, but its receipt names no verified object in the store: {other:?}"
            )),
        }
    }
    problems
}

/// The camera's newest sequence on disk.
fn head(dir: &Path) -> u64 {
    records_after(dir, 0).last().map_or(0, |(s, _)| *s)
}

#[test]
fn kill_9_while_offloading_and_freeing() {
    let mut camp = Campaign::new("offload");
    let mut cuts = Cuts::default();
    let (g, key, home, table) = site();
    let reader = Reader::new(&g, &key);
    // Noise at a high bitrate: objects of about a megabyte, so that an
    // upload takes long enough here for kills to land inside it.
    let cam = offloading_camera(CAM)
        .replace("pattern = \"smpte\"", "pattern = \"snow\"")
        .replace("bitrate_kbps = 400", "bitrate_kbps = 4000");
    home.config(2, &(cam + &table + "local = \"free\"\n"));
    let (mut agent, data, mut since) = match start_recording(&home, &[CAM]) {
        Ok(started) => started,
        Err(e) => {
            camp.fail(e);
            camp.finish();
            return;
        }
    };
    let dir = home.camera_dir(CAM);
    let freed = || {
        receipts(&data)
            .into_iter()
            .filter(|r| r.reason == Reason::Offloaded)
            .filter_map(|r| r.segment_id.rsplit_once('/')?.1.parse::<u64>().ok())
            .collect::<BTreeSet<u64>>()
    };
    let mut window = None;
    let what = "from a segment's seal to its media freed after offload";
    let (w, _) = camp.window(&mut window, what, || {
        let h = head(&dir);
        assert!(
            wait_fine(RECORDING, || head(&dir) > h),
            "a segment is sealed"
        );
        let (t, sealed) = (Instant::now(), head(&dir));
        assert!(
            wait_fine(RECORDING, || freed().contains(&sealed)),
            "segment {sealed} is freed after offload:\n{}",
            log_tail(&home)
        );
        t.elapsed()
    });
    let mut last_head = 0;
    while camp.more() {
        let h = head(&dir);
        if !wait_fine(RECORDING, || head(&dir) > h) {
            camp.fail(format!("no segment sealed:\n{}", log_tail(&home)));
            break;
        }
        let anchor = Instant::now();
        let instant = camp.rng.within(w);
        let label = camp.label(instant, "a segment was sealed");
        sleep_until(anchor, instant);
        kill_9(&mut agent);
        last_head = head(&dir);
        let mut problems = after_kill(&home, since, &[], &mut cuts);
        problems.extend(store_problems(&home, &reader));
        since = SystemTime::now() - Duration::from_secs(1);
        let (again, recovered) = restart(&home, &[CAM]);
        agent = again;
        let at = instant.as_secs_f64() / w.as_secs_f64();
        camp.point(&label, at, merge(problems, recovered));
    }
    // The restarted agent catches up: every record sealed before the last
    // kill goes, and the store holds exactly what the index counts.
    let caught_up = wait_until(Duration::from_secs(120), || {
        let done: BTreeSet<u64> = offloaded(&home).into_iter().map(|(_, s, _)| s).collect();
        (1..=last_head).all(|s| done.contains(&s))
    });
    if !caught_up {
        camp.fail(format!(
            "records up to {last_head} not all offloaded after the restarts:\n{}",
            log_tail(&home)
        ));
    }
    for p in stop_and_verify(agent, &home) {
        camp.fail(p);
    }
    for p in store_problems(&home, &reader) {
        camp.fail(p);
    }
    let counted: BTreeSet<String> = offloaded(&home)
        .into_iter()
        .flat_map(|(_, _, o)| std::iter::once(o.manifest_key).chain(o.media.map(|(k, _)| k)))
        .collect();
    // In the store and not yet counted: only what the clean stop caught
    // between an upload and its commit, after the last kill (the next
    // start verifies it and counts it without sending it again).
    // Receipts are checked by store_problems, above.
    let (receipted, _) = receipts_in_store(&home, &reader);
    let listed: BTreeSet<String> = reader.list().difference(&receipted).cloned().collect();
    let uncounted: Vec<&String> = listed
        .difference(&counted)
        .filter(|k| {
            k.strip_prefix(&format!("{AGENT}/{CAM}/"))
                .and_then(|rest| rest.split_once('.'))
                .and_then(|(n, _)| n.parse::<u64>().ok())
                .is_none_or(|seq| seq <= last_head)
        })
        .collect();
    let missing: Vec<&String> = counted.difference(&listed).collect();
    if !uncounted.is_empty() || !missing.is_empty() {
        camp.fail(format!(
            "the store and the index disagree: in the store only {uncounted:?}, counted only {missing:?}"
        ));
    }
    camp.note(format!(
        "{} records offloaded, {} freed; {}",
        offloaded(&home).len(),
        freed().len(),
        cuts.note()
    ));
    camp.finish();
}
