//! Freeing the local copy after a verified offload: a deletion with a
//! receipt naming the object, never of a protected record.

use chrono::Duration as D;

use super::*;
use sargs_core::retention::receipt::{Reason, StoredObject};

fn object(id: &str) -> StoredObject {
    StoredObject {
        store: "http://127.0.0.1:3900/evidence".into(),
        key: format!("{id}.mp4.age"),
        sha256: "ab".repeat(32),
    }
}

#[test]
fn a_verified_record_is_freed_with_a_receipt_naming_its_object_and_a_held_one_is_kept() {
    let mut f = Fixture::new();
    let t = t0();
    let free = f.seal(0, t, 60);
    let held = f.seal(0, t + D::seconds(60), 60);
    let resp = f.apply(
        Action::HoldPlace {
            hold: "H-1".into(),
            case: "KP 1/2026".into(),
            scope: Scope::Segments(vec![held.clone()]),
            until: None,
            offload: false,
        },
        t + D::minutes(5),
    );
    assert!(resp.applied(), "{resp:?}");
    let now = t + D::minutes(10);
    assert!(f
        .retention
        .free_offloaded("cam-a", 1, &object(&free), now)
        .expect("free"));
    assert!(!f.media_exists(&free), "the verified copy is freed");
    assert!(
        !f.retention
            .free_offloaded("cam-a", 2, &object(&held), now)
            .expect("free"),
        "a held record is kept"
    );
    assert!(f.media_exists(&held));
    // Freed once: a second call changes nothing.
    assert!(!f
        .retention
        .free_offloaded("cam-a", 1, &object(&free), now)
        .expect("free again"));
    let receipts = f.events.take_receipts();
    assert_eq!(receipts.len(), 1, "{receipts:?}");
    assert_eq!(receipts[0].segment_id, free);
    assert_eq!(receipts[0].reason, Reason::Offloaded);
    assert_eq!(receipts[0].offloaded, Some(object(&free)));
    f.audit_ok();
}

fn offload(ids: &[&str]) -> Action {
    Action::Offload {
        scope: Scope::Segments(ids.iter().map(|s| s.to_string()).collect()),
    }
}

/// The records the uploader would take next (no camera offloads all).
fn queue(f: &Fixture) -> Vec<(String, u64)> {
    f.retention
        .offload_pending(&[], 100)
        .expect("pending")
        .into_iter()
        .map(|p| (p.camera, p.seq))
        .collect()
}

/// Without `[offload]` an `offload` command, or a hold that asks for
/// offload, is refused with the reason, and nothing changes.
#[test]
fn without_a_store_offload_is_refused_and_changes_nothing() {
    let mut f = Fixture::new();
    let t = t0();
    let id = f.seal(0, t, 60);
    for action in [
        offload(&[&id]),
        Action::HoldPlace {
            hold: "H-1".into(),
            case: "KP 1/2026".into(),
            scope: Scope::Segments(vec![id.clone()]),
            until: None,
            offload: true,
        },
    ] {
        let r = f.apply(action, t + D::minutes(5));
        assert_eq!(r.status, "rejected", "{r:?}");
        assert_eq!(r.code.as_deref(), Some("refused"));
        let reason = r.reason.unwrap_or_default();
        assert!(reason.contains("[offload]"), "{reason}");
    }
    assert!(queue(&f).is_empty());
    let status = f.retention.status(t + D::minutes(6)).expect("status");
    assert!(status.holds.is_empty(), "the hold was not placed either");
}

/// An `offload` command queues exactly the records it covers; a hold with
/// offload queues what its range covers, records sealed later included; the
/// response counts them; the wanted scopes come back from the journal when
/// the index is lost, whatever the config says by then.
#[test]
fn offload_by_command_and_by_hold_queues_exactly_the_covered_records() {
    let mut f = Fixture::new();
    f.offload_store = true;
    f.restart();
    let t = t0();
    let a1 = f.seal(0, t, 60);
    let a2 = f.seal(0, t + D::seconds(60), 60);
    let _a3 = f.seal(0, t + D::seconds(120), 60);
    let p1 = f.seal(1, t, 60);
    let r = f.apply(offload(&[&a1, &a2]), t + D::minutes(5));
    assert!(r.applied(), "{r:?}");
    assert_eq!(
        r.result,
        serde_json::json!({"covered_records": 2, "queued": 2, "already_offloaded": 0})
    );
    assert_eq!(queue(&f), [("cam-a".into(), 1), ("cam-a".into(), 2)]);
    // A hold over cam-p's next ten minutes: its first record now, the
    // second once sealed.
    let r = f.apply(
        Action::HoldPlace {
            hold: "H-2".into(),
            case: "KP 2/2026".into(),
            scope: Fixture::range(1, t + D::seconds(30), t + D::minutes(10)),
            until: None,
            offload: true,
        },
        t + D::minutes(5),
    );
    assert!(r.applied(), "{r:?}");
    assert_eq!(r.result["offload"]["queued"], 1, "{r:?}");
    assert_eq!(p1, format!("{AGENT}/cam-p/1"));
    let _p2 = f.seal(1, t + D::seconds(60), 60);
    // After a pause: the gap record between (3) overlaps the range, the
    // segment after it (4) does not.
    let p4 = f.seal(1, t + D::minutes(20), 60);
    assert_eq!(p4, format!("{AGENT}/cam-p/4"));
    let want = vec![
        ("cam-a".to_owned(), 1),
        ("cam-p".to_owned(), 1),
        ("cam-a".to_owned(), 2),
        ("cam-p".to_owned(), 2),
        ("cam-p".to_owned(), 3),
    ];
    let sorted = |mut v: Vec<(String, u64)>| {
        v.sort();
        v
    };
    assert_eq!(sorted(queue(&f)), sorted(want.clone()));
    // One goes; asking again counts it as done.
    let o = sargs_core::retention::offloads::Offloaded {
        store: "http://127.0.0.1:3900/evidence".into(),
        manifest_key: format!("{AGENT}/cam-a/0000000001.json"),
        manifest_sha256: [1; 32],
        media: None,
        bytes: 0,
        verified_ms: 0,
    };
    f.retention.mark_offloaded("cam-a", 1, &o).expect("mark");
    let r = f.apply(offload(&[&a1, &a2]), t + D::minutes(6));
    assert_eq!(
        r.result,
        serde_json::json!({"covered_records": 2, "queued": 1, "already_offloaded": 1})
    );
    let inv = f.apply(
        Action::Inventory {
            scope: Fixture::range(0, t, t + D::minutes(3)),
        },
        t + D::minutes(6),
    );
    let offloaded: Vec<bool> = inv.result["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| r["offloaded"].as_bool().expect("offloaded"))
        .collect();
    assert_eq!(offloaded, [true, false, false]);
    // The index lost, the store taken out of the config: the journal still
    // says what HQ asked for (the offload rows went with the index).
    f.offload_store = false;
    for name in ["index.sqlite", "index.sqlite-wal", "index.sqlite-shm"] {
        let _ = std::fs::remove_file(f.data_dir().join(name));
    }
    f.restart();
    assert_eq!(sorted(queue(&f)), sorted(want));
    let status = f.retention.status(t + D::minutes(7)).expect("status");
    assert_eq!(status.holds, ["H-2"]);
}
