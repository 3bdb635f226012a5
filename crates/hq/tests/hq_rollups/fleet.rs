//! The fleet the rollups' test keeps: its cameras, and their signed
//! records and receipts as events, each with the phase it arrives in.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::json;

use sargs_core::clock::SyncState;
use sargs_core::retention::receipt::{Reason, Receipt};
use sargs_core::seal::manifest::{
    self, ClockFault, Gap, Manifest, Masks, Media, PolicyRef, RecordKind,
};
use sargs_core::seal::sign::DeviceKey;

pub(super) const DAY: i64 = 86_400_000;
pub(super) const HOUR: i64 = 3_600_000;
/// The instant the reports are judged at: 2024-03-10T12:00:00Z.
pub(super) const NOW: i64 = 1_710_072_000_000;
pub(super) const BOUND: i64 = 120_000;
pub(super) const GRACE: i64 = 24 * HOUR;
/// When each phase's messages arrive (`received_at`): an hour apart,
/// more than the check's margin.
pub(super) const ARRIVED: [i64; 4] = [NOW, NOW + HOUR, NOW + 2 * HOUR, NOW + 3 * HOUR];

pub(super) fn t(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).expect("an instant")
}

/// xorshift64: shuffles, the same every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, (self.next() % (i as u64 + 1)) as usize);
        }
    }
}

/// A message as the broker hands it over, and the phase it arrives in.
pub(super) struct Msg {
    pub(super) topic: String,
    pub(super) payload: String,
    pub(super) phase: usize,
}

/// A camera: its agent, class and period, its first start and the
/// time between starts, its number of records, those never sent.
struct Camera {
    agent: &'static str,
    camera: &'static str,
    class: &'static str,
    keep: i64,
    first: i64,
    step: i64,
    count: u64,
    withheld: &'static [u64],
}

const CAMERAS: &[Camera] = &[
    Camera {
        agent: "gw-a",
        camera: "cam-1",
        class: "cctv",
        keep: 2 * DAY,
        first: NOW - 8 * DAY,
        step: 3 * HOUR,
        count: 64,
        withheld: &[5, 6, 7, 30],
    },
    Camera {
        agent: "gw-a",
        camera: "cam-2",
        class: "police",
        keep: 5 * DAY,
        first: NOW - 8 * DAY + HOUR,
        step: 5 * HOUR,
        count: 38,
        withheld: &[1, 2, 20],
    },
    // Around 1970: starts and days below zero.
    Camera {
        agent: "gw-b",
        camera: "cam-1",
        class: "cctv",
        keep: 2 * DAY,
        first: -3 * DAY + 1234,
        step: 7 * HOUR,
        count: 20,
        withheld: &[11],
    },
];

/// Records sealed with a clock fault, on the camera around 1970: the
/// deadline their manifests state is the wrong clock's. The first is
/// deleted on time by the deadline the agent set once it trusted its clock
/// (its receipt states it); the second has no receipt yet, and is not
/// overdue whatever its manifest says.
const FLAGGED: [(&str, &str, u64, ClockFault); 2] = [
    ("gw-b", "cam-1", 2, ClockFault::Impossible),
    ("gw-b", "cam-1", 3, ClockFault::Stepped),
];
/// The deadline the agent gave the first flagged record.
const REBASED: i64 = NOW - DAY;

/// A camera whose first record arrives last, alone.
const LATE_CAMERA: Camera = Camera {
    agent: "gw-a",
    camera: "cam-3",
    class: "cctv",
    keep: 2 * DAY,
    first: NOW - HOUR,
    step: HOUR,
    count: 1,
    withheld: &[],
};

fn event(agent: &str, event: &str, key: &DeviceKey, payload: &str) -> (String, String) {
    let v = json!({"event": event, "agent": agent, "envelope": key.sign(payload)});
    (format!("sargs/agents/{agent}/events"), v.to_string())
}

fn manifest_of(c: &Camera, seq: u64, prev: &str) -> Manifest {
    let start = c.first + (seq as i64 - 1) * c.step;
    let gap = seq.is_multiple_of(9);
    Manifest {
        v: manifest::MANIFEST_VERSION,
        record: if gap {
            RecordKind::Gap
        } else {
            RecordKind::Segment
        },
        segment_id: format!("{}/{}/{seq}", c.agent, c.camera),
        agent_id: c.agent.into(),
        camera_id: c.camera.into(),
        camera_kind: "stationary".into(),
        sequence: seq,
        start: t(start),
        end: t(start + c.step),
        duration_ms: c.step as u64,
        clock: SyncState::Synchronised,
        clock_fault: None,
        purpose: json!({}),
        notice: json!({}),
        policy: PolicyRef {
            id: "p".into(),
            reference: "r".into(),
        },
        retention: manifest::Retention {
            class: c.class.into(),
            keep: "some days".into(),
            delete_after: t(start + c.keep),
        },
        media: (!gap).then(|| Media {
            file: format!("{seq}.age"),
            container: "video/mp4".into(),
            codec: "h264".into(),
            width: None,
            height: None,
            encoding: "passthrough".into(),
            masks: Masks {
                rects: Vec::new(),
                version: "sha256:0".into(),
            },
            ciphertext_sha256: manifest::sha256_hex(format!("{}{seq}", c.camera).as_bytes()),
            ciphertext_bytes: 1000 + seq,
            recipients: Vec::new(),
            truncated: false,
        }),
        gap: gap.then(|| Gap {
            reason: "source-lost".into(),
        }),
        dock: None,
        prev_manifest_sha256: prev.into(),
        agent_version: "test".into(),
        sealed_at: t(start + c.step),
    }
}

/// The fleet's messages, each with the phase it arrives in.
pub(super) fn fleet(keys: &BTreeMap<&str, DeviceKey>) -> Vec<Msg> {
    let mut rng = Rng(0x5eed_0f5a_6500);
    let mut out = Vec::new();
    // Per agent, the receipts to make: (manifest, its SHA-256, deleted at, why).
    // (manifest, its SHA-256, deleted at, why, the deadline the receipt states).
    type Deletion = (Manifest, String, i64, Reason, DateTime<Utc>);
    let mut deletions: BTreeMap<&str, Vec<Deletion>> = BTreeMap::new();
    for c in CAMERAS {
        let mut prev = manifest::GENESIS.to_owned();
        for seq in 1..=c.count {
            let mut m = manifest_of(c, seq, &prev);
            if (c.agent, c.camera, seq) == ("gw-a", "cam-1", 40) {
                m.prev_manifest_sha256 = "f".repeat(64);
            }
            let flagged = FLAGGED
                .iter()
                .find(|f| (f.0, f.1, f.2) == (c.agent, c.camera, seq));
            m.clock_fault = flagged.map(|f| f.3);
            let payload = m.to_payload();
            let sha = manifest::sha256_hex(payload.as_bytes());
            prev = sha.clone();
            let mut deadline = c.first + (seq as i64 - 1) * c.step + c.keep;
            if m.record == RecordKind::Segment {
                let deletion = match seq % 11 {
                    _ if flagged.is_some() => {
                        deadline = REBASED;
                        (flagged == FLAGGED.first())
                            .then_some((REBASED + 30_000, Reason::RetentionExpired))
                    }
                    _ if deadline >= NOW => seq
                        .is_multiple_of(13)
                        .then_some((NOW - DAY, Reason::DiskPressure)),
                    0 => None,
                    1 => Some((deadline + 2 * HOUR, Reason::RetentionExpired)),
                    2 => Some((deadline - DAY, Reason::DiskPressure)),
                    3 => Some((deadline - HOUR, Reason::Erasure)),
                    _ => Some((deadline + 30_000, Reason::RetentionExpired)),
                };
                if let Some((at, why)) = deletion {
                    deletions.entry(c.agent).or_default().push((
                        m.clone(),
                        sha,
                        at,
                        why,
                        t(deadline),
                    ));
                }
            }
            if c.withheld.contains(&seq) {
                continue;
            }
            let (topic, payload) = event(
                c.agent,
                if m.record == RecordKind::Gap {
                    "gap.recorded"
                } else {
                    "segment.sealed"
                },
                &keys[c.agent],
                &payload,
            );
            let phase = match (c.agent, c.camera, seq) {
                ("gw-a", "cam-1", 39) | ("gw-a", "cam-2", 4) | ("gw-a", "cam-1", 10) => 2,
                ("gw-a", "cam-1", 40) => 1,
                _ => 1 + usize::from(rng.next() % 5 < 2),
            };
            out.push(Msg {
                topic,
                payload,
                phase,
            });
        }
    }
    for (agent, list) in &mut deletions {
        // A second, later receipt for one segment (sent first).
        if *agent == "gw-a" {
            let m = list
                .iter()
                .find(|d| d.0.segment_id == "gw-a/cam-1/10")
                .expect("has one")
                .clone();
            list.push((m.0, m.1, NOW - HOUR, Reason::RetentionExpired, m.4));
        }
        let mut prev = manifest::GENESIS.to_owned();
        for (i, (m, sha, at, why, deadline)) in list.iter().enumerate() {
            let number = i as u64 + 1;
            let r = Receipt {
                v: 1,
                record: "deletion".into(),
                sequence: number,
                agent_id: (*agent).into(),
                segment_id: m.segment_id.clone(),
                camera_id: m.camera_id.clone(),
                segment_start: m.start,
                segment_end: m.end,
                class: m.retention.class.clone(),
                delete_after: *deadline,
                manifest_sha256: if m.segment_id == "gw-a/cam-2/4" {
                    "0".repeat(64)
                } else {
                    sha.clone()
                },
                ciphertext_sha256: m
                    .media
                    .as_ref()
                    .map(|x| x.ciphertext_sha256.clone())
                    .unwrap_or_default(),
                ciphertext_bytes: 1,
                deleted_at: t(*at),
                reason: *why,
                command_id: None,
                offloaded: None,
                clock: SyncState::Synchronised,
                prev_receipt_sha256: prev.clone(),
            };
            let payload = r.to_payload();
            prev = manifest::sha256_hex(payload.as_bytes());
            if (*agent == "gw-a" && matches!(number, 3 | 4)) || (*agent == "gw-b" && number == 1) {
                continue;
            }
            let phase = match m.segment_id.as_str() {
                "gw-a/cam-2/4" => 1,
                "gw-a/cam-1/10" if number == list.len() as u64 => 1,
                "gw-a/cam-1/10" => 2,
                _ => 1 + usize::from(rng.next() % 5 < 2),
            };
            let (topic, payload) = event(agent, "segment.deleted", &keys[agent], &payload);
            out.push(Msg {
                topic,
                payload,
                phase,
            });
        }
    }
    // Phase 3: a record that breaks its chain, and the hole of gw-b
    // filled by a record other than the one its neighbours name.
    let c = &CAMERAS[2];
    for (seq, prev) in [(21, "e".repeat(64)), (11, "d".repeat(64))] {
        let m = manifest_of(c, seq, &prev);
        let (topic, payload) = event(c.agent, "segment.sealed", &keys[c.agent], &m.to_payload());
        out.push(Msg {
            topic,
            payload,
            phase: 3,
        });
    }
    // Phase 4: a new camera's first record.
    let m = manifest_of(&LATE_CAMERA, 1, manifest::GENESIS);
    let (topic, payload) = event("gw-a", "segment.sealed", &keys["gw-a"], &m.to_payload());
    out.push(Msg {
        topic,
        payload,
        phase: 4,
    });
    rng.shuffle(&mut out);
    out
}
