//! `resend`: receipts and records published again from the files, each with
//! its envelope exactly as its file holds it; bounded, resumable, and honest
//! about files that are gone or do not verify.

use std::collections::BTreeMap;

use chrono::Duration as D;
use serde_json::json;

use super::*;
use sargs_core::seal::sign::Envelope;

/// Camera `cam-a`: segments 1, 2, a gap 3 (nothing recorded for 8 minutes),
/// segment 4; all three segments deleted by a sweep 31 days later
/// (receipts 1–3). Returns the time of that sweep.
fn chain_with_receipts(f: &mut Fixture) -> chrono::DateTime<Utc> {
    let t = t0();
    f.seal(0, t, 60);
    f.seal(0, t + D::seconds(60), 60);
    f.seal(0, t + D::seconds(600), 60);
    let later = t + day(31);
    assert_eq!(f.sweep(later).expired, 3, "every segment deleted");
    f.events.take();
    later
}

fn cameras(list: &[(&str, u64)]) -> BTreeMap<String, u64> {
    list.iter().map(|(c, n)| ((*c).to_owned(), *n)).collect()
}

/// What each event is: (kind, sequence), checking its envelope against the
/// file it came from and the device key, and that it is marked as resent.
fn described(f: &Fixture, events: &[Event]) -> Vec<(&'static str, u64)> {
    let data = f.data_dir();
    let check = |env: &Envelope, file: std::path::PathBuf, resent: bool| {
        assert!(resent, "{} is marked as resent", file.display());
        let on_disk = std::fs::read(&file).expect("file");
        assert_eq!(env.to_bytes(), on_disk, "{} as on disk", file.display());
        Envelope::open(&on_disk, Some(&f.key.public_key())).expect("verifies");
    };
    events
        .iter()
        .map(|e| match e {
            Event::SegmentDeleted(r) => {
                check(
                    &r.envelope,
                    data.join(format!("receipts/{:010}.json", r.sequence)),
                    r.resent,
                );
                ("deleted", r.sequence)
            }
            Event::SegmentSealed(s) => {
                check(
                    &s.envelope,
                    data.join(format!("cameras/{}/{:010}.json", s.camera_id, s.sequence)),
                    s.resent,
                );
                ("sealed", s.sequence)
            }
            Event::GapRecorded(g) => {
                check(
                    &g.envelope,
                    data.join(format!("cameras/{}/{:010}.json", g.camera_id, g.sequence)),
                    g.resent,
                );
                ("gap", g.sequence)
            }
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

#[test]
fn receipts_and_records_are_sent_again_from_their_files() {
    let mut f = Fixture::new();
    let now = chain_with_receipts(&mut f);
    let r = f.apply(
        Action::Resend {
            receipts_from: Some(2),
            records_from: cameras(&[("cam-a", 2), ("cam-none", 1)]),
        },
        now,
    );
    assert!(r.applied(), "{r:?}");
    assert_eq!(
        r.result,
        json!({
            "receipts": {"from": 2, "head": 3, "queued": 2, "missing": [], "unreadable": []},
            "records": {
                "cam-a": {"from": 2, "head": 4, "queued": 3, "missing": [], "unreadable": []},
                "cam-none": {"from": 1, "head": 0, "queued": 0, "missing": [], "unreadable": []},
            },
            "queued": 5,
            "truncated": false,
        })
    );
    let events = f.events.take();
    assert_eq!(
        described(&f, &events),
        [
            ("deleted", 2),
            ("deleted", 3),
            ("sealed", 2),
            ("gap", 3),
            ("sealed", 4)
        ]
    );
    // Read-only: the same command again is a replay that queues nothing.
    let cmd = f.command(
        Action::Resend {
            receipts_from: Some(1),
            records_from: BTreeMap::new(),
        },
        now,
    );
    let bytes = f.signed(&cmd);
    assert!(f.retention.apply(&bytes, now).expect("apply").applied());
    assert_eq!(f.events.take().len(), 3);
    let again = f.retention.apply(&bytes, now).expect("apply");
    assert_eq!(again.code.as_deref(), Some("replayed"));
    let events = f.events.take();
    assert!(
        events
            .iter()
            .all(|e| matches!(e, Event::CommandRejected { .. })),
        "{events:?}"
    );
    f.audit_ok();
}

#[test]
fn the_bound_stops_a_resend_where_the_next_one_resumes() {
    let mut f = Fixture::new();
    chain_with_receipts(&mut f);
    let run = |f: &Fixture, receipts: Option<u64>, records: &BTreeMap<String, u64>| {
        f.retention
            .run_collecting(|e| e.resend(receipts, records, 2).expect("resend"))
    };
    let (first, events) = run(&f, Some(1), &cameras(&[("cam-a", 1)]));
    assert_eq!(described(&f, &events), [("deleted", 1), ("deleted", 2)]);
    assert_eq!(first["queued"], 2, "{first}");
    assert_eq!(first["truncated"], true, "{first}");
    assert_eq!(
        first["resume"],
        json!({"receipts_from": 3, "records_from": {"cam-a": 1}}),
        "{first}"
    );
    assert_eq!(first["records"]["cam-a"]["queued"], 0, "{first}");
    // The resume arguments, as HQ sends them back.
    let receipts = first["resume"]["receipts_from"].as_u64();
    let (second, events) = run(&f, receipts, &cameras(&[("cam-a", 1)]));
    assert_eq!(described(&f, &events), [("deleted", 3), ("sealed", 1)]);
    assert_eq!(
        second["resume"],
        json!({"records_from": {"cam-a": 2}}),
        "{second}"
    );
    let (third, events) = run(&f, None, &cameras(&[("cam-a", 2)]));
    assert_eq!(described(&f, &events), [("sealed", 2), ("gap", 3)]);
    let (last, events) = run(&f, None, &cameras(&[("cam-a", 4)]));
    assert_eq!(described(&f, &events), [("sealed", 4)]);
    assert_eq!(last["truncated"], false, "{last}");
    assert!(last.get("resume").is_none(), "{last}");
    assert_eq!(third["truncated"], true, "{third}");
}

#[test]
fn files_gone_or_altered_are_named_and_the_rest_still_goes() {
    let mut f = Fixture::new();
    let now = chain_with_receipts(&mut f);
    let dir = f.data_dir().join("cameras/cam-a");
    std::fs::remove_file(dir.join("0000000002.json")).expect("remove");
    let path = dir.join("0000000003.json");
    let text = std::fs::read_to_string(&path).expect("read");
    std::fs::write(&path, text.replacen("\\\"gap\\\"", "\\\"gaq\\\"", 1)).expect("alter");
    std::fs::remove_file(f.data_dir().join("receipts/0000000001.json")).expect("remove");
    let r = f.apply(
        Action::Resend {
            receipts_from: Some(1),
            records_from: cameras(&[("cam-a", 1)]),
        },
        now,
    );
    assert!(r.applied(), "{r:?}");
    assert_eq!(r.result["receipts"]["missing"], json!([1]), "{}", r.result);
    assert_eq!(r.result["receipts"]["queued"], 2, "{}", r.result);
    let cam = &r.result["records"]["cam-a"];
    assert_eq!(cam["missing"], json!([2]), "{cam}");
    assert_eq!(cam["unreadable"], json!([3]), "{cam}");
    let why = cam["unreadable_reason"].as_str().unwrap_or_default();
    assert!(
        why.starts_with(&path.display().to_string()),
        "the file and its cause: {cam}"
    );
    assert_eq!(cam["queued"], 2, "{cam}");
    assert_eq!(
        described(&f, &f.events.take()),
        [("deleted", 2), ("deleted", 3), ("sealed", 1), ("sealed", 4)]
    );
}
