//! The seed corpora, made with the product's own writers: commands signed
//! with `sargsctl`'s signer, records and receipts as the agent writes and
//! publishes them, the shipped configuration and policy files, segments
//! sealed by the agent's age writer (whole, empty, and cut short), HQ's
//! messages as the agent publishes them, and a short MP4 for the dock (made
//! by `scripts/fuzz` with GStreamer, since it is media, not data).
//!
//! Invariant: every seed is valid for its target (signed by the test key,
//! sealed to the test identity, timed around the targets' fixed instant),
//! so the fuzzer starts from inputs that reach the end of each parser.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use chrono::{DateTime, Duration, Utc};
use serde_json::json;

use sargs::events::Event;
use sargs::hq::messages;
use sargs_core::clock::SyncState;
use sargs_core::command::{self, Action, Command, Scope, Target};
use sargs_core::retention::receipt::{Reason, Receipt};
use sargs_core::seal::age::AgeWriter;
use sargs_core::seal::manifest::{self, Dock, Gap, Manifest, Masks, Media, PolicyRef, RecordKind};
use sargs_core::seal::sign::DeviceKey;

use crate::fixture::{self, AGENT, KEY_B64, PREFIX};

/// Seeds: each a file name and its bytes.
type Seeds = Vec<(String, Vec<u8>)>;

/// Writes every target's seeds under `dir/<target>/`; the number written.
pub fn write_all(dir: &Path) -> Result<usize, String> {
    let scratch = fixture::scratch("seeds")?;
    let key = fixture::key(scratch.path())?;
    let sets: Vec<(&str, Seeds)> = vec![
        ("command_payload", command_payloads()),
        ("command_envelope", command_envelopes(&key)),
        ("manifest", manifests(&key)),
        ("receipt", receipts(&key)),
        ("config", configs()),
        ("policy", policies()),
        ("age", sealed()?),
        ("hq_message", hq_messages(&key)),
    ];
    let mut n = 0;
    for (target, seeds) in sets {
        let d = dir.join(target);
        std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
        for (name, bytes) in seeds {
            let f = d.join(name);
            std::fs::write(&f, bytes).map_err(|e| format!("{}: {e}", f.display()))?;
            n += 1;
        }
    }
    Ok(n)
}

fn at(hours: i64) -> DateTime<Utc> {
    fixture::now() + Duration::hours(hours)
}

fn range() -> Scope {
    Scope::Range {
        cameras: vec!["cam-1".into(), "cam-2".into()],
        from: at(-2),
        to: at(-1),
    }
}

/// A command of every kind, to this agent or to the fleet.
fn commands() -> Vec<Command> {
    let actions = vec![
        Action::HoldPlace {
            hold: "H-17".into(),
            case: "KP 11-2026/88".into(),
            scope: range(),
            until: Some(at(48)),
            offload: true,
        },
        Action::HoldPlace {
            hold: "H-18".into(),
            case: "c".into(),
            scope: Scope::Segments(vec![format!("{AGENT}/cam-1/42")]),
            until: None,
            offload: false,
        },
        Action::HoldRelease {
            hold: "H-17".into(),
        },
        Action::HoldExtend {
            hold: "H-17".into(),
            until: None,
            beyond_cap_until: Some(at(72)),
        },
        Action::RequestOpen {
            request: "DSR-1".into(),
            scope: range(),
            due: None,
        },
        Action::RequestExtend {
            request: "DSR-1".into(),
            due: at(24 * 20),
        },
        Action::RequestClose {
            request: "DSR-1".into(),
        },
        Action::Inventory { scope: range() },
        Action::Restrict {
            restriction: "X-1".into(),
            scope: range(),
            reason: "accuracy contested".into(),
        },
        Action::Unrestrict {
            restriction: "X-1".into(),
        },
        Action::Erase {
            scope: range(),
            request: Some("DSR-1".into()),
        },
        Action::Status,
        Action::Resend {
            receipts_from: Some(1),
            records_from: BTreeMap::from([("cam-1".to_owned(), 4711), ("cam-2".to_owned(), 1)]),
        },
        Action::Offload { scope: range() },
    ];
    actions
        .into_iter()
        .enumerate()
        .map(|(i, action)| Command {
            id: format!("c-2026-{i:04}"),
            issued_at: at(-1),
            expires_at: at(24 * 7),
            target: if i % 5 == 4 {
                Target::Fleet
            } else {
                Target::Agent(AGENT.into())
            },
            issuer: "HQ duty officer".into(),
            action,
        })
        .collect()
}

fn command_payloads() -> Seeds {
    commands()
        .iter()
        .map(|c| {
            (
                format!("{}.json", c.action.kind()),
                command::to_payload(c).into_bytes(),
            )
        })
        .collect()
}

fn command_envelopes(key: &DeviceKey) -> Seeds {
    let mut out: Seeds = commands()
        .iter()
        .map(|c| (format!("{}.env", c.action.kind()), command::sign(key, c)))
        .collect();
    // A bare payload (refused as unsigned) and an expired command.
    if let Some(c) = commands().first() {
        out.push(("bare.json".into(), command::to_payload(c).into_bytes()));
        let mut old = c.clone();
        old.issued_at = at(-24 * 9);
        old.expires_at = at(-24 * 2);
        out.push(("expired.env".into(), command::sign(key, &old)));
    }
    out
}

fn media(seq: u64) -> Media {
    Media {
        file: format!("{seq}.age"),
        container: "video/mp4".into(),
        codec: "h264".into(),
        width: Some(1920),
        height: Some(1080),
        encoding: "passthrough".into(),
        masks: Masks {
            rects: Vec::new(),
            version: manifest::masks_version(&[]),
        },
        ciphertext_sha256: manifest::sha256_hex(b"sealed"),
        ciphertext_bytes: 6,
        recipients: vec![fixture::AGE_RECIPIENT.into()],
        truncated: false,
    }
}

/// A segment, a gap after it, and a docked body camera's recording.
fn manifest_list() -> Vec<Manifest> {
    let base = |seq: u64, record: RecordKind, start: i64, prev: &str| Manifest {
        v: manifest::MANIFEST_VERSION,
        record,
        segment_id: format!("{AGENT}/cam-1/{seq}"),
        agent_id: AGENT.into(),
        camera_id: "cam-1".into(),
        camera_kind: "stationary".into(),
        sequence: seq,
        start: at(start),
        end: at(start + 1),
        duration_ms: 3_600_000,
        clock: SyncState::Synchronised,
        clock_fault: None,
        purpose: json!({"id": "public-order", "title": "Public order"}),
        notice: json!({"controller": "Jekabpils municipality"}),
        policy: PolicyRef {
            id: "lv-jekabpils-2022".into(),
            reference: "J-A1".into(),
        },
        retention: manifest::Retention {
            class: "cctv".into(),
            keep: "14 days".into(),
            delete_after: at(start + 24 * 14),
        },
        media: (record == RecordKind::Segment).then(|| media(seq)),
        gap: (record == RecordKind::Gap).then(|| Gap {
            reason: "source-lost".into(),
        }),
        dock: None,
        prev_manifest_sha256: prev.into(),
        agent_version: sargs_core::VERSION.into(),
        sealed_at: at(start + 1),
    };
    let first = base(1, RecordKind::Segment, -3, manifest::GENESIS);
    let gap = base(
        2,
        RecordKind::Gap,
        -2,
        &manifest::sha256_hex(first.to_payload().as_bytes()),
    );
    let mut docked = base(3, RecordKind::Segment, -1, manifest::GENESIS);
    docked.camera_kind = "body".into();
    docked.dock = Some(Dock {
        camera_serial: "BC-0042".into(),
        officer_id: "officer-7".into(),
        original_name: "DCIM/VID_0001.MP4".into(),
        original_bytes: 6,
        original_sha256: manifest::sha256_hex(b"video!"),
        original_modified: Some(at(-1)),
        recorded_start: Some(at(-1)),
        recorded_duration_ms: Some(3_600_000),
        start_source: "container".into(),
        camera_clock_offset_ms: Some(-1200),
        ingested_at: at(0),
        gateway: "gw-01".into(),
        parses_as_video: true,
        probe_error: None,
    });
    vec![first, gap, docked]
}

/// Payloads by their sequence, and the first once more as its signed
/// envelope (as its file holds it).
fn payload_seeds(key: &DeviceKey, payloads: Vec<(u64, String)>) -> Seeds {
    let mut out: Seeds = payloads
        .iter()
        .map(|(seq, p)| (format!("{seq}.json"), p.clone().into_bytes()))
        .collect();
    if let Some((seq, p)) = payloads.first() {
        out.push((format!("{seq}.env"), key.sign_envelope(p)));
    }
    out
}

fn manifests(key: &DeviceKey) -> Seeds {
    let payloads = manifest_list()
        .iter()
        .map(|m| (m.sequence, m.to_payload()))
        .collect();
    payload_seeds(key, payloads)
}

fn receipt_list() -> Vec<Receipt> {
    manifest_list()
        .iter()
        .filter(|m| m.record == RecordKind::Segment)
        .enumerate()
        .map(|(i, m)| Receipt {
            v: 1,
            record: "deletion".into(),
            sequence: i as u64 + 1,
            agent_id: AGENT.into(),
            segment_id: m.segment_id.clone(),
            camera_id: m.camera_id.clone(),
            segment_start: m.start,
            segment_end: m.end,
            class: m.retention.class.clone(),
            delete_after: m.retention.delete_after,
            manifest_sha256: manifest::sha256_hex(m.to_payload().as_bytes()),
            ciphertext_sha256: manifest::sha256_hex(b"sealed"),
            ciphertext_bytes: 6,
            deleted_at: at(1),
            reason: if i == 0 {
                Reason::RetentionExpired
            } else {
                Reason::Erasure
            },
            command_id: (i != 0).then(|| "c-2026-0010".into()),
            offloaded: None,
            clock: SyncState::Synchronised,
            prev_receipt_sha256: manifest::GENESIS.into(),
        })
        .collect()
}

fn receipts(key: &DeviceKey) -> Seeds {
    let payloads = receipt_list()
        .iter()
        .map(|r| (r.sequence, r.to_payload()))
        .collect();
    payload_seeds(key, payloads)
}

/// A TOML file without its comments and blank lines (the seeds stay small;
/// the fuzzer adds comments of its own).
fn bare(toml: &str) -> Vec<u8> {
    toml.lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .flat_map(|l| [l, "\n"])
        .collect::<String>()
        .into_bytes()
}

fn configs() -> Seeds {
    vec![
        (
            "sargs.toml".into(),
            bare(include_str!("../../deploy/sargs.toml")),
        ),
        ("hq.toml".into(), bare(include_str!("../../deploy/hq.toml"))),
    ]
}

fn policies() -> Seeds {
    vec![(
        "lv-jekabpils-2022.toml".into(),
        bare(include_str!("../../deploy/policy/lv-jekabpils-2022.toml")),
    )]
}

/// Segments sealed by the agent's writer to HQ's test recipient: empty,
/// short, and a longer one cut short inside its second chunk (as a power
/// loss leaves it).
fn sealed() -> Result<Seeds, String> {
    let recipient: sargs_core::seal::Recipient = fixture::AGE_RECIPIENT
        .parse()
        .map_err(|e| format!("recipient: {e:?}"))?;
    let seal = |plain: &[u8]| -> Result<Vec<u8>, String> {
        let mut w = AgeWriter::new(Vec::new(), std::slice::from_ref(&recipient))
            .map_err(|e| e.to_string())?;
        w.write_all(plain).map_err(|e| e.to_string())?;
        let (out, _) = w.finish().map_err(|e| e.to_string())?;
        Ok(out)
    };
    let short: Vec<u8> = (0..200u32).map(|i| (i * 7) as u8).collect();
    let long: Vec<u8> = (0..(65_536 + 300u32)).map(|i| (i % 251) as u8).collect();
    let long = seal(&long)?;
    let cut = long[..long.len() - 200].to_vec();
    Ok(vec![
        ("empty.age".into(), seal(b"")?),
        ("short.age".into(), seal(&short)?),
        ("cut-short.age".into(), cut),
    ])
}

/// What the agent publishes, as the broker hands it to HQ: topic, newline,
/// payload (batches: messages separated by NUL). Record events come signed,
/// and once more with an empty `sig` (the target signs those: see `hq.rs`).
fn hq_messages(key: &DeviceKey) -> Seeds {
    let topic = |kind: &str| format!("{PREFIX}/agents/{AGENT}/{kind}");
    let msg = |topic: &str, payload: &str| format!("{topic}\n{payload}").into_bytes();
    let mut out = vec![
        (
            "status".to_owned(),
            msg(
                &topic("status"),
                &messages::status(AGENT, KEY_B64, true, at(0)),
            ),
        ),
        (
            "telemetry".into(),
            msg(
                &topic("telemetry"),
                &json!({"v": 1, "agent": AGENT, "at": at(0), "cpu_percent": 3.5,
                        "memory": {"used_bytes": 1000, "total_bytes": 4000},
                        "disk": {"total_bytes": 100, "free_bytes": 50}})
                .to_string(),
            ),
        ),
        (
            "response".into(),
            msg(
                &topic("responses"),
                &json!({"v": 1, "command_id": "c-2026-0000", "kind": "hold.place",
                        "agent_id": AGENT, "status": "applied", "at": at(0),
                        "result": {"segments": 3}})
                .to_string(),
            ),
        ),
    ];
    let simple = [
        (
            "hold.applied",
            Event::HoldApplied {
                hold: "H-17".into(),
                command: "c-2026-0000".into(),
            },
        ),
        (
            "camera.down",
            Event::CameraDown {
                camera: "cam-1".into(),
                reason: "no frames for 10 s".into(),
            },
        ),
        (
            "disk.pressure",
            Event::DiskPressure {
                free_bytes: 10,
                floor_bytes: 20,
                message: "below the floor".into(),
            },
        ),
        (
            "command.rejected",
            Event::CommandRejected {
                id: "c-2026-0001".into(),
                code: "expired".into(),
                reason: "expired".into(),
            },
        ),
    ];
    for (name, e) in simple {
        let payload = messages::event(AGENT, &e, at(0)).to_string();
        out.push((name.into(), msg(&topic("events"), &payload)));
    }
    // Record events: signed, and once more with an empty `sig`.
    let mut records: Vec<(String, Event)> = manifest_list()
        .iter()
        .filter_map(|m| {
            let kind = match m.record {
                RecordKind::Gap => "gap.recorded",
                RecordKind::Segment => "segment.sealed",
            };
            Event::committed(m, &key.sign(&m.to_payload()))
                .map(|e| (format!("{kind}.{}", m.sequence), e))
        })
        .collect();
    for r in receipt_list() {
        let envelope = key.sign(&r.to_payload());
        let name = format!("segment.deleted.{}", r.sequence);
        let e = Event::SegmentDeleted(Box::new(sargs::events::Signed {
            fields: r,
            envelope,
            resent: false,
        }));
        records.push((name, e));
    }
    for (name, e) in records {
        let mut v = messages::event(AGENT, &e, at(0));
        out.push((name.clone(), msg(&topic("events"), &v.to_string())));
        v["envelope"]["sig"] = json!("");
        out.push((
            format!("{name}.unsigned"),
            msg(&topic("events"), &v.to_string()),
        ));
    }
    if let Some(c) = commands().first() {
        let signed = String::from_utf8_lossy(&command::sign(key, c)).into_owned();
        out.push((
            "fleet.commands".into(),
            msg(&format!("{PREFIX}/fleet/commands"), signed.trim_end()),
        ));
    }
    // Batches, kept in one transaction: a status, a record, its receipt and
    // a redelivery of the record; and the three records of the chain.
    let named = |names: &[&str]| -> Vec<u8> {
        let parts: Vec<&[u8]> = names
            .iter()
            .filter_map(|n| out.iter().find(|(name, _)| name == n))
            .map(|(_, bytes)| bytes.as_slice())
            .collect();
        parts.join(&0u8)
    };
    let batches = vec![
        (
            "batch.record-receipt".to_owned(),
            named(&[
                "status",
                "segment.sealed.1",
                "segment.deleted.1",
                "segment.sealed.1",
            ]),
        ),
        (
            "batch.chain".to_owned(),
            named(&[
                "segment.sealed.1.unsigned",
                "gap.recorded.2",
                "segment.sealed.3",
            ]),
        ),
    ];
    out.extend(batches);
    out
}
