//! The queries that run once per message find their rows through an index,
//! on SQLite and on PostgreSQL 15 (`tests/support/postgres.rs`), however
//! many messages the ledger holds: checked on each database's own plan of
//! the service's query (PostgreSQL told not to scan, so that its plan shows
//! whether an index can serve the query at all, not which is cheaper on an
//! empty table).

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

mod hq_plans {
    use sargs_hq::service::db::Db;

    use crate::postgres::Postgres;

    /// `status.rs`: the newest status an agent sent, asked of every status.
    const NEWEST_STATUS: &str =
        "SELECT MAX(at) FROM messages WHERE agent = 'gw-1' AND topic_kind = 'status'";

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_reads_the_newest_status_from_its_index() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("hq.db").display());
        let db = Db::open(&url).await.expect("database");
        let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "EXPLAIN QUERY PLAN {NEWEST_STATUS}"
        )))
        .fetch_all(&db.pool)
        .await
        .expect("plan");
        let plan: Vec<&str> = plan.iter().map(|r| r.3.as_str()).collect();
        assert!(
            plan.iter()
                .any(|d| d.contains("USING COVERING INDEX messages_status")),
            "SQLite's plan: {plan:?}"
        );
        assert!(
            !plan.iter().any(|d| d.starts_with("SCAN messages")),
            "SQLite's plan: {plan:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_reads_the_newest_status_from_its_index() {
        let pg = Postgres::start();
        let url = pg.create_db("ledger");
        Db::open(&url).await.expect("database");
        let plan = pg.psql(
            "ledger",
            &format!("SET enable_seqscan = off; EXPLAIN {NEWEST_STATUS}"),
        );
        assert!(
            plan.contains("messages_status"),
            "PostgreSQL's plan:\n{plan}"
        );
        assert!(!plan.contains("Seq Scan"), "PostgreSQL's plan:\n{plan}");
    }
}
