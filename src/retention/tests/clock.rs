//! Records sealed with a clock fault: not deleted by the deadline their
//! impossible times state, deleted by one counted from the trusted clock.

use chrono::Duration as D;

use super::*;
use sargs_core::retention::receipt::Reason;
use sargs_core::seal::manifest::{ClockFault, Manifest};

fn manifest(f: &Fixture, cam: usize, seq: u64) -> Manifest {
    let path = f
        .data_dir()
        .join("cameras")
        .join(CAMS[cam])
        .join(format!("{seq:010}.json"));
    let bytes = std::fs::read(path).expect("record");
    let env =
        sargs_core::seal::sign::Envelope::open(&bytes, Some(&f.key.public_key())).expect("signed");
    serde_json::from_str(&env.payload).expect("manifest")
}

#[test]
fn a_record_stamped_by_a_clock_that_went_back_is_kept_a_full_period_from_the_trusted_clock() {
    let mut f = Fixture::new();
    let t = t0();
    let fresh = f.seal(0, t, 60);
    // The clock went 40 days back (a board that lost its time): the next
    // record starts before the previous one ends, and its stated deadline
    // (start + 30 days) is already ten days past on the true clock.
    let back = t - day(40);
    let stepped = f.seal(0, back + D::minutes(1), 60);
    let m = manifest(&f, 0, 2);
    assert_eq!(m.clock_fault, Some(ClockFault::Stepped), "{m:?}");
    assert!(m.retention.delete_after < t, "stated deadline already past");
    assert_eq!(manifest(&f, 0, 1).clock_fault, None);
    // The chain still verifies: the flag explains the step back.
    f.audit_ok();
    // The first trusted sweep deletes nothing: the flagged record's
    // deadline is counted from now.
    let r = f.sweep(t + D::minutes(5));
    assert_eq!((r.paused.as_deref(), r.expired), (None, 0), "{r:?}");
    assert!(f.media_exists(&stepped) && f.media_exists(&fresh));
    let r = f.sweep(t + day(30));
    assert_eq!(r.expired, 1, "the unflagged record, on its own deadline");
    assert!(f.media_exists(&stepped) && !f.media_exists(&fresh));
    // Thirty days after the trusted sweep that saw it, it goes, with a
    // receipt naming the deadline the agent kept.
    f.events.take();
    let r = f.sweep(t + D::minutes(5) + day(30));
    assert_eq!(r.expired, 1, "{r:?}");
    assert!(!f.media_exists(&stepped));
    let receipts: Vec<_> = f
        .events
        .take()
        .into_iter()
        .filter_map(|e| match e {
            Event::SegmentDeleted(r) => Some(r.fields),
            _ => None,
        })
        .collect();
    let [last] = &receipts[..] else {
        panic!("one receipt: {receipts:?}")
    };
    assert_eq!(last.segment_id, stepped);
    assert_eq!(last.reason, Reason::RetentionExpired);
    assert_eq!(last.delete_after, t + D::minutes(5) + day(30));
    f.audit_ok();
}

#[test]
fn status_and_inventory_say_a_pending_deadline_is_pending_not_a_date() {
    let mut f = Fixture::new();
    let t = t0();
    f.seal(0, t, 60);
    let stepped = f.seal(0, t - day(40), 60);
    // No trusted sweep yet: the unflagged record is past its deadline, the
    // flagged one waits for the clock.
    let st = f.retention.status(t + day(31)).expect("status");
    assert_eq!((st.next_deletion, st.deadline_pending), (None, 1), "{st:?}");
    let text = st.to_string();
    let json = serde_json::to_string(&st).expect("json");
    for shown in [&text, &json] {
        assert!(!shown.contains("9999"), "{shown}");
    }
    assert!(
        text.contains(
            "1 segment(s) sealed with a clock fault: deadline pending until the clock is trusted"
        ),
        "{text}"
    );
    let inv = f
        .retention
        .inventory(&Scope::Segments(vec![stepped.clone()]), t + day(31))
        .expect("inventory");
    let rec = &inv["records"][0];
    assert_eq!(rec["segment_id"], stepped.as_str(), "{inv}");
    assert_eq!(
        (&rec["delete_after"], &rec["deadline_pending"]),
        (&serde_json::Value::Null, &serde_json::Value::Bool(true)),
        "{inv}"
    );
    // The trusted sweep gives it its deadline: a date again.
    let at = t + day(31);
    f.sweep(at);
    let st = f.retention.status(at).expect("status");
    assert_eq!(
        (st.next_deletion, st.deadline_pending),
        (Some(at + day(30)), 0)
    );
    let inv = f
        .retention
        .inventory(&Scope::Segments(vec![stepped]), at)
        .expect("inventory");
    assert_eq!(inv["records"][0]["deadline_pending"], false, "{inv}");
    assert_eq!(
        inv["records"][0]["delete_after"],
        serde_json::to_value(at + day(30)).expect("json")
    );
}

#[test]
fn a_hold_on_a_record_stamped_1970_keeps_it_to_its_cap_counted_from_the_trusted_clock() {
    // An unsynchronised clock is not trusted: the first sweeps are paused.
    let mut f = Fixture::new_with(false);
    let t = t0();
    // Municipal police: 3 months, holds capped at 3 years from the start.
    f.seal(1, t, 60);
    let epoch = chrono::DateTime::UNIX_EPOCH;
    let old = f.seal(1, epoch, 60);
    let m = manifest(&f, 1, 2);
    assert_eq!(m.clock_fault, Some(ClockFault::Stepped), "{m:?}");
    f.apply(
        Action::HoldPlace {
            hold: "H".into(),
            case: "c".into(),
            scope: Scope::Segments(vec![old.clone()]),
            until: None,
            offload: false,
        },
        t,
    );
    // Before any trusted sweep, disk pressure must not evict it: the
    // hold protects it (its cap is pending, not 1973).
    f.capacity.store(0, std::sync::atomic::Ordering::SeqCst);
    let r = f.sweep_at(t, Duration::from_secs(1), SyncState::Unsynchronised);
    assert!(r.paused.is_some(), "{r:?}");
    assert!(f.media_exists(&old), "evicted under pressure: {r:?}");
    f.capacity
        .store(u64::MAX / 2, std::sync::atomic::Ordering::SeqCst);
    f.last_wall = Some(t);
    let trusted = t + D::minutes(5);
    let r = f.sweep(trusted);
    assert_eq!(r.paused, None, "{r:?}");
    // Past its period (3 months from the trusted sweep): kept by the hold.
    let r = f.sweep(trusted + day(100));
    assert!(f.media_exists(&old), "deleted past a 1970 cap: {r:?}");
    // Warned a month before the cap, counted from the trusted sweep.
    let cap = trusted
        .checked_add_months(chrono::Months::new(36))
        .expect("cap");
    let r = f.sweep(cap - day(20));
    assert_eq!(r.cap_warnings, 1, "{r:?}");
    assert!(f.media_exists(&old));
    // Past the cap the hold no longer protects it.
    let r = f.sweep(cap + day(1));
    assert!(!f.media_exists(&old), "{r:?}");
    f.audit_ok();
}
