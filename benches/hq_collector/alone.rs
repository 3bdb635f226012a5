//! The database alone: the rows the collector wrote for a run, as SQL fed
//! to `sqlite3` / `psql`, to tell the service's own cost from the
//! database's.
//!
//! The statements are those `ingest` issued per message before migration
//! 0004 (duplicate check, the agent, the record, the message, `last_seen`);
//! what the service derives on ingest since (rollups, hole tables) is not
//! in them, so the figure is the floor the database sets for the
//! collector's essential writes.

use crate::fleet::{Fleet, Rows, AGENT, MESSAGE_COLUMNS, RECORD_COLUMNS};
use crate::postgres::Postgres;
use crate::servers::{Service, Sql};
use crate::{Backend, Knobs};

/// The collector's SQL for `rows`, 512 messages per transaction: the
/// statements `ingest` issues for each message (`batched` false), or the
/// same rows with one statement of each kind per batch.
fn ingest_sql(rows: &[Rows], batched: bool) -> String {
    let mut s = String::new();
    for batch in rows.chunks(512) {
        s += "BEGIN;\n";
        if batched {
            let ids: Vec<&str> = batch.iter().map(|r| r.id.as_str()).collect();
            let ids = ids.join(",");
            s += &format!(
                "SELECT 1 FROM messages WHERE id IN ({ids}) UNION ALL SELECT 1 FROM quarantine WHERE id IN ({ids});\n\
                 SELECT state, device_key FROM agents WHERE id = '{AGENT}';\n\
                 INSERT INTO records ({RECORD_COLUMNS}) VALUES {} ON CONFLICT DO NOTHING;\n\
                 INSERT INTO messages ({MESSAGE_COLUMNS}) VALUES {} ON CONFLICT (id) DO NOTHING;\n\
                 UPDATE agents SET last_seen = 1 WHERE id = '{AGENT}';\n",
                batch.iter().map(|r| r.record.as_str()).collect::<Vec<_>>().join(","),
                batch.iter().map(|r| r.message.as_str()).collect::<Vec<_>>().join(","),
            );
        } else {
            for r in batch {
                s += &format!(
                    "SELECT 1 FROM messages WHERE id = {id} UNION ALL SELECT 1 FROM quarantine WHERE id = {id};\n\
                     SELECT state, device_key FROM agents WHERE id = '{AGENT}';\n\
                     INSERT INTO records ({RECORD_COLUMNS}) VALUES {} ON CONFLICT DO NOTHING;\n\
                     INSERT INTO messages ({MESSAGE_COLUMNS}) VALUES {} ON CONFLICT (id) DO NOTHING;\n\
                     UPDATE agents SET last_seen = 1 WHERE id = '{AGENT}';\n",
                    r.record,
                    r.message,
                    id = r.id,
                );
            }
        }
        s += "COMMIT;\n";
    }
    s
}

/// Messages per second the database alone keeps `rows` at: the script fed
/// to `sqlite3` (WAL, `synchronous = FULL`, as the service) or `psql`
/// (one round trip per statement, as the service), a fresh database each.
pub fn database_alone(
    k: &Knobs,
    backend: Backend,
    pg: &mut Option<Postgres>,
    fleet: &Fleet,
    rows: &[Rows],
    batched: bool,
    round: usize,
) -> f64 {
    let name = format!("alone_{}_{round}", if batched { "b" } else { "s" });
    let dir = k.dir.join(format!("{name}-{}", backend.tag()));
    let svc = Service::new(k, &dir, backend, pg, &name, "mqtt://127.0.0.1:1");
    svc.enrol(fleet);
    let script = dir.join("ingest.sql");
    let mut text = ingest_sql(rows, batched);
    if backend == Backend::Sqlite {
        text = format!("PRAGMA busy_timeout = 10000;\nPRAGMA synchronous = FULL;\n{text}");
    }
    std::fs::write(&script, text).expect("ingest.sql");
    let secs = svc.db.run_script(&script);
    assert_eq!(
        Sql::open(&svc.db).int("SELECT COUNT(*) FROM records;"),
        rows.len() as i64
    );
    drop(svc);
    let _ = std::fs::remove_dir_all(&dir);
    rows.len() as f64 / secs
}
