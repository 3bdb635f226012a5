//! The agent's messages: `segment.sealed` events made and signed as the
//! agent makes them, the rows the collector writes for each, and a record's
//! and a receipt's envelope as the ledger stores them.

use std::path::Path;

use chrono::{DateTime, Utc};
use sargs_core::retention::receipt::{Reason, Receipt};
use sargs_core::seal::manifest::{self, Manifest, Media, PolicyRef, RecordKind, Retention};
use sargs_core::seal::sign::DeviceKey;

pub const AGENT: &str = "bench-gw";
pub const TOPIC: &str = "sargs/agents/bench-gw/events";
const RECIPIENT: &str = "age19svl7cy7l5xmupd7mm4ez4mr6h9guwjkdy6kj7rj4rc8lw5gq9ysccrn9h";

/// The agent's key and what its manifests say.
pub struct Fleet {
    pub key: DeviceKey,
    purpose: serde_json::Value,
    notice: serde_json::Value,
    policy: PolicyRef,
}

impl Fleet {
    pub fn new() -> Fleet {
        let policy = sargs_core::policy::Policy::from_str(
            sargs::demo::POLICY_PRESET,
            Path::new("lv-jekabpils-2022.toml"),
        )
        .expect("policy preset");
        Fleet {
            key: DeviceKey::generate().expect("device key"),
            purpose: serde_json::to_value(policy.purpose("property-protection").expect("purpose"))
                .expect("json"),
            notice: serde_json::to_value(&policy.controller).expect("json"),
            policy: PolicyRef {
                id: policy.id.clone(),
                reference: policy.reference.clone(),
            },
        }
    }

    /// Record `seq` of `camera`, as the agent's camera log makes it.
    fn manifest(&self, camera: &str, seq: u64, start: DateTime<Utc>, prev: &str) -> Manifest {
        let end = start + chrono::Duration::minutes(1);
        let id = format!("{AGENT}/{camera}/{seq}");
        Manifest {
            v: manifest::MANIFEST_VERSION,
            record: RecordKind::Segment,
            segment_id: id.clone(),
            agent_id: AGENT.into(),
            camera_id: camera.into(),
            camera_kind: "stationary".into(),
            sequence: seq,
            start,
            end,
            duration_ms: 60_000,
            clock: sargs_core::clock::SyncState::Synchronised,
            clock_fault: None,
            purpose: self.purpose.clone(),
            notice: self.notice.clone(),
            policy: self.policy.clone(),
            retention: Retention {
                class: "cctv".into(),
                keep: "30 days".into(),
                delete_after: start + chrono::Duration::days(30),
            },
            media: Some(Media {
                file: format!("{seq:010}.mp4.age"),
                container: "video/mp4".into(),
                codec: "h264".into(),
                width: Some(1920),
                height: Some(1080),
                encoding: "passthrough".into(),
                masks: manifest::Masks {
                    rects: Vec::new(),
                    version: manifest::masks_version(&[]),
                },
                ciphertext_sha256: manifest::sha256_hex(id.as_bytes()),
                ciphertext_bytes: 30_000_000 + seq % 100_000,
                recipients: vec![RECIPIENT.into()],
                truncated: false,
            }),
            gap: None,
            dock: None,
            prev_manifest_sha256: prev.into(),
            agent_version: sargs::VERSION.into(),
            sealed_at: end + chrono::Duration::milliseconds(350),
        }
    }

    /// `n` `segment.sealed` events, message `i` being record `i / C + 1` of
    /// camera `cam-{i % C}`: every camera a chain of one-minute segments
    /// whose last one ended a minute ago.
    pub fn events(&self, n: usize, cameras: usize) -> Vec<Vec<u8>> {
        self.events_and_rows(n, cameras).0
    }

    /// The events, and the rows the collector writes for each (the value
    /// lists of its `INSERT`s into `records` and `messages`, and the id).
    pub fn events_and_rows(&self, n: usize, cameras: usize) -> (Vec<Vec<u8>>, Vec<Rows>) {
        let per_camera = n.div_ceil(cameras) as i64;
        let now = Utc::now();
        let first = now - chrono::Duration::minutes(per_camera + 1);
        let mut prev = vec![manifest::GENESIS.to_owned(); cameras];
        let q = |s: &str| format!("'{}'", s.replace('\'', "''"));
        (0..n)
            .map(|i| {
                let (c, seq) = (i % cameras, (i / cameras) as u64 + 1);
                let start = first + chrono::Duration::minutes(seq as i64 - 1);
                let m = self.manifest(&format!("cam-{c}"), seq, start, &prev[c]);
                let payload = m.to_payload();
                let sha = manifest::sha256_hex(payload.as_bytes());
                let env = self.key.sign(&payload);
                let e = sargs::events::Event::committed(&m, &env).expect("segment event");
                let text = sargs::hq::messages::event(AGENT, &e, m.sealed_at).to_string();
                let id = sargs_hq::service::ingest::message_id(TOPIC, text.as_bytes());
                let media = m.media.as_ref().expect("media");
                let ms = |t: DateTime<Utc>| t.timestamp_millis();
                let rows = Rows {
                    id: q(&id),
                    record: format!(
                        "({}, {}, {seq}, {}, 'segment', {}, {}, 'cctv', {}, {}, {}, {}, {}, 0, NULL, {}, {})",
                        q(AGENT),
                        q(&m.camera_id),
                        q(&m.segment_id),
                        ms(m.start),
                        ms(m.end),
                        ms(m.retention.delete_after),
                        q(&sha),
                        q(&prev[c]),
                        q(&media.ciphertext_sha256),
                        media.ciphertext_bytes,
                        q(&serde_json::to_string(&env).expect("json")),
                        ms(now)
                    ),
                    message: format!(
                        "({}, {}, 'events', 'segment.sealed', {}, {}, {})",
                        q(&id),
                        q(AGENT),
                        ms(m.sealed_at),
                        ms(now),
                        q(&text)
                    ),
                };
                prev[c] = sha;
                (text.into_bytes(), rows)
            })
            .unzip()
    }

    /// A record's and a receipt's envelope as `records.envelope` and
    /// `receipts.envelope` keep them (compact JSON of the envelope).
    pub fn stored_envelopes(&self) -> (String, String) {
        let start = Utc::now() - chrono::Duration::days(40);
        let m = self.manifest("cam-0", 4711, start, manifest::GENESIS);
        let record = serde_json::to_string(&self.key.sign(&m.to_payload())).expect("json");
        let r = Receipt {
            v: 1,
            record: "deletion-receipt".into(),
            sequence: 4711,
            agent_id: AGENT.into(),
            segment_id: m.segment_id.clone(),
            camera_id: m.camera_id.clone(),
            segment_start: m.start,
            segment_end: m.end,
            class: "cctv".into(),
            delete_after: m.retention.delete_after,
            manifest_sha256: manifest::sha256_hex(m.to_payload().as_bytes()),
            ciphertext_sha256: m.media.as_ref().expect("media").ciphertext_sha256.clone(),
            ciphertext_bytes: 30_000_000,
            deleted_at: m.retention.delete_after + chrono::Duration::seconds(31),
            reason: Reason::RetentionExpired,
            command_id: None,
            offloaded: None,
            clock: sargs_core::clock::SyncState::Synchronised,
            prev_receipt_sha256: manifest::GENESIS.into(),
        };
        let receipt = serde_json::to_string(&self.key.sign(&r.to_payload())).expect("json");
        (record, receipt)
    }
}

/// What the collector writes for one message, as SQL literals.
#[derive(Clone)]
pub struct Rows {
    pub id: String,
    pub record: String,
    pub message: String,
}

/// The columns of [`Rows::record`] and [`Rows::message`].
pub const RECORD_COLUMNS: &str =
    "agent, camera, sequence, segment_id, kind, start_ms, end_ms, class, \
     delete_after_ms, manifest_sha256, prev_manifest_sha256, ciphertext_sha256, bytes, truncated, \
     gap_reason, envelope, received_at";
pub const MESSAGE_COLUMNS: &str = "id, agent, topic_kind, event, at, received_at, payload";
