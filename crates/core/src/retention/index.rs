//! The segment index: one SQLite database (WAL, `synchronous=FULL`) beside
//! the chains, `<data_dir>/index.sqlite`.
//!
//! Invariants: one writer (the agent's retention engine, behind its lock);
//! every change that must survive is committed in one transaction before the
//! caller acknowledges it. The index is derived state: segments come from the
//! camera chains, deletions from the receipt chain, holds, requests and
//! restrictions and the scopes HQ asked to offload from the command journal —
//! `sargs reindex` rebuilds it from
//! those files alone. Instants are stored as Unix milliseconds (UTC), hashes
//! as 32-byte blobs, cameras as small integers, to keep ~100 bytes a segment.

use std::path::Path;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::rules::{Coverage, Facts, Hold, Protections, Request, Restriction};
use crate::command::Scope;

pub type Result<T> = std::result::Result<T, rusqlite::Error>;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cameras(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS records(
  camera INTEGER NOT NULL,
  seq INTEGER NOT NULL,
  gap INTEGER NOT NULL,
  start_ms INTEGER NOT NULL,
  end_ms INTEGER NOT NULL,
  sealed_ms INTEGER NOT NULL,
  class TEXT NOT NULL,
  delete_after_ms INTEGER NOT NULL,
  cap_ms INTEGER,
  bytes INTEGER NOT NULL,
  manifest_sha256 BLOB NOT NULL,
  ciphertext_sha256 BLOB,
  truncated INTEGER NOT NULL,
  deleted_ms INTEGER,
  receipt INTEGER,
  reason TEXT,
  PRIMARY KEY(camera, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS records_due ON records(delete_after_ms) WHERE deleted_ms IS NULL AND gap = 0;
CREATE INDEX IF NOT EXISTS records_time ON records(camera, start_ms);
CREATE TABLE IF NOT EXISTS holds(
  id TEXT PRIMARY KEY, command TEXT NOT NULL, case_ref TEXT NOT NULL, issuer TEXT NOT NULL,
  scope TEXT NOT NULL, placed_ms INTEGER NOT NULL, until_ms INTEGER, beyond_cap_ms INTEGER,
  released_ms INTEGER, cap_warned_ms INTEGER);
CREATE TABLE IF NOT EXISTS requests(
  id TEXT PRIMARY KEY, command TEXT NOT NULL, scope TEXT NOT NULL, opened_ms INTEGER NOT NULL,
  due_ms INTEGER NOT NULL, closed_ms INTEGER);
CREATE TABLE IF NOT EXISTS restrictions(
  id TEXT PRIMARY KEY, command TEXT NOT NULL, scope TEXT NOT NULL, reason TEXT NOT NULL,
  placed_ms INTEGER NOT NULL, lifted_ms INTEGER);
CREATE TABLE IF NOT EXISTS originals(
  camera INTEGER NOT NULL, sha256 BLOB NOT NULL, seq INTEGER NOT NULL, name TEXT NOT NULL,
  bytes INTEGER NOT NULL, PRIMARY KEY(camera, sha256)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS originals_name ON originals(camera, name, bytes);
CREATE TABLE IF NOT EXISTS commands(
  id TEXT PRIMARY KEY, kind TEXT NOT NULL, applied_ms INTEGER NOT NULL, response TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS offloads(
  camera INTEGER NOT NULL, seq INTEGER NOT NULL, store TEXT NOT NULL, manifest_key TEXT NOT NULL,
  manifest_sha256 BLOB NOT NULL, media_key TEXT, media_sha256 BLOB, bytes INTEGER NOT NULL,
  verified_ms INTEGER NOT NULL, PRIMARY KEY(camera, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS offload_wants(
  command TEXT NOT NULL, camera TEXT NOT NULL, seq INTEGER, from_ms INTEGER, to_ms INTEGER);
CREATE INDEX IF NOT EXISTS offload_wants_camera ON offload_wants(camera);
";

/// A position in deadline order: `(delete_after_ms, camera, seq)`.
pub type Cursor = (i64, i64, i64);

/// One record (segment or gap) as indexed.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub camera: String,
    pub seq: u64,
    pub gap: bool,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub sealed_at: DateTime<Utc>,
    pub class: String,
    pub delete_after: DateTime<Utc>,
    pub cap_at: Option<DateTime<Utc>>,
    pub bytes: u64,
    pub manifest_sha256: [u8; 32],
    pub ciphertext_sha256: Option<[u8; 32]>,
    pub truncated: bool,
    pub deleted: Option<Deletion>,
}

/// The original file of an ingested record (from its manifest's `dock`).
#[derive(Debug, Clone, PartialEq)]
pub struct Original {
    pub sha256: [u8; 32],
    /// Path on the camera, relative to its storage.
    pub name: String,
    pub bytes: u64,
}

/// How and when a record's media was deleted.
#[derive(Debug, Clone, PartialEq)]
pub struct Deletion {
    pub at: DateTime<Utc>,
    pub receipt: u64,
    pub reason: String,
}

impl Row {
    /// `agent/camera/sequence`.
    pub fn segment_id(&self, agent: &str) -> String {
        format!("{agent}/{}/{}", self.camera, self.seq)
    }

    /// The sealed media file's name in the camera directory.
    pub fn media_file(&self) -> String {
        format!("{:010}.mp4.age", self.seq)
    }

    pub fn facts<'a>(&'a self, id: &'a str) -> Facts<'a> {
        Facts {
            id,
            camera: &self.camera,
            start: self.start,
            end: self.end,
            delete_after: self.delete_after,
            cap_at: self.cap_at,
        }
    }
}

pub fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// Rounded up: a deadline kept at millisecond resolution is never earlier.
pub fn ms_ceil(t: DateTime<Utc>) -> i64 {
    let m = t.timestamp_millis();
    if t.timestamp_subsec_nanos().is_multiple_of(1_000_000) {
        m
    } else {
        m + 1
    }
}

pub fn from_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn hash(blob: Option<Vec<u8>>) -> Option<[u8; 32]> {
    blob.and_then(|b| b.try_into().ok())
}

pub(crate) const ROW_COLUMNS: &str =
    "c.name, r.seq, r.gap, r.start_ms, r.end_ms, r.sealed_ms, r.class, \
    r.delete_after_ms, r.cap_ms, r.bytes, r.manifest_sha256, r.ciphertext_sha256, r.truncated, \
    r.deleted_ms, r.receipt, r.reason";

pub(crate) fn row(r: &rusqlite::Row<'_>) -> Result<Row> {
    let deleted_ms: Option<i64> = r.get(13)?;
    Ok(Row {
        camera: r.get(0)?,
        seq: r.get::<_, i64>(1)? as u64,
        gap: r.get(2)?,
        start: from_ms(r.get(3)?),
        end: from_ms(r.get(4)?),
        sealed_at: from_ms(r.get(5)?),
        class: r.get(6)?,
        delete_after: from_ms(r.get(7)?),
        cap_at: r.get::<_, Option<i64>>(8)?.map(from_ms),
        bytes: r.get::<_, i64>(9)? as u64,
        manifest_sha256: hash(r.get(10)?).unwrap_or([0; 32]),
        ciphertext_sha256: hash(r.get(11)?),
        truncated: r.get(12)?,
        deleted: match deleted_ms {
            Some(at) => Some(Deletion {
                at: from_ms(at),
                receipt: r.get::<_, Option<i64>>(14)?.unwrap_or(0) as u64,
                reason: r.get::<_, Option<String>>(15)?.unwrap_or_default(),
            }),
            None => None,
        },
    })
}

/// The database.
pub struct Index {
    conn: Connection,
}

impl Index {
    /// Opens (creating) the index at `path`.
    pub fn open(path: &Path) -> Result<Index> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.execute_batch(SCHEMA)?;
        Ok(Index { conn })
    }

    /// Opens an existing index read-only (for `status`, `verify`).
    pub fn open_read_only(path: &Path) -> Result<Index> {
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        Ok(Index { conn })
    }

    pub fn tx(&mut self) -> Result<Transaction<'_>> {
        self.conn.transaction()
    }

    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
    }

    /// Highest sequence indexed for `camera` (0 if none).
    pub fn camera_head(&self, camera: &str) -> Result<u64> {
        let seq: Option<i64> = self.conn.query_row(
            "SELECT MAX(r.seq) FROM records r JOIN cameras c ON c.id = r.camera WHERE c.name = ?1",
            [camera],
            |r| r.get(0),
        )?;
        Ok(seq.unwrap_or(0) as u64)
    }

    /// The newest `sealed_at` of any record: each camera's last record,
    /// found through the primary key (no table scan).
    pub fn newest_sealed(&self) -> Result<Option<DateTime<Utc>>> {
        let v: Option<i64> = self.conn.query_row(
            "SELECT MAX((SELECT r.sealed_ms FROM records r WHERE r.camera = c.id \
             ORDER BY r.seq DESC LIMIT 1)) FROM cameras c",
            [],
            |r| r.get(0),
        )?;
        Ok(v.map(from_ms))
    }

    /// Present segments whose deadline is at or before `now`, earliest first,
    /// after the cursor `(delete_after_ms, camera, seq)`.
    pub fn due(
        &self,
        now: DateTime<Utc>,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<Vec<(Row, Cursor)>> {
        self.ordered(Some(ms(now)), after, limit)
    }

    /// Present segments in deadline order (for disk pressure), after the cursor.
    pub fn by_deadline(&self, after: Option<Cursor>, limit: usize) -> Result<Vec<(Row, Cursor)>> {
        self.ordered(None, after, limit)
    }

    fn ordered(
        &self,
        until: Option<i64>,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<Vec<(Row, Cursor)>> {
        let (a_ms, a_cam, a_seq) = after.unwrap_or((i64::MIN, i64::MIN, i64::MIN));
        let sql = format!(
            "SELECT {ROW_COLUMNS}, r.camera FROM records r JOIN cameras c ON c.id = r.camera \
             WHERE r.deleted_ms IS NULL AND r.gap = 0 AND r.delete_after_ms <= ?1 \
             AND (r.delete_after_ms, r.camera, r.seq) > (?2, ?3, ?4) \
             ORDER BY r.delete_after_ms, r.camera, r.seq LIMIT ?5"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(
            params![until.unwrap_or(i64::MAX), a_ms, a_cam, a_seq, limit as i64],
            |r| {
                let row = row(r)?;
                let cam: i64 = r.get(16)?;
                let cursor = (ms(row.delete_after), cam, row.seq as i64);
                Ok((row, cursor))
            },
        )?;
        rows.collect()
    }

    /// Every record (present or deleted) a scope covers, in camera/time order.
    pub fn in_scope(&self, scope: &Scope, agent: &str) -> Result<Vec<Row>> {
        match scope {
            Scope::Range { cameras, from, to } => {
                let sql = format!(
                    "SELECT {ROW_COLUMNS} FROM records r JOIN cameras c ON c.id = r.camera \
                     WHERE c.name = ?1 AND r.start_ms < ?3 AND r.end_ms >= ?2 \
                     ORDER BY r.seq"
                );
                let mut stmt = self.conn.prepare_cached(&sql)?;
                let mut out = Vec::new();
                for cam in cameras {
                    // start_ms < to: the time index bounds the scan; end_ms >= from filters.
                    let rows = stmt.query_map(params![cam, ms(*from), ms(*to)], row)?;
                    for r in rows {
                        out.push(r?);
                    }
                }
                Ok(out)
            }
            Scope::Segments(ids) => {
                let sql = format!(
                    "SELECT {ROW_COLUMNS} FROM records r JOIN cameras c ON c.id = r.camera \
                     WHERE c.name = ?1 AND r.seq = ?2"
                );
                let mut stmt = self.conn.prepare_cached(&sql)?;
                let mut out = Vec::new();
                for id in ids {
                    let Some((camera, seq)) = parse_segment_id(id, agent) else {
                        continue;
                    };
                    if let Some(r) = stmt
                        .query_row(params![camera, seq as i64], row)
                        .optional()?
                    {
                        out.push(r);
                    }
                }
                Ok(out)
            }
        }
    }

    /// Every hold, request and restriction (including ended ones). A stored
    /// scope that does not parse is an error, never an empty coverage: a
    /// protection must not silently stop covering anything.
    pub fn protections(&self) -> Result<Protections> {
        let scope = |s: String| -> Result<Coverage> {
            serde_json::from_str::<Scope>(&s)
                .map(|s| Coverage::from(&s))
                .map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(
                        0,
                        rusqlite::types::Type::Text,
                        e.into(),
                    )
                })
        };
        let mut p = Protections::default();
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, scope, until_ms, beyond_cap_ms, released_ms FROM holds")?;
        for h in stmt.query_map([], |r| {
            Ok(Hold {
                id: r.get(0)?,
                coverage: scope(r.get(1)?)?,
                until: r.get::<_, Option<i64>>(2)?.map(from_ms),
                beyond_cap_until: r.get::<_, Option<i64>>(3)?.map(from_ms),
                released: r.get::<_, Option<i64>>(4)?.is_some(),
            })
        })? {
            p.holds.push(h?);
        }
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, scope, due_ms, closed_ms FROM requests")?;
        for q in stmt.query_map([], |r| {
            Ok(Request {
                id: r.get(0)?,
                coverage: scope(r.get(1)?)?,
                due: from_ms(r.get(2)?),
                closed: r.get::<_, Option<i64>>(3)?.is_some(),
            })
        })? {
            p.requests.push(q?);
        }
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, scope, lifted_ms FROM restrictions")?;
        for q in stmt.query_map([], |r| {
            Ok(Restriction {
                id: r.get(0)?,
                coverage: scope(r.get(1)?)?,
                lifted: r.get::<_, Option<i64>>(2)?.is_some(),
            })
        })? {
            p.restrictions.push(q?);
        }
        Ok(p)
    }

    /// The last command applied: `(id, kind, applied_at)`.
    pub fn last_command(&self) -> Result<Option<(String, String, DateTime<Utc>)>> {
        self.conn
            .query_row(
                "SELECT id, kind, applied_ms FROM commands ORDER BY applied_ms DESC, rowid DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, from_ms(r.get(2)?))),
            )
            .optional()
    }

    /// The record of `camera` that sealed an original with this SHA-256.
    pub fn original_by_hash(&self, camera: &str, sha256: &[u8; 32]) -> Result<Option<u64>> {
        self.conn
            .query_row(
                "SELECT o.seq FROM originals o JOIN cameras c ON c.id = o.camera \
                 WHERE c.name = ?1 AND o.sha256 = ?2",
                params![camera, &sha256[..]],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map(|s| s.map(|s| s as u64))
    }

    /// Records of `camera` that sealed an original of this name and size:
    /// `(sequence, original SHA-256)`, oldest first.
    pub fn originals_named(
        &self,
        camera: &str,
        name: &str,
        bytes: u64,
    ) -> Result<Vec<(u64, [u8; 32])>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT o.seq, o.sha256 FROM originals o JOIN cameras c ON c.id = o.camera \
             WHERE c.name = ?1 AND o.name = ?2 AND o.bytes = ?3 ORDER BY o.seq",
        )?;
        let rows = stmt.query_map(params![camera, name, bytes as i64], |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                hash(r.get(1)?).unwrap_or([0; 32]),
            ))
        })?;
        rows.collect()
    }

    /// The stored response of an already seen command.
    pub fn seen(&self, id: &str) -> Result<Option<String>> {
        self.conn
            .query_row("SELECT response FROM commands WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()
    }
}

/// Splits `agent/camera/seq` for this agent.
pub fn parse_segment_id(id: &str, agent: &str) -> Option<(String, u64)> {
    let rest = id.strip_prefix(agent)?.strip_prefix('/')?;
    let (camera, seq) = rest.rsplit_once('/')?;
    Some((camera.to_owned(), seq.parse().ok()?))
}

/// Writes inside one transaction.
pub struct Writer<'t> {
    pub tx: &'t Transaction<'t>,
}

impl Writer<'_> {
    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.tx.execute(
            "INSERT INTO meta(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = ?2",
            params![key, value],
        )?;
        Ok(())
    }

    pub(crate) fn camera_id(&self, name: &str) -> Result<i64> {
        self.tx
            .execute("INSERT OR IGNORE INTO cameras(name) VALUES (?1)", [name])?;
        self.tx
            .query_row("SELECT id FROM cameras WHERE name = ?1", [name], |r| {
                r.get(0)
            })
    }

    /// Inserts a record; an existing (camera, seq) is left as it is.
    pub fn insert(&self, r: &Row) -> Result<()> {
        let cam = self.camera_id(&r.camera)?;
        let mut stmt = self.tx.prepare_cached(
            "INSERT OR IGNORE INTO records(camera, seq, gap, start_ms, end_ms, sealed_ms, class, \
             delete_after_ms, cap_ms, bytes, manifest_sha256, ciphertext_sha256, truncated, \
             deleted_ms, receipt, reason) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16)",
        )?;
        stmt.execute(params![
            cam,
            r.seq as i64,
            r.gap,
            ms(r.start),
            ms(r.end),
            ms(r.sealed_at),
            r.class,
            ms_ceil(r.delete_after),
            r.cap_at.map(ms),
            r.bytes as i64,
            &r.manifest_sha256[..],
            r.ciphertext_sha256.as_ref().map(|h| &h[..]),
            r.truncated,
            r.deleted.as_ref().map(|d| ms(d.at)),
            r.deleted.as_ref().map(|d| d.receipt as i64),
            r.deleted.as_ref().map(|d| d.reason.clone()),
        ])?;
        Ok(())
    }

    /// Inserts a record and, for an ingest, the original it sealed.
    pub fn insert_with(&self, r: &Row, original: Option<&Original>) -> Result<()> {
        self.insert(r)?;
        match original {
            Some(o) => self.insert_original(&r.camera, r.seq, o),
            None => Ok(()),
        }
    }

    /// Notes the original an ingested record sealed; an original already
    /// noted (sealed twice, which `sargs verify` reports) keeps its first record.
    pub fn insert_original(&self, camera: &str, seq: u64, o: &Original) -> Result<()> {
        let cam = self.camera_id(camera)?;
        let mut stmt = self.tx.prepare_cached(
            "INSERT OR IGNORE INTO originals(camera, sha256, seq, name, bytes) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        stmt.execute(params![
            cam,
            &o.sha256[..],
            seq as i64,
            o.name,
            o.bytes as i64
        ])?;
        Ok(())
    }

    pub fn mark_deleted(&self, camera: &str, seq: u64, d: &Deletion) -> Result<()> {
        let mut stmt = self.tx.prepare_cached(
            "UPDATE records SET deleted_ms = ?3, receipt = ?4, reason = ?5 \
             WHERE camera = (SELECT id FROM cameras WHERE name = ?1) AND seq = ?2",
        )?;
        stmt.execute(params![
            camera,
            seq as i64,
            ms(d.at),
            d.receipt as i64,
            d.reason
        ])?;
        Ok(())
    }

    pub fn record_command(
        &self,
        id: &str,
        kind: &str,
        at: DateTime<Utc>,
        response: &str,
    ) -> Result<()> {
        self.tx.execute(
            "INSERT OR REPLACE INTO commands(id, kind, applied_ms, response) VALUES (?1, ?2, ?3, ?4)",
            params![id, kind, ms(at), response],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_protection_whose_stored_scope_does_not_parse_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let index = Index::open(&dir.path().join(crate::layout::INDEX_FILE)).expect("index");
        index
            .conn()
            .execute(
                "INSERT INTO restrictions(id, command, scope, reason, placed_ms) \
                 VALUES ('X-1', 'c-1', '{\"cameras\":', 'contested', 0)",
                [],
            )
            .expect("insert");
        assert!(
            index.protections().is_err(),
            "an unreadable scope must not silently cover nothing"
        );
    }
}
