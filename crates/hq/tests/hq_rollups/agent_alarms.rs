//! Alarms an agent's events raise and clear at HQ (`ledger.rs`), each
//! event kept as the collector keeps it, one transaction each, and the open
//! alarms of the kind compared after every step.

use serde_json::{json, Value};

use sargs_hq::service::alarms::{self, Alarm};
use sargs_hq::service::db::Db;
use sargs_hq::service::ingest::{self, Outcome};

use super::fleet::{t, HOUR, NOW};
use super::{open_alarms, rules, set};

/// Keeps each `(agent, event body)` step as its event, from `first_at` a
/// second apart, and asserts the open alarms of `kind` (their keys) after
/// each; returns every alarm of `kind`, open and cleared.
async fn steps(
    db: &Db,
    kind: &str,
    first_at: i64,
    steps: Vec<(&str, Value, Vec<&str>)>,
) -> Vec<Alarm> {
    for (i, (agent, body, want)) in steps.into_iter().enumerate() {
        let at = first_at + i as i64 * 1000;
        let mut v = json!({"v": 1, "agent": agent, "at": t(at)});
        if let (Some(o), Value::Object(b)) = (v.as_object_mut(), body) {
            o.extend(b);
        }
        let mut tx = sargs_hq::service::db::write(&db.pool).await.expect("begin");
        let o = ingest::ingest(
            &mut tx,
            &rules(),
            &format!("sargs/agents/{agent}/events"),
            v.to_string().as_bytes(),
            t(at),
        )
        .await
        .expect("event");
        assert!(matches!(o, Outcome::Kept), "{o:?}");
        tx.commit().await.expect("commit");
        assert_eq!(
            open_alarms(db, kind).await,
            set(&want),
            "{kind}: after step {i}"
        );
    }
    let all = alarms::list(&db.pool, true).await.expect("alarms");
    all.into_iter().filter(|a| a.kind == kind).collect()
}

/// `offload.failed` raises an alarm: per agent for a store that fails,
/// per record for a record that fails alone; `segment.offloaded`
/// clears the agent's and that record's.
pub(super) async fn offload_alarms(db: &Db) {
    let failed = |kind: &str, segment: Option<&str>| {
        json!({"event": "offload.failed", "offload": {
            "kind": kind, "store": "http://127.0.0.1:3900/evidence",
            "key": "gw-a/cam-1/0000000001.mp4.age", "segment_id": segment,
            "error": "connection refused", "failures": 3, "unreported": 2, "retry_in_s": 8}})
    };
    let offloaded =
        |segment: &str| json!({"event": "segment.offloaded", "offload": {"segment_id": segment}});
    let (store, record) = ("offload.failed:gw-a", "offload.failed:gw-a:gw-a/cam-1/7");
    steps(
        db,
        "offload.failed",
        NOW + 2 * HOUR,
        vec![
            ("gw-a", failed("store", None), vec![store]),
            (
                "gw-a",
                failed("record", Some("gw-a/cam-1/7")),
                vec![store, record],
            ),
            ("gw-a", offloaded("gw-a/cam-1/8"), vec![record]),
            ("gw-a", offloaded("gw-a/cam-1/7"), vec![]),
        ],
    )
    .await;
}

/// `sweep.failed` raises one alarm per agent with the agent's reason (a
/// second failure refreshes it), `sweep.resumed` of that agent — not of
/// another — clears it, and a later failure raises it again.
pub(super) async fn sweep_alarms(db: &Db) {
    let failed = |reason: &str| json!({"event": "sweep.failed", "reason": reason});
    let resumed = || json!({"event": "sweep.resumed"});
    let first = NOW + 2 * HOUR + 60_000;
    let (a, b) = ("sweep.failed:gw-a", "sweep.failed:gw-b");
    let all = steps(
        db,
        "sweep.failed",
        first,
        vec![
            (
                "gw-a",
                failed("index data/index.sqlite: disk I/O error"),
                vec![a],
            ),
            (
                "gw-a",
                failed("index data/index.sqlite: database is locked"),
                vec![a],
            ),
            (
                "gw-b",
                failed("data/cameras: Input/output error"),
                vec![a, b],
            ),
            ("gw-b", resumed(), vec![a]),
            ("gw-a", resumed(), vec![]),
            ("gw-a", resumed(), vec![]),
            (
                "gw-a",
                failed("index data/index.sqlite: disk full"),
                vec![a],
            ),
        ],
    )
    .await;
    let [ra, rb] = &all[..] else {
        panic!("one alarm per agent: {all:?}")
    };
    let (ra, rb) = if ra.key == a { (ra, rb) } else { (rb, ra) };
    assert_eq!(
        (ra.key.as_str(), ra.agent.as_deref(), ra.detail.as_str()),
        (a, Some("gw-a"), "index data/index.sqlite: disk full"),
        "{ra:?}"
    );
    // Raised again after it cleared: a new raised_at, open.
    assert_eq!((ra.raised_at, ra.cleared_at), (t(first + 6000), None));
    assert_eq!(
        (rb.detail.as_str(), rb.cleared_at),
        ("data/cameras: Input/output error", Some(t(first + 3000)))
    );
}

/// `disk.stalled` raises one alarm per agent and file, with the agent's
/// reason; the `disk.resumed` of that file clears it, not another's.
pub(super) async fn disk_stall_alarms(db: &Db) {
    let f = |cam: &str| format!("/var/lib/sargs/cameras/{cam}/0000000005.mp4.age.partial");
    let stalled = |cam: &str| {
        json!({"event": "disk.stalled", "op": "write", "file": f(cam), "camera": cam,
            "stalled_s": 5, "reason": format!("write of {} has not returned for 5 s: the disk stalls", f(cam))})
    };
    let resumed = |cam: &str| json!({"event": "disk.resumed", "op": "write", "file": f(cam), "camera": cam, "after_s": 12});
    let (a, b) = (
        format!("disk.stalled:gw-a:{}", f("cam-1")),
        format!("disk.stalled:gw-a:{}", f("cam-2")),
    );
    let (a, b) = (a.as_str(), b.as_str());
    let all = steps(
        db,
        "disk.stalled",
        NOW + 2 * HOUR + 120_000,
        vec![
            ("gw-a", stalled("cam-1"), vec![a]),
            ("gw-a", stalled("cam-2"), vec![a, b]),
            ("gw-a", resumed("cam-1"), vec![b]),
            ("gw-a", resumed("cam-2"), vec![]),
        ],
    )
    .await;
    assert!(
        all.iter().any(|x| x.key == a
            && x.detail.contains("has not returned for 5 s")
            && x.cleared_at.is_some()),
        "{all:?}"
    );
}
