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
