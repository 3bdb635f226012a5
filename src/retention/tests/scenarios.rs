//! One scenario per rule, each checked end to end on disk.

use chrono::Duration as D;
use std::time::Duration;

use super::*;
use sargs_core::retention::receipt::{verify_chain, Reason};

#[test]
fn due_segments_are_deleted_with_chained_receipts_and_the_rest_kept() {
    let mut f = Fixture::new();
    let t = t0();
    let a1 = f.seal(0, t, 60);
    let a2 = f.seal(0, t + D::seconds(60), 60);
    let p1 = f.seal(1, t, 60);
    // Day 29: nothing is due yet.
    let r = f.sweep(t + day(29));
    assert_eq!((r.expired, r.paused.clone()), (0, None));
    // 30 days after start (CCTV deadline) + one sweep: both CCTV segments go.
    let r = f.sweep(t + day(30) + D::seconds(120));
    assert_eq!(r.expired, 2);
    assert!(!f.media_exists(&a1) && !f.media_exists(&a2));
    assert!(f.media_exists(&p1), "municipal police keeps 3 months");
    let chain = verify_chain(&f.data_dir().join("receipts"), &f.key.public_key()).expect("chain");
    assert!(chain.problems.is_empty(), "{:?}", chain.problems);
    assert_eq!(chain.receipts, 2);
    assert!(chain.deleted.contains(&a1) && chain.deleted.contains(&a2));
    let events = f.events.take();
    let deleted: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::SegmentDeleted(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(deleted.len(), 2);
    assert!(deleted.iter().all(|r| r.reason == Reason::RetentionExpired));
    // 31 Jan + 3 months = 30 Apr: the police deadline is calendar months.
    let r = f.sweep(t + day(100));
    assert_eq!(r.expired, 1);
    f.audit_ok();
}

#[test]
fn a_hold_keeps_segments_past_their_deadline_until_released() {
    let mut f = Fixture::new();
    let t = t0();
    let held = f.seal(0, t, 60);
    let free = f.seal(0, t + D::seconds(60), 60);
    let resp = f.apply(
        Action::HoldPlace {
            hold: "H-1".into(),
            case: "KP 1/2026".into(),
            scope: Scope::Segments(vec![held.clone()]),
            until: None,
            offload: false,
        },
        t + day(1),
    );
    assert!(resp.applied(), "{resp:?}");
    assert_eq!(resp.result["covered_segments"], 1);
    f.sweep(t + day(31));
    assert!(f.media_exists(&held) && !f.media_exists(&free));
    // Survives a restart (the journal and the index are durable).
    f.restart();
    f.sweep(t + day(40));
    assert!(f.media_exists(&held));
    let resp = f.apply(Action::HoldRelease { hold: "H-1".into() }, t + day(41));
    assert!(resp.applied(), "{resp:?}");
    f.sweep(t + day(41) + D::seconds(60));
    assert!(
        !f.media_exists(&held),
        "deleted on the first sweep after release"
    );
    f.audit_ok();
}

#[test]
fn applying_the_same_command_twice_changes_nothing() {
    let mut f = Fixture::new();
    let t = t0();
    let id = f.seal(0, t, 60);
    let cmd = f.command(
        Action::HoldPlace {
            hold: "H-1".into(),
            case: "c".into(),
            scope: Scope::Segments(vec![id]),
            until: None,
            offload: false,
        },
        t,
    );
    let bytes = f.signed(&cmd);
    let first = f.retention.apply(&bytes, t).expect("apply");
    let status_before = f.retention.status(t).expect("status");
    let second = f.retention.apply(&bytes, t).expect("apply");
    assert!(first.applied());
    assert_eq!(second.code.as_deref(), Some("replayed"));
    assert_eq!(
        second.result, first.result,
        "the original outcome is repeated"
    );
    assert_eq!(f.retention.status(t).expect("status"), status_before);
    // Still a replay after a restart.
    f.restart();
    let third = f.retention.apply(&bytes, t).expect("apply");
    assert_eq!(third.code.as_deref(), Some("replayed"));
}

#[test]
fn an_erasure_applied_again_answers_its_original_outcome() {
    // An erasure journaled and done whose answer was lost (a crash before
    // the inbox's `.response`, or HQ repeating it) is answered as a replay,
    // which repeats what it deleted and refused — not an empty result.
    let mut f = Fixture::new();
    let t = t0();
    let held = f.seal(0, t, 60);
    let asked = f.seal(0, t + D::seconds(60), 60);
    let hold = Action::HoldPlace {
        hold: "H".into(),
        case: "c".into(),
        scope: Scope::Segments(vec![held.clone()]),
        until: None,
        offload: false,
    };
    assert!(f.apply(hold, t).applied());
    let request = Action::RequestOpen {
        request: "R".into(),
        scope: Scope::Segments(vec![asked.clone()]),
        due: None,
    };
    assert!(f.apply(request, t).applied());
    let cmd = f.command(
        Action::Erase {
            scope: Fixture::range(0, t, t + D::minutes(3)),
            request: Some("R".into()),
        },
        t,
    );
    let bytes = f.signed(&cmd);
    let first = f.retention.apply(&bytes, t).expect("apply");
    assert!(first.applied(), "{first:?}");
    assert_eq!(first.result["deleted"].as_array().map(Vec::len), Some(1));
    assert_eq!(first.result["refused"][0]["segment_id"], held.as_str());
    f.restart();
    let again = f.retention.apply(&bytes, t).expect("apply");
    assert_eq!(again.code.as_deref(), Some("replayed"));
    assert_eq!(
        again.result, first.result,
        "the original outcome is repeated"
    );
    assert!(f.media_exists(&held) && !f.media_exists(&asked));
}

#[test]
fn class_cap_ends_a_hold_unless_extended_and_hq_is_warned_first() {
    let mut f = Fixture::new();
    let t = t0();
    let a = f.seal(1, t, 60);
    let b = f.seal(1, t + D::seconds(60), 60);
    let scope = Fixture::range(1, t, t + D::minutes(5));
    assert!(f
        .apply(
            Action::HoldPlace {
                hold: "H-cap".into(),
                case: "case".into(),
                scope,
                until: None,
                offload: false,
            },
            t + day(1)
        )
        .applied());
    let cap = t + D::days(365 * 3 + 1); // 3 calendar years (one leap day at most)
    f.events.take();
    let r = f.sweep(cap - day(40));
    assert_eq!(r.cap_warnings, 0);
    let r = f.sweep(cap - day(25));
    assert_eq!(r.cap_warnings, 1, "warned within 30 days of the cap");
    assert!(f
        .events
        .take()
        .iter()
        .any(|e| matches!(e, Event::HoldCapWarning { hold, segments: 2, .. } if hold == "H-cap")));
    assert_eq!(f.sweep(cap - day(20)).cap_warnings, 0, "warned once");
    // A signed extension beyond the cap keeps `a`… then the cap passes.
    assert!(f
        .apply(
            Action::HoldExtend {
                hold: "H-cap".into(),
                until: None,
                beyond_cap_until: Some(cap + day(60)),
            },
            cap - day(10)
        )
        .applied());
    f.sweep(cap + day(2));
    assert!(
        f.media_exists(&a) && f.media_exists(&b),
        "extended past the cap"
    );
    f.sweep(cap + day(61));
    assert!(
        !f.media_exists(&a) && !f.media_exists(&b),
        "past the extension"
    );
    f.audit_ok();
}

#[test]
fn without_extension_the_cap_releases_the_hold() {
    let mut f = Fixture::new();
    let t = t0();
    let a = f.seal(1, t, 60);
    assert!(f
        .apply(
            Action::HoldPlace {
                hold: "H".into(),
                case: "c".into(),
                scope: Scope::Segments(vec![a.clone()]),
                until: None,
                offload: false,
            },
            t
        )
        .applied());
    f.sweep(t + D::days(365 * 3 - 1));
    assert!(f.media_exists(&a));
    f.sweep(t + D::days(365 * 3 + 2));
    assert!(
        !f.media_exists(&a),
        "3 years from recording is the most a hold keeps it"
    );
}

#[test]
fn a_request_keeps_segments_one_month_by_default_extendable_to_three() {
    let mut f = Fixture::new();
    let t = t0();
    let a = f.seal(0, t, 60);
    let open = t + day(20);
    let resp = f.apply(
        Action::RequestOpen {
            request: "DSR-1".into(),
            scope: Fixture::range(0, t, t + D::minutes(1)),
            due: None,
        },
        open,
    );
    assert!(resp.applied(), "{resp:?}");
    let refused = f.apply(
        Action::RequestExtend {
            request: "DSR-1".into(),
            due: open + D::days(100),
        },
        open + day(1),
    );
    assert_eq!(refused.code.as_deref(), Some("refused"), "{refused:?}");
    f.sweep(open + day(25));
    assert!(f.media_exists(&a), "within a month of opening");
    assert!(f
        .apply(
            Action::RequestExtend {
                request: "DSR-1".into(),
                due: open + day(80),
            },
            open + day(26)
        )
        .applied());
    f.sweep(open + day(70));
    assert!(f.media_exists(&a));
    f.sweep(open + day(81));
    assert!(!f.media_exists(&a), "expired by itself");
}

#[test]
fn erasure_deletes_with_receipts_but_never_held_data() {
    let mut f = Fixture::new();
    let t = t0();
    let held = f.seal(0, t, 60);
    let plain = f.seal(0, t + D::seconds(60), 60);
    let asked = f.seal(0, t + D::seconds(120), 60);
    let now = t + day(2);
    f.apply(
        Action::HoldPlace {
            hold: "H".into(),
            case: "c".into(),
            scope: Scope::Segments(vec![held.clone()]),
            until: None,
            offload: false,
        },
        now,
    );
    f.apply(
        Action::RequestOpen {
            request: "R".into(),
            scope: Scope::Segments(vec![asked.clone()]),
            due: None,
        },
        now,
    );
    let resp = f.apply(
        Action::Erase {
            scope: Fixture::range(0, t, t + D::minutes(3)),
            request: Some("R".into()),
        },
        now + D::hours(1),
    );
    assert!(resp.applied(), "{resp:?}");
    assert_eq!(resp.result["deleted"].as_array().map(Vec::len), Some(2));
    let refused = &resp.result["refused"];
    assert_eq!(refused[0]["segment_id"], held.as_str());
    assert_eq!(refused[0]["protected_by"], "legal hold H");
    assert!(f.media_exists(&held));
    assert!(!f.media_exists(&plain) && !f.media_exists(&asked));
    let chain = verify_chain(&f.data_dir().join("receipts"), &f.key.public_key()).expect("chain");
    assert_eq!(chain.receipts, 2);
    f.audit_ok();
}

#[test]
fn a_restriction_keeps_and_marks_until_lifted_and_inventory_shows_it() {
    let mut f = Fixture::new();
    let t = t0();
    let a = f.seal(0, t, 60);
    let gone = f.seal(0, t + D::seconds(60), 60);
    f.apply(
        Action::Restrict {
            restriction: "X".into(),
            scope: Scope::Segments(vec![a.clone()]),
            reason: "accuracy contested".into(),
        },
        t,
    );
    f.sweep(t + day(31));
    let inv = f.apply(
        Action::Inventory {
            scope: Fixture::range(0, t - D::hours(1), t + D::hours(1)),
        },
        t + day(31),
    );
    let recs = inv.result["records"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let by_id = |id: &str| {
        recs.iter()
            .find(|r| r["segment_id"] == id)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(by_id(&a)["state"], "present");
    assert_eq!(by_id(&a)["restricted"], true);
    assert_eq!(by_id(&a)["protected_by"], "restriction X");
    assert_eq!(by_id(&gone)["state"], "deleted");
    assert_eq!(by_id(&gone)["reason"], "retention-expired");
    f.apply(
        Action::Unrestrict {
            restriction: "X".into(),
        },
        t + day(32),
    );
    f.sweep(t + day(32) + D::seconds(60));
    assert!(!f.media_exists(&a));
}

#[test]
fn commands_that_make_no_sense_are_refused_and_change_nothing() {
    let mut f = Fixture::new();
    let t = t0();
    let before = f.retention.status(t).expect("status");
    for action in [
        Action::HoldRelease {
            hold: "nope".into(),
        },
        Action::RequestClose {
            request: "nope".into(),
        },
        Action::Unrestrict {
            restriction: "nope".into(),
        },
        Action::HoldPlace {
            hold: "H".into(),
            case: "c".into(),
            scope: Scope::Segments(vec!["gw-t/cam-a/1".into()]),
            until: Some(t - day(1)),
            offload: false,
        },
    ] {
        let r = f.apply(action, t);
        assert_eq!(r.code.as_deref(), Some("refused"), "{r:?}");
        assert!(r.reason.is_some());
    }
    assert_eq!(f.retention.status(t).expect("status"), before);
}

#[test]
fn an_untrusted_clock_pauses_deletions_and_never_mass_deletes() {
    let mut f = Fixture::new();
    let t = t0();
    let ids: Vec<String> = (0..5).map(|i| f.seal(0, t + D::minutes(i), 60)).collect();
    f.sweep(t + D::minutes(10));
    // The clock jumps one year ahead: nothing goes.
    let r = f.sweep_at(
        t + day(365),
        Duration::from_secs(60),
        SyncState::Synchronised,
    );
    assert!(r.paused.is_some(), "{r:?}");
    assert_eq!(r.expired, 0);
    assert!(ids.iter().all(|id| f.media_exists(id)));
    assert!(f
        .events
        .take()
        .iter()
        .any(|e| matches!(e, Event::ClockProblem { .. })));
    // Not synchronised afterwards: still paused.
    let r = f.sweep_at(
        t + day(365) + D::minutes(5),
        Duration::from_secs(300),
        SyncState::Unsynchronised,
    );
    assert!(r.paused.is_some());
    // Synchronised and steady for the settling period: deletions resume.
    let r = f.sweep_at(
        t + day(365) + D::minutes(10),
        Duration::from_secs(300),
        SyncState::Synchronised,
    );
    assert_eq!(r.paused, None);
    assert_eq!(r.expired, 5);
}

#[test]
fn disk_pressure_deletes_earliest_deadline_first_never_held_then_alarms() {
    let mut f = Fixture::new();
    let t = t0();
    // Police (3 months) first, then CCTV (30 days): CCTV deadlines come first.
    let p = f.seal(1, t, 60);
    let a: Vec<String> = (0..3).map(|i| f.seal(0, t + D::minutes(i), 60)).collect();
    f.apply(
        Action::HoldPlace {
            hold: "H".into(),
            case: "c".into(),
            scope: Scope::Segments(vec![a[0].clone()]),
            until: None,
            offload: false,
        },
        t,
    );
    f.sweep(t + D::minutes(10));
    // Room for two more media files above the 1 MiB floor.
    let media = super::media_bytes(&f.data_dir());
    f.capacity.store((1 << 20) + media - 1, Ordering::SeqCst);
    let r = f.sweep(t + D::minutes(20));
    assert_eq!(r.evicted, 1, "{r:?}");
    assert!(!f.media_exists(&a[1]) && f.media_exists(&a[2]) && f.media_exists(&p));
    // Nothing but the held segment left would do: everything else goes, then the alarm.
    f.capacity.store(1 << 20, Ordering::SeqCst);
    let r = f.sweep(t + D::minutes(30));
    assert_eq!(r.evicted, 2);
    assert!(r.pressure.is_some());
    assert!(f.media_exists(&a[0]), "held data is never touched");
    let events = f.events.take();
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::DiskPressure { .. })));
    let receipts: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::SegmentDeleted(r) => Some(r.reason),
            _ => None,
        })
        .collect();
    assert!(receipts.iter().all(|r| *r == Reason::DiskPressure));
    f.audit_ok();
}

#[test]
fn a_clock_that_jumps_ahead_never_makes_a_protection_look_expired() {
    let mut f = Fixture::new_with(false);
    let t = t0();
    let asked = f.seal(0, t, 60);
    let held = f.seal(0, t + D::seconds(60), 60);
    f.seal(0, t + D::seconds(120), 60);
    f.apply(
        Action::RequestOpen {
            request: "R".into(),
            scope: Scope::Segments(vec![asked.clone()]),
            due: None,
        },
        t,
    );
    f.apply(
        Action::HoldPlace {
            hold: "H".into(),
            case: "c".into(),
            scope: Scope::Segments(vec![held.clone()]),
            until: Some(t + day(10)),
            offload: false,
        },
        t,
    );
    assert_eq!(f.sweep(t + D::minutes(5)).paused, None);
    // The clock leaps two months ahead; before any sweep notices, an erasure
    // arrives stamped with the leapt clock.
    let leapt = t + day(60);
    let resp = f.apply(
        Action::Erase {
            scope: Fixture::range(0, t - D::hours(1), t + D::hours(1)),
            request: None,
        },
        leapt,
    );
    assert!(resp.applied(), "{resp:?}");
    assert!(
        f.media_exists(&asked),
        "the request still protects: {resp:?}"
    );
    assert!(
        f.media_exists(&held),
        "the hold has not truly ended: {resp:?}"
    );
    // Disk pressure under the leapt, unsynchronised clock: the same.
    f.capacity.store(1 << 20, Ordering::SeqCst);
    let r = f.sweep_at(leapt, Duration::from_secs(60), SyncState::Unsynchronised);
    assert!(r.paused.is_some());
    assert!(f.media_exists(&asked) && f.media_exists(&held), "{r:?}");
    f.audit_ok();
}

#[test]
fn a_record_sealed_while_the_engine_was_busy_is_deleted_on_time_though_later_ones_were_indexed() {
    let mut f = Fixture::new();
    let t = t0();
    // A long sweep holds the engine while camera 0 seals its first segment...
    let engine = f.retention.clone();
    let busy = engine.lock();
    let first = f.seal(0, t, 60);
    drop(busy);
    // ...and the next one is sealed with the engine free again.
    let second = f.seal(0, t + chrono::Duration::seconds(60), 60);
    let r = f.sweep(t + day(31));
    assert!(
        !f.media_exists(&first) && !f.media_exists(&second),
        "both CCTV segments are deleted after 30 days: {r:?}"
    );
    assert_eq!(r.expired, 2, "{r:?}");
}
