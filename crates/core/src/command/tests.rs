//! Commands: every kind round-trips, every rejection is produced by a
//! realistic input, and scope boundaries are exact.

use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;

use super::*;
use crate::seal::sign::DeviceKey;

fn at(h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, h, 0, 0)
        .single()
        .expect("time")
}

fn range() -> Scope {
    Scope::Range {
        cameras: vec!["cam-1".into(), "cam-2".into()],
        from: at(8),
        to: at(9),
    }
}

fn all_actions() -> Vec<Action> {
    vec![
        Action::HoldPlace {
            hold: "H-17".into(),
            case: "KP 11-2026/88".into(),
            scope: range(),
            until: Some(at(20)),
            offload: true,
        },
        Action::HoldPlace {
            hold: "H-18".into(),
            case: "c".into(),
            scope: Scope::Segments(vec!["gw-01/cam-1/42".into()]),
            until: None,
            offload: false,
        },
        Action::HoldRelease {
            hold: "H-17".into(),
        },
        Action::HoldExtend {
            hold: "H-17".into(),
            until: None,
            beyond_cap_until: Some(at(23)),
        },
        Action::RequestOpen {
            request: "DSR-1".into(),
            scope: range(),
            due: None,
        },
        Action::RequestExtend {
            request: "DSR-1".into(),
            due: at(22),
        },
        Action::RequestClose {
            request: "DSR-1".into(),
        },
        Action::Inventory { scope: range() },
        Action::Offload {
            scope: Scope::Segments(vec!["gw-01/cam-1/42".into()]),
        },
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
            records_from: [("cam-1".to_owned(), 4711), ("cam-2".to_owned(), 1)].into(),
        },
        Action::Resend {
            receipts_from: None,
            records_from: [("cam-1".to_owned(), 2)].into(),
        },
        Action::Resend {
            receipts_from: Some(42),
            records_from: Default::default(),
        },
    ]
}

fn cmd(action: Action, target: Target) -> Command {
    Command {
        id: "c-1".into(),
        issued_at: at(10),
        expires_at: at(10) + Duration::days(7),
        target,
        issuer: "HQ duty officer".into(),
        action,
    }
}

struct Keys {
    hq: DeviceKey,
    trust: Trust,
}

fn keys() -> Keys {
    let hq = DeviceKey::generate().expect("key");
    let trust = Trust::new(vec![hq.public_key()]);
    Keys { hq, trust }
}

#[test]
fn every_kind_round_trips_through_sign_and_verify() {
    let k = keys();
    for action in all_actions() {
        for target in [Target::Agent("gw-01".into()), Target::Fleet] {
            let c = cmd(action.clone(), target);
            let v = verify(&sign(&k.hq, &c), &k.trust, "gw-01", at(11)).expect("verifies");
            assert_eq!(v.command, c);
            assert_eq!(v.payload, to_payload(&c));
        }
    }
}

#[test]
fn the_documented_example_parses() {
    let payload = r#"{"v":1,"id":"c-2026-0042","kind":"hold.place","issued_at":"2026-11-23T10:00:00Z",
 "expires_at":"2026-11-30T10:00:00Z","target":{"agent":"gw-01"},"issuer":"HQ duty officer",
 "args":{"hold":"H-17","case":"KP 11-2026/88","scope":{"cameras":["cam-1"],
 "from":"2026-11-20T08:00:00Z","to":"2026-11-20T09:00:00Z"}}}"#;
    let c = parse_payload(payload).expect("parses");
    assert_eq!(c.action.kind(), "hold.place");
    assert_eq!(c.target, Target::Agent("gw-01".into()));
}

fn reject(bytes: &[u8], k: &Keys, now: DateTime<Utc>) -> Rejection {
    match verify(bytes, &k.trust, "gw-01", now) {
        Err(r) => r,
        Ok(v) => panic!("accepted: {:?}", v.command),
    }
}

#[test]
fn each_rejection_names_its_reason() {
    let k = keys();
    let good = cmd(Action::Status, Target::Agent("gw-01".into()));
    // A bare command without an envelope.
    assert_eq!(
        reject(to_payload(&good).as_bytes(), &k, at(11)).code(),
        "unsigned"
    );
    assert_eq!(reject(b"not json", &k, at(11)).code(), "malformed");
    // One flipped byte in the signed payload.
    let bytes = String::from_utf8(sign(&k.hq, &good)).expect("utf8");
    let flipped = bytes.replace("HQ duty officer", "HQ duty officeR");
    assert_eq!(
        reject(flipped.as_bytes(), &k, at(11)).code(),
        "bad-signature"
    );
    // Signed by a key this agent does not trust.
    let other = DeviceKey::generate().expect("key");
    let r = reject(&sign(&other, &good), &k, at(11));
    assert_eq!(r.code(), "untrusted-key");
    assert!(r.to_string().contains(&other.public_key_b64()));
    // Expired, and issued an hour in the future.
    assert_eq!(
        reject(&sign(&k.hq, &good), &k, at(10) + Duration::days(8)).code(),
        "expired"
    );
    assert_eq!(
        reject(&sign(&k.hq, &good), &k, at(9)).code(),
        "not-yet-valid"
    );
    // Within the skew: accepted.
    assert!(verify(
        &sign(&k.hq, &good),
        &k.trust,
        "gw-01",
        at(10) - Duration::minutes(4)
    )
    .is_ok());
    // Another agent's command.
    let theirs = cmd(Action::Status, Target::Agent("gw-02".into()));
    assert_eq!(
        reject(&sign(&k.hq, &theirs), &k, at(11)).code(),
        "wrong-target"
    );
    // Validity window longer than allowed.
    let mut long = good.clone();
    long.expires_at = long.issued_at + Duration::days(60);
    assert_eq!(reject(&sign(&k.hq, &long), &k, at(11)).code(), "invalid");
}

/// Signs a hand-written payload (for shapes `to_payload` never makes).
fn signed_raw(k: &Keys, args: &str, extra: &str) -> Vec<u8> {
    let payload = format!(
        r#"{{"v":1,"id":"c-9","kind":"hold.place","issued_at":"2026-11-23T10:00:00Z","expires_at":"2026-11-24T10:00:00Z","target":{{"agent":"gw-01"}},"issuer":"x","args":{args}{extra}}}"#
    );
    k.hq.sign_envelope(&payload)
}

#[test]
fn schema_errors_name_the_field() {
    let k = keys();
    let case = |args: &str, extra: &str, code: &str, field: &str| {
        let r = reject(&signed_raw(&k, args, extra), &k, at(11));
        assert_eq!(r.code(), code, "{args}{extra}: {r}");
        assert!(r.to_string().contains(field), "{r} should name {field}");
    };
    let scope =
        r#"{"cameras":["cam-1"],"from":"2026-11-20T08:00:00Z","to":"2026-11-20T09:00:00Z"}"#;
    case(
        &format!(r#"{{"hold":"H","case":"c","scope":{scope},"colour":"red"}}"#),
        "",
        "invalid",
        "colour",
    );
    case(
        r#"{"hold":"H","case":"c","scope":{"cameras":["cam-1"],"from":"2026-11-20T08:00:00Z","to":"2026-11-20T09:00:00Z","segments":["a/b/1"]}}"#,
        "",
        "invalid",
        "args.scope",
    );
    case(
        r#"{"hold":"H","case":"c","scope":{"cameras":[],"from":"2026-11-20T08:00:00Z","to":"2026-11-20T09:00:00Z"}}"#,
        "",
        "invalid",
        "args.scope.cameras",
    );
    case(
        r#"{"hold":"H","case":"c","scope":{"cameras":["cam-1"],"from":"2026-11-20T09:00:00Z","to":"2026-11-20T09:00:00Z"}}"#,
        "",
        "invalid",
        "args.scope.from",
    );
    case(
        &format!(r#"{{"hold":"H","case":"c","scope":{scope},"offload":"yes"}}"#),
        "",
        "invalid",
        "args.offload",
    );
    case(
        &format!(r#"{{"hold":"H 1!","case":"c","scope":{scope}}}"#),
        "",
        "invalid",
        "args.hold",
    );
    case(
        &format!(r#"{{"hold":"H","case":"c","scope":{scope}}}"#),
        r#","x":1"#,
        "malformed",
        "x",
    );
    let v2 = k.hq.sign_envelope(
        r#"{"v":2,"id":"c","kind":"status","issued_at":"2026-11-23T10:00:00Z","expires_at":"2026-11-24T10:00:00Z","target":{"fleet":true},"issuer":"x"}"#,
    );
    assert_eq!(reject(&v2, &k, at(11)).code(), "unsupported-version");
}

/// `offload` takes exactly a scope; a hold without `offload` is written
/// without it, so holds signed before the flag existed keep their bytes.
#[test]
fn offload_takes_a_scope_and_a_hold_writes_its_flag_only_when_set() {
    let k = keys();
    let payload = |args: &str| {
        format!(
            r#"{{"v":1,"id":"c-o","kind":"offload","issued_at":"2026-11-23T10:00:00Z","expires_at":"2026-11-24T10:00:00Z","target":{{"agent":"gw-01"}},"issuer":"x","args":{args}}}"#
        )
    };
    for (args, field) in [
        ("{}", "args"),
        (r#"{"scope":{"segments":[]}}"#, "args.scope.segments"),
        (
            r#"{"scope":{"segments":["gw-01/cam-1/1"]},"hold":"H"}"#,
            "hold",
        ),
    ] {
        let r = reject(&k.hq.sign_envelope(&payload(args)), &k, at(11));
        assert_eq!(r.code(), "invalid", "{args}: {r}");
        assert!(r.to_string().contains(field), "{r} should name {field}");
    }
    let ok = parse_payload(&payload(r#"{"scope":{"segments":["gw-01/cam-1/1"]}}"#))
        .expect("an offload with a scope");
    assert!(ok.action.offloads());
    let mut hold = cmd(all_actions()[1].clone(), Target::Fleet);
    assert!(!to_payload(&hold).contains("offload"));
    assert!(!hold.action.offloads());
    if let Action::HoldPlace { offload, .. } = &mut hold.action {
        *offload = true;
    }
    assert!(to_payload(&hold).contains(r#""offload":true"#));
    assert!(hold.action.offloads());
}

/// Signs a hand-written `resend` payload with `args`.
fn signed_resend(k: &Keys, args: &str) -> Vec<u8> {
    let payload = format!(
        r#"{{"v":1,"id":"c-r","kind":"resend","issued_at":"2026-11-23T10:00:00Z","expires_at":"2026-11-24T10:00:00Z","target":{{"agent":"gw-01"}},"issuer":"x","args":{args}}}"#
    );
    k.hq.sign_envelope(&payload)
}

#[test]
fn resend_reads_its_documented_shape() {
    let k = keys();
    let v = verify(
        &signed_resend(
            &k,
            r#"{"receipts_from":120,"records_from":{"cam-1":4711,"cam-2":1}}"#,
        ),
        &k.trust,
        "gw-01",
        at(11),
    )
    .expect("verifies");
    assert_eq!(v.command.action.kind(), "resend");
    assert_eq!(
        v.command.action,
        Action::Resend {
            receipts_from: Some(120),
            records_from: [("cam-1".to_owned(), 4711), ("cam-2".to_owned(), 1)].into(),
        }
    );
    // Either part alone is a resend; a camera left out gets nothing.
    for (args, receipts, cameras) in [
        (r#"{"receipts_from":1}"#, Some(1), 0),
        (r#"{"records_from":{"cam-9":3}}"#, None, 1),
    ] {
        let v = verify(&signed_resend(&k, args), &k.trust, "gw-01", at(11)).expect(args);
        match v.command.action {
            Action::Resend {
                receipts_from,
                records_from,
            } => {
                assert_eq!(receipts_from, receipts, "{args}");
                assert_eq!(records_from.len(), cameras, "{args}");
            }
            other => panic!("{args}: {other:?}"),
        }
    }
    // The payload written for it leaves out what is not asked for.
    let c = cmd(
        Action::Resend {
            receipts_from: Some(7),
            records_from: Default::default(),
        },
        Target::Fleet,
    );
    assert!(
        to_payload(&c).contains(r#""args":{"receipts_from":7}"#),
        "{}",
        to_payload(&c)
    );
}

#[test]
fn resend_refuses_what_asks_for_nothing_or_nonsense() {
    let k = keys();
    for (args, field) in [
        ("{}", "args"),
        ("null", "args"),
        (r#"{"records_from":{}}"#, "args"),
        (r#"{"receipts_from":0}"#, "args.receipts_from"),
        (r#"{"receipts_from":-3}"#, "args.receipts_from"),
        (r#"{"receipts_from":"5"}"#, "args.receipts_from"),
        (r#"{"records_from":{"cam-1":0}}"#, "args.records_from.cam-1"),
        (r#"{"records_from":{"cam 1!":3}}"#, "args.records_from"),
        (r#"{"records_from":{"../receipts":1}}"#, "args.records_from"),
        (r#"{"records_from":["cam-1"]}"#, "args.records_from"),
        (r#"{"receipts_from":1,"segments":["a/b/1"]}"#, "segments"),
    ] {
        let r = reject(&signed_resend(&k, args), &k, at(11));
        assert_eq!(r.code(), "invalid", "{args}: {r}");
        assert!(
            r.to_string().contains(field),
            "{args}: {r} should name {field}"
        );
    }
}

#[test]
fn a_range_covers_records_that_overlap_it() {
    let s = Scope::Range {
        cameras: vec!["cam-1".into()],
        from: at(8),
        to: at(9),
    };
    let m = |h: u32, min: u32| at(h) + Duration::minutes(min.into());
    // Ends exactly at `from`: covered (it touches the range's first instant).
    assert!(s.covers("x", "cam-1", m(7, 59), at(8)));
    // Starts exactly at `to`: not covered (the range is half-open).
    assert!(!s.covers("x", "cam-1", at(9), m(9, 1)));
    assert!(s.covers("x", "cam-1", m(8, 59), m(9, 1)));
    assert!(!s.covers("x", "cam-2", m(8, 10), m(8, 11)));
    let ids = Scope::Segments(vec!["gw/cam-1/3".into()]);
    assert!(ids.covers("gw/cam-1/3", "cam-1", at(0), at(0)));
    assert!(!ids.covers("gw/cam-1/4", "cam-1", at(0), at(0)));
}

fn arb_id() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._:/-]{1,40}"
}

fn arb_time() -> impl Strategy<Value = DateTime<Utc>> {
    (0i64..2_000_000_000).prop_map(|s| Utc.timestamp_opt(1_600_000_000 + s, 0).single().expect("t"))
}

fn arb_scope() -> impl Strategy<Value = Scope> {
    prop_oneof![
        (
            proptest::collection::vec(arb_id(), 1..4),
            arb_time(),
            1i64..10_000_000
        )
            .prop_map(|(cameras, from, len)| Scope::Range {
                cameras,
                from,
                to: from + Duration::seconds(len)
            }),
        proptest::collection::vec(arb_id(), 1..4).prop_map(Scope::Segments),
    ]
}

fn arb_action() -> impl Strategy<Value = Action> {
    let text = "[a-zA-Z0-9 ./-]{0,30}[a-z]";
    prop_oneof![
        (
            arb_id(),
            text,
            arb_scope(),
            proptest::option::of(arb_time()),
            any::<bool>()
        )
            .prop_map(|(hold, case, scope, until, offload)| Action::HoldPlace {
                hold,
                case,
                scope,
                until,
                offload
            }),
        arb_id().prop_map(|hold| Action::HoldRelease { hold }),
        (arb_id(), arb_time()).prop_map(|(hold, t)| Action::HoldExtend {
            hold,
            until: Some(t),
            beyond_cap_until: None
        }),
        (arb_id(), arb_scope(), proptest::option::of(arb_time())).prop_map(
            |(request, scope, due)| Action::RequestOpen {
                request,
                scope,
                due
            }
        ),
        (arb_id(), arb_time()).prop_map(|(request, due)| Action::RequestExtend { request, due }),
        arb_scope().prop_map(|scope| Action::Inventory { scope }),
        arb_scope().prop_map(|scope| Action::Offload { scope }),
        (arb_id(), arb_scope(), text).prop_map(|(restriction, scope, reason)| Action::Restrict {
            restriction,
            scope,
            reason
        }),
        (arb_scope(), proptest::option::of(arb_id()))
            .prop_map(|(scope, request)| Action::Erase { scope, request }),
        Just(Action::Status),
        (
            proptest::option::of(1u64..u64::MAX),
            proptest::collection::btree_map(
                "[A-Za-z0-9_-][A-Za-z0-9._-]{0,30}",
                1u64..u64::MAX,
                0..4
            )
        )
            .prop_filter("asks for something", |(r, m)| r.is_some() || !m.is_empty())
            .prop_map(|(receipts_from, records_from)| Action::Resend {
                receipts_from,
                records_from
            }),
    ]
}

proptest! {
    #[test]
    fn any_valid_command_round_trips(action in arb_action(), id in arb_id(), fleet in any::<bool>()) {
        let k = keys();
        let c = Command {
            id,
            issued_at: at(10),
            expires_at: at(11),
            target: if fleet { Target::Fleet } else { Target::Agent("gw-01".into()) },
            issuer: "hq".into(),
            action,
        };
        let v = verify(&sign(&k.hq, &c), &k.trust, "gw-01", at(10)).expect("verifies");
        prop_assert_eq!(v.command, c);
    }
}
