//! Where offloaded records are: `segment.offloaded` keeps one `objects` row
//! per record of the reporting agent (heard twice, still one; another
//! agent's record, none); the periodic check raises `object.mismatch` for
//! a media object whose digest is not the one the record's manifest names.

use sqlx::AnyPool;

use super::fleet::{t, HOUR, NOW};
use super::{ingest, open_alarms, rules, set, Db, Ledger, Outcome};
use sargs_hq::service::check;

/// Two records of gw-a with media: (segment id, camera, sequence, digest).
async fn two_records(pool: &AnyPool) -> Vec<(String, String, i64, String)> {
    sqlx::query_as(
        "SELECT segment_id, camera, sequence, ciphertext_sha256 FROM records
         WHERE agent = 'gw-a' AND ciphertext_sha256 IS NOT NULL
         ORDER BY camera, sequence LIMIT 2",
    )
    .fetch_all(pool)
    .await
    .expect("records")
}

async fn kept(pool: &AnyPool) -> Vec<(String, String, Option<String>)> {
    sqlx::query_as("SELECT segment_id, store, media_key FROM objects ORDER BY segment_id")
        .fetch_all(pool)
        .await
        .expect("objects")
}

pub(super) async fn offloaded_objects(db: &Db, ledger: &Ledger) {
    let records = two_records(&db.pool).await;
    assert_eq!(records.len(), 2, "the fleet has records with media");
    let store = "http://127.0.0.1:3900/evidence";
    // `n` makes each report its own message (the same bytes again would be
    // a redelivery, recognised before it is read).
    let event = |n: i64, agent: &str, (id, camera, seq, sha): &(String, String, i64, String)| {
        serde_json::json!({"v": 1, "agent": agent, "at": t(NOW + 3 * HOUR + n),
            "event": "segment.offloaded", "offload": {
                "segment_id": id, "camera_id": camera, "sequence": seq, "store": store,
                "manifest_key": format!("{id}.json"), "manifest_object_sha256": "00".repeat(32),
                "media_key": format!("{id}.mp4.age"), "ciphertext_sha256": sha, "bytes": 1000}})
        .to_string()
    };
    let (good, mut bad) = (records[0].clone(), records[1].clone());
    bad.3 = "ab".repeat(32);
    let mut at = NOW + 3 * HOUR;
    // gw-a reports both (the second with a digest its manifest does not
    // name), the first twice; gw-b reports gw-a's record as its own.
    for (agent, body) in [
        ("gw-a", event(1, "gw-a", &good)),
        ("gw-a", event(2, "gw-a", &bad)),
        ("gw-a", event(3, "gw-a", &good)),
        ("gw-b", event(4, "gw-b", &good)),
    ] {
        at += 1000;
        let mut tx = sargs_hq::service::db::write(&db.pool).await.expect("begin");
        let o = ingest::ingest(
            &mut tx,
            &rules(),
            &format!("sargs/agents/{agent}/events"),
            body.as_bytes(),
            t(at),
        )
        .await
        .expect("event");
        assert!(matches!(o, Outcome::Kept), "{o:?}");
        tx.commit().await.expect("commit");
    }
    let rows = kept(&db.pool).await;
    let want: Vec<(String, String, Option<String>)> = [&good.0, &bad.0]
        .into_iter()
        .map(|id| (id.clone(), store.to_owned(), Some(format!("{id}.mp4.age"))))
        .collect();
    assert_eq!(rows, want, "one row per record of the reporting agent");
    check::run(&db.pool, ledger, t(at)).await.expect("check");
    assert_eq!(
        open_alarms(db, "object.mismatch").await,
        set(&[&format!("object.mismatch:{}", bad.0)]),
        "the object whose digest is not its manifest's"
    );
}
