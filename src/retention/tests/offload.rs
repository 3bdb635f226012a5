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
