//! The ledger's rollups (`src/service/rollup.rs`) against a full scan, on
//! SQLite and on PostgreSQL 15 (`tests/support/postgres.rs`).
//!
//! A small fleet's signed records and receipts are kept as the collector
//! keeps them (`ingest::ingest`, several messages per transaction), in
//! three phases of shuffled messages: gap records, holes opened and filled
//! out of order (one before a camera's first record), receipts before and
//! after their records and for records never sent, on-time, late and early
//! deletions, records past their deadline without a receipt, starts before
//! 1970, a segment with two receipts (the lower-numbered one counts). After
//! each phase the report, for several ranges (whole and partial days) and
//! with and without `--agent`, equals a brute force over the raw rows, and
//! so do the holes healing asks about. Then the database is taken back to
//! its schema before migration 0004 and opened again: the migration's
//! backfill gives the same rollups as the incremental upkeep. The periodic
//! check raises `chain.break` and `receipt.mismatch` for what arrived since
//! it last looked, from either side of a link, and does not look again at
//! what it saw long before. Agents' events raise and clear their alarms
//! (`hq_rollups/agent_alarms.rs`). On PostgreSQL the same messages are also kept by
//! six connections at once, one message per transaction (replicas
//! committing neighbours), with the same result.

// Test code: a panic here is a failed run with its reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

/// What the PostgreSQL harness needs of the broker's harness.
mod mosquitto {
    pub fn free_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        l.local_addr().expect("its address").port()
    }
}

#[allow(dead_code)]
#[path = "../../../tests/support/postgres.rs"]
mod postgres;

mod hq_rollups {
    mod agent_alarms;
    mod brute;
    mod fleet;
    mod objects;

    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::{Arc, Mutex};

    use chrono::{DateTime, Utc};

    use sargs_core::seal::sign::DeviceKey;
    use sargs_hq::service::config::Ledger;
    use sargs_hq::service::db::Db;
    use sargs_hq::service::ingest::{self, Outcome, Rules};
    use sargs_hq::service::prepare::Prepared;
    use sargs_hq::service::report;
    use sargs_hq::service::{agents, alarms, check, heal};

    use crate::postgres::Postgres;
    use brute::{brute_force, raw};
    use fleet::{fleet, t, Msg, ARRIVED, BOUND, DAY, GRACE, HOUR, NOW};

    pub(super) fn rules() -> Rules {
        Rules {
            prefix: "sargs".into(),
            max_payload_bytes: 1 << 20,
            trust: Default::default(),
        }
    }

    /// Keeps `msgs`, `per_tx` to a transaction, as arrived at `arrived`:
    /// as the collector does, one [`ingest::Batch`] per transaction (its
    /// records and receipts written together, their rollups batched).
    async fn keep(db: &Db, msgs: &[&Msg], per_tx: usize, arrived: i64) {
        let rules = rules();
        for chunk in msgs.chunks(per_tx) {
            let mut tx = sargs_hq::service::db::write(&db.pool).await.expect("begin");
            let prepared: Vec<Prepared> = chunk
                .iter()
                .map(|m| Prepared::new(&rules, &m.topic, m.payload.as_bytes()))
                .collect();
            let refs: Vec<&Prepared> = prepared.iter().collect();
            let mut batch = ingest::Batch::begin(&mut tx, &refs).await.expect("begin");
            for p in &prepared {
                batch
                    .ingest(&mut tx, &rules, p, t(arrived))
                    .await
                    .expect("ingest");
            }
            let outcomes = batch.finish(&mut tx, t(arrived)).await.expect("finish");
            assert_eq!(outcomes.len(), chunk.len());
            for (o, m) in outcomes.iter().zip(chunk) {
                assert!(
                    matches!(o, Outcome::Kept | Outcome::Duplicate),
                    "{o:?}: {}",
                    m.payload
                );
            }
            tx.commit().await.expect("commit");
        }
    }

    /// Keeps `msgs` over `n` connections at once, one message per
    /// transaction (retried if the database refuses it for a while).
    async fn keep_concurrently(db: &Db, msgs: Vec<(String, String)>, n: usize, arrived: i64) {
        let queue = Arc::new(Mutex::new(msgs));
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let (queue, pool) = (queue.clone(), db.pool.clone());
                tokio::spawn(async move {
                    let rules = rules();
                    loop {
                        let Some((topic, payload)) = queue.lock().unwrap().pop() else {
                            break;
                        };
                        let mut tries = 0;
                        loop {
                            let mut tx = pool.begin().await.expect("begin");
                            let o = ingest::ingest(
                                &mut tx,
                                &rules,
                                &topic,
                                payload.as_bytes(),
                                t(arrived),
                            )
                            .await;
                            match o {
                                Ok(o) => {
                                    assert!(
                                        matches!(o, Outcome::Kept | Outcome::Duplicate),
                                        "{o:?}"
                                    );
                                    if tx.commit().await.is_ok() {
                                        break;
                                    }
                                }
                                Err(e) => assert!(tries < 20, "{e}"),
                            }
                            tries += 1;
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("a connection's task");
        }
    }
    /// The report equals the brute force for ranges of whole and partial
    /// days, before and after 1970, and for each agent; healing's holes too.
    async fn reports_agree(db: &Db, what: &str) {
        let (records, receipts) = raw(db).await;
        let (min, max) = (
            DateTime::<Utc>::MIN_UTC.timestamp_millis(),
            DateTime::<Utc>::MAX_UTC.timestamp_millis(),
        );
        let ranges = [
            (min, max),
            (min, NOW),
            (NOW - 6 * DAY - 5 * HOUR, NOW - 2 * DAY + 7 * HOUR),
            (NOW - 6 * DAY - 5 * HOUR, NOW - 6 * DAY + 2 * HOUR),
            (
                NOW - 8 * DAY - NOW.rem_euclid(DAY),
                NOW - NOW.rem_euclid(DAY),
            ),
            (-2 * DAY - 1, 2 * DAY + 1),
            (-DAY / 2, DAY / 3),
            (NOW, NOW),
        ];
        for (from, to) in ranges {
            for agent in [None, Some("gw-a"), Some("gw-b")] {
                let q = report::Query {
                    from: t(from),
                    to: t(to),
                    agent: agent.map(str::to_owned),
                    now: t(NOW),
                    bound_ms: BOUND,
                    grace_ms: GRACE,
                };
                let got = report::make(&db.pool, &q).await.expect("report");
                let want = brute_force(&records, &receipts, from, to, agent);
                assert_eq!(
                    serde_json::to_value(&got).unwrap(),
                    serde_json::to_value(&want).unwrap(),
                    "{what}: the report from {} to {} for {agent:?}",
                    t(from),
                    t(to)
                );
            }
        }
        for agent in ["gw-a", "gw-b"] {
            let mut cameras: BTreeMap<String, Vec<i64>> = BTreeMap::new();
            for r in records.iter().filter(|r| r.0 == agent) {
                cameras.entry(r.1.clone()).or_default().push(r.2);
            }
            let first_missing = |mut seqs: Vec<i64>| {
                seqs.sort();
                let mut expect = 1;
                for s in seqs {
                    if s > expect {
                        return Some(expect as u64);
                    }
                    expect = s + 1;
                }
                None
            };
            let want: BTreeMap<String, u64> = cameras
                .into_iter()
                .filter_map(|(c, s)| Some((c, first_missing(s)?)))
                .collect();
            let mine = receipts
                .iter()
                .filter(|r| r.0 == agent)
                .map(|r| r.1)
                .collect();
            // No claim counts: the holes below the ledger's highest.
            let got = heal::holes(&db.pool, agent, DateTime::<Utc>::MIN_UTC)
                .await
                .expect("holes");
            assert_eq!(
                got,
                (want, first_missing(mine)),
                "{what}: the holes of {agent}"
            );
        }
    }

    type Deletion = (String, String, i64, Option<i64>, Option<String>);

    /// Every rollup row, and each record's deletion, as text.
    async fn rollups(db: &Db) -> Vec<String> {
        let p = &db.pool;
        let mut out = Vec::new();
        let days: Vec<(String, String, i64, i64, i64, i64)> = sqlx::query_as("SELECT agent, class, day, segments, gaps, deleted FROM ledger_days ORDER BY agent, class, day").fetch_all(p).await.unwrap();
        out.extend(days.iter().map(|r| format!("day {r:?}")));
        let cams: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT agent, camera, max_sequence FROM ledger_cameras ORDER BY agent, camera",
        )
        .fetch_all(p)
        .await
        .unwrap();
        out.extend(cams.iter().map(|r| format!("camera {r:?}")));
        let holes: Vec<(String, String, i64, i64)> = sqlx::query_as("SELECT agent, camera, first_seq, last_seq FROM ledger_holes ORDER BY agent, camera, first_seq").fetch_all(p).await.unwrap();
        out.extend(holes.iter().map(|r| format!("hole {r:?}")));
        let chains: Vec<(String, i64)> =
            sqlx::query_as("SELECT agent, max_sequence FROM ledger_receipt_chains ORDER BY agent")
                .fetch_all(p)
                .await
                .unwrap();
        out.extend(chains.iter().map(|r| format!("receipts {r:?}")));
        let holes: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT agent, first_seq, last_seq FROM ledger_receipt_holes ORDER BY agent, first_seq",
        )
        .fetch_all(p)
        .await
        .unwrap();
        out.extend(holes.iter().map(|r| format!("receipt hole {r:?}")));
        let deleted: Vec<Deletion> = sqlx::query_as("SELECT agent, camera, sequence, deleted_at_ms, deletion_reason FROM records ORDER BY agent, camera, sequence").fetch_all(p).await.unwrap();
        out.extend(deleted.iter().map(|r| format!("record {r:?}")));
        out
    }

    /// Takes the database back to its schema before migration 0004 (what
    /// 0004 added goes, and sqlx's record of it) and opens it again, so
    /// that 0004 fills the rollups from the rows.
    async fn backfill(db: Db, url: &str) -> Db {
        for stmt in [
            "DROP INDEX records_open",
            "DROP INDEX records_late",
            "DROP INDEX records_received",
            "DROP INDEX receipts_received",
            "ALTER TABLE records DROP COLUMN deleted_at_ms",
            "ALTER TABLE records DROP COLUMN deletion_reason",
            "DROP TABLE ledger_days",
            "DROP TABLE ledger_cameras",
            "DROP TABLE ledger_holes",
            "DROP TABLE ledger_receipt_chains",
            "DROP TABLE ledger_receipt_holes",
            "DROP TABLE ledger_checks",
            "DELETE FROM _sqlx_migrations WHERE version = 4",
        ] {
            sqlx::query(stmt).execute(&db.pool).await.expect(stmt);
        }
        db.pool.close().await;
        Db::open(url).await.expect("migrated again")
    }

    pub(super) async fn open_alarms(db: &Db, kind: &str) -> BTreeSet<String> {
        let all = alarms::list(&db.pool, false).await.expect("alarms");
        all.into_iter()
            .filter(|a| a.kind == kind)
            .map(|a| a.key)
            .collect()
    }

    pub(super) fn set(keys: &[&str]) -> BTreeSet<String> {
        keys.iter().map(|k| (*k).to_owned()).collect()
    }

    /// A telemetry sample of gw-a says its broker acknowledged two records
    /// of cam-1 and a receipt beyond the ledger's highest, and a record of
    /// a camera the ledger has never seen. From `claim_grace` after HQ
    /// first heard it (and not before), healing asks from the number after
    /// the ledger's highest, or from a lower hole; a claim the ledger has
    /// reached asks for nothing, and the same claim heard again later
    /// keeps its first instant.
    async fn tails_claimed(db: &Db) {
        let top = |sql: &'static str| {
            let pool = db.pool.clone();
            async move {
                let (n,): (i64,) = sqlx::query_as(sql)
                    .fetch_one(&pool)
                    .await
                    .expect("highest number");
                u64::try_from(n).expect("positive")
            }
        };
        let cam = top(
            "SELECT max_sequence FROM ledger_cameras WHERE agent = 'gw-a' AND camera = 'cam-1'",
        )
        .await;
        let rcp = top("SELECT max_sequence FROM ledger_receipt_chains WHERE agent = 'gw-a'").await;
        let below = heal::holes(&db.pool, "gw-a", DateTime::<Utc>::MIN_UTC)
            .await
            .expect("holes");
        let telemetry = |agent: &str, at: i64, cam_1: u64, receipts: u64| {
            serde_json::json!({"v": 1, "agent": agent, "at": t(at),
                "outbox": {"depth": 0, "dropped": 0,
                    "acknowledged": {"records": {"cam-1": cam_1, "cam-new": 2}, "receipts": receipts}}})
            .to_string()
        };
        let heard = NOW + HOUR;
        for (agent, at, payload) in [
            ("gw-a", heard, telemetry("gw-a", heard, cam + 2, rcp + 1)),
            (
                "gw-a",
                heard + HOUR,
                telemetry("gw-a", heard + HOUR, cam + 2, rcp + 1),
            ),
            ("gw-b", heard, telemetry("gw-b", heard, 1, 0)),
        ] {
            let mut tx = sargs_hq::service::db::write(&db.pool).await.expect("begin");
            let o = ingest::ingest(
                &mut tx,
                &rules(),
                &format!("sargs/agents/{agent}/telemetry"),
                payload.as_bytes(),
                t(at),
            )
            .await
            .expect("telemetry");
            assert!(matches!(o, Outcome::Kept), "{o:?}");
            tx.commit().await.expect("commit");
        }
        let before = heal::holes(&db.pool, "gw-a", t(heard - 1))
            .await
            .expect("holes");
        assert_eq!(before, below, "within the grace nothing more is asked");
        let (cameras, receipts) = heal::holes(&db.pool, "gw-a", t(heard))
            .await
            .expect("holes");
        let from = |lower: Option<u64>, next: u64| lower.map_or(next, |l| l.min(next));
        assert_eq!(
            cameras["cam-1"],
            from(below.0.get("cam-1").copied(), cam + 1)
        );
        assert_eq!(
            cameras["cam-new"], 1,
            "a camera the ledger never saw: from 1"
        );
        assert_eq!(receipts, Some(from(below.1, rcp + 1)));
        let b_below = heal::holes(&db.pool, "gw-b", DateTime::<Utc>::MIN_UTC)
            .await
            .expect("holes");
        let (b_cameras, b_receipts) = heal::holes(&db.pool, "gw-b", t(heard))
            .await
            .expect("holes");
        assert_eq!(
            (b_cameras.get("cam-1"), b_receipts),
            (b_below.0.get("cam-1"), b_below.1),
            "gw-b's claims are below its ledger's highest"
        );
    }

    /// The whole story on one database.
    async fn story(url: &str, concurrent: Option<&str>) {
        let db = Db::open(url).await.expect("database");
        let keys: BTreeMap<&str, DeviceKey> = ["gw-a", "gw-b"]
            .into_iter()
            .map(|a| (a, DeviceKey::generate().expect("key")))
            .collect();
        for (agent, key) in &keys {
            agents::add(&db.pool, agent, &key.public_key_b64(), "", "", "test")
                .await
                .expect("enrolled");
        }
        let msgs = fleet(&keys);
        let ledger = Ledger {
            deletion_bound_s: (BOUND / 1000) as u64,
            grace_hours: 24,
            ..Ledger::default()
        };
        let phase = |n: usize| {
            msgs.iter()
                .filter(move |m| m.phase == n)
                .collect::<Vec<_>>()
        };

        keep(&db, &phase(1), 7, ARRIVED[0]).await;
        reports_agree(&db, "phase 1").await;
        check::run(&db.pool, &ledger, t(ARRIVED[0]))
            .await
            .expect("check");
        assert_eq!(open_alarms(&db, "chain.break").await, set(&[]), "phase 1");
        assert_eq!(
            open_alarms(&db, "receipt.mismatch").await,
            set(&[]),
            "phase 1"
        );

        // Phase 2 again after a redelivery of phase 1: duplicates change nothing.
        let mut again = phase(2);
        again.extend(phase(1).into_iter().take(25));
        keep(&db, &again, 11, ARRIVED[1]).await;
        reports_agree(&db, "phase 2").await;
        check::run(&db.pool, &ledger, t(ARRIVED[1]))
            .await
            .expect("check");
        // 39 arrived after 40, which names another predecessor; the record
        // arrived after the receipt that names another manifest.
        assert_eq!(
            open_alarms(&db, "chain.break").await,
            set(&["chain.break:gw-a/cam-1/40"])
        );
        let mismatch = open_alarms(&db, "receipt.mismatch").await;
        assert_eq!(mismatch.len(), 1, "{mismatch:?}");

        keep(&db, &phase(3), 3, ARRIVED[2]).await;
        reports_agree(&db, "phase 3").await;
        check::run(&db.pool, &ledger, t(ARRIVED[2]))
            .await
            .expect("check");
        // What arrived since: a record that breaks its chain, and a hole
        // filled by a record that names another predecessor than the one
        // kept and is not the one its successor names.
        let new = [
            "chain.break:gw-b/cam-1/11",
            "chain.break:gw-b/cam-1/12",
            "chain.break:gw-b/cam-1/21",
        ];
        let old = "chain.break:gw-a/cam-1/40";
        let both: Vec<&str> = new.iter().copied().chain([old]).collect();
        assert_eq!(open_alarms(&db, "chain.break").await, set(&both));
        // Cleared by an operator, all of them. The next check looks again
        // at what arrived within the margin before the newest it saw (phase
        // 3), not at what it saw long before (phases 1 and 2).
        for key in open_alarms(&db, "chain.break")
            .await
            .iter()
            .chain(&mismatch)
        {
            alarms::clear_by_operator(&db.pool, key)
                .await
                .expect("cleared");
        }
        keep(&db, &phase(4), 1, ARRIVED[3]).await;
        check::run(&db.pool, &ledger, t(ARRIVED[3]))
            .await
            .expect("check");
        assert_eq!(open_alarms(&db, "chain.break").await, set(&new));
        assert_eq!(open_alarms(&db, "receipt.mismatch").await, set(&[]));
        reports_agree(&db, "phase 4").await;
        tails_claimed(&db).await;
        agent_alarms::offload_alarms(&db).await;
        agent_alarms::sweep_alarms(&db).await;
        agent_alarms::disk_stall_alarms(&db).await;
        objects::offloaded_objects(&db, &ledger).await;

        let kept = rollups(&db).await;
        let db = backfill(db, url).await;
        assert_eq!(
            rollups(&db).await,
            kept,
            "the migration's backfill equals the incremental rollups"
        );
        reports_agree(&db, "after the backfill").await;

        if let Some(url) = concurrent {
            let other = Db::open(url).await.expect("second database");
            for (agent, key) in &keys {
                agents::add(&other.pool, agent, &key.public_key_b64(), "", "", "test")
                    .await
                    .expect("enrolled");
            }
            let all = msgs
                .iter()
                .map(|m| (m.topic.clone(), m.payload.clone()))
                .collect();
            keep_concurrently(&other, all, 6, NOW).await;
            assert_eq!(
                rollups(&other).await,
                kept,
                "kept by six connections at once"
            );
            reports_agree(&other, "kept concurrently").await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_rollups_equal_a_full_scan() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("hq.db").display());
        story(&url, None).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_rollups_equal_a_full_scan_also_when_kept_concurrently() {
        let pg = Postgres::start();
        let url = pg.create_db("ledger");
        let other = pg.create_db("concurrent");
        story(&url, Some(&other)).await;
    }
}
