//! HQ's database: one schema for the embedded SQLite file and for
//! PostgreSQL, reached through sqlx's `Any` driver, so every query is written
//! once (portable SQL, `$n` parameters, instants as milliseconds since the
//! epoch, flags as 0/1).
//!
//! Migrations are compiled in (`crates/hq/migrations/`) and applied in
//! order at every start; sqlx records each one with its checksum, so a
//! database whose applied migration differs from the binary's is refused
//! rather than guessed at. SQLite runs in WAL mode with `synchronous =
//! FULL`: a transaction that returned from `commit` is on disk, which is
//! what the collector's acknowledgements rely on.

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, ConnectOptions, Executor};

/// The migrations, in order.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "ledger",
        include_str!("../../migrations/0001_ledger.sql"),
    ),
    (2, "heal", include_str!("../../migrations/0002_heal.sql")),
    (
        3,
        "tokens",
        include_str!("../../migrations/0003_tokens.sql"),
    ),
    (
        4,
        "rollups",
        include_str!("../../migrations/0004_rollups.sql"),
    ),
    (
        5,
        "status",
        include_str!("../../migrations/0005_status.sql"),
    ),
    (
        6,
        "claims",
        include_str!("../../migrations/0006_claims.sql"),
    ),
    (
        7,
        "clock_fault",
        include_str!("../../migrations/0007_clock_fault.sql"),
    ),
    (
        8,
        "objects",
        include_str!("../../migrations/0008_objects.sql"),
    ),
];

/// Begins a transaction that will write. On SQLite it takes the write lock
/// at once (`BEGIN IMMEDIATE`), so that it waits its turn under the busy
/// timeout: a deferred transaction that reads first and writes later fails
/// with `database is locked` at once when another writer got in between,
/// since SQLite cannot let it wait without risking a deadlock.
pub async fn write(pool: &AnyPool) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
    if pool.connect_options().database_url.scheme() == "sqlite" {
        pool.begin_with("BEGIN IMMEDIATE").await
    } else {
        pool.begin().await
    }
}

/// Which database is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A connected, migrated database.
#[derive(Debug, Clone)]
pub struct Db {
    pub pool: AnyPool,
    pub backend: Backend,
}

/// Why the database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("database {url}: the migration lock file: {source}")]
    Lock {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("database {url}: migrating the schema: {source}")]
    Migrate {
        url: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
}

impl Db {
    /// Connects to `url` (a SQLite file is created if missing) and brings
    /// its schema up to date.
    pub async fn open(url: &str) -> Result<Db, DbError> {
        sqlx::any::install_default_drivers();
        let shown = redact(url);
        let connect = |source| DbError::Connect {
            url: shown.clone(),
            source,
        };
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        let url = match backend {
            Backend::Sqlite if !url.contains("mode=") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode=rwc")
            }
            _ => url.to_owned(),
        };
        let options = AnyConnectOptions::from_str(&url)
            .map_err(connect)?
            .disable_statement_logging();
        let pool = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Sqlite => 4,
                Backend::Postgres => 8,
            })
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                        conn.execute("PRAGMA synchronous = FULL").await?;
                        // 32 MiB of pages per connection (the default is
                        // 2 MiB): the ledger's indexes take keys in no order
                        // (message ids are hashes), and a batch touches
                        // pages all over them.
                        conn.execute("PRAGMA cache_size = -32768").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(connect)?;
        let migrator = Migrator::with_migrations(
            MIGRATIONS
                .iter()
                .map(|(version, name, sql)| {
                    Migration::new(
                        *version,
                        Cow::Borrowed(*name),
                        MigrationType::Simple,
                        sqlx::SqlStr::from_static(sql),
                        false,
                    )
                })
                .collect(),
        );
        // sqlx serialises migrators with an advisory lock on PostgreSQL; a
        // SQLite file has none, so the service and an operator's command
        // starting together would both apply a migration. A lock file
        // beside the database serialises them (and the switch to WAL); the
        // second finds the migrations applied.
        let _guard = match backend {
            Backend::Sqlite => {
                let path = url.clone();
                // Waiting for the lock blocks: off the runtime's threads.
                let lock = tokio::task::spawn_blocking(move || migration_lock(&path))
                    .await
                    .map_err(std::io::Error::other)
                    .and_then(|r| r);
                Some(lock.map_err(|source| DbError::Lock {
                    url: shown.clone(),
                    source,
                })?)
            }
            Backend::Postgres => None,
        };
        // Switching to WAL takes an exclusive lock that SQLite cannot wait
        // for (its busy timeout does not apply), so two openers of a new
        // file switching at once would fail: it is done under the same lock.
        if backend == Backend::Sqlite {
            pool.execute("PRAGMA journal_mode = WAL")
                .await
                .map_err(connect)?;
        }
        migrator
            .run(&pool)
            .await
            .map_err(|source| DbError::Migrate {
                url: shown.clone(),
                source,
            })?;
        Ok(Db { pool, backend })
    }
}

/// Takes the exclusive lock on `<database file>.migrate-lock` (created if
/// missing), waiting for another process that holds it; released when the
/// returned file is dropped.
fn migration_lock(url: &str) -> std::io::Result<std::fs::File> {
    let rest = url.strip_prefix("sqlite://").unwrap_or(url);
    let path = rest.split_once('?').map_or(rest, |(p, _)| p);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(format!("{path}.migrate-lock"))?;
    file.lock()?;
    Ok(file)
}

/// The URL without its password, for messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Milliseconds since the epoch, as stored.
pub fn ms(t: chrono::DateTime<chrono::Utc>) -> i64 {
    t.timestamp_millis()
}

/// The instant stored as `ms`.
pub fn at(ms: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    /// The service and an operator's command open a new SQLite file at
    /// once: one applies the migrations, the other finds them applied.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_openers_of_a_new_sqlite_file_migrate_it_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("hq.db").display());
        let opens: Vec<_> = (0..4)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move { super::Db::open(&url).await.map(|_| ()) })
            })
            .collect();
        for o in opens {
            o.await.expect("joined").expect("each opens the database");
        }
    }

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            super::redact("postgres://hq:secret@db:5432/hq"),
            "postgres://hq:***@db:5432/hq"
        );
        assert_eq!(super::redact("postgres://hq@db/hq"), "postgres://hq@db/hq");
    }
}
