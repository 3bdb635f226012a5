//! The index's record of offloaded records (table `offloads`): which records
//! of which cameras still wait for the evidence store, and where each one
//! that went is.
//!
//! The queue is every record without an `offloads` row that either belongs
//! to a camera that offloads everything it seals (`offload = "all"`, named
//! by the caller) or is covered by a scope HQ asked to offload (table
//! `offload_wants`: an `offload` command, or a `hold.place` with
//! `offload = true`). A wanted scope is kept like a hold's, one row per
//! camera of a range or per segment id, and written by the retention engine
//! from the command it journaled: like holds, the scopes are rebuilt from
//! the journal by `sargs reindex`, so what HQ asked for is never lost, and a
//! range covers the records sealed after the command as well.
//!
//! Invariant: a row exists only for an object that was read back from the
//! store and matched — the media the SHA-256 its signed manifest names, the
//! manifest the bytes of its file (the agent's `offload` module writes rows
//! only then). The rows are derived state like the rest of the index: after
//! `sargs reindex` they are gone, and the agent finds the objects in the
//! store again, reads them back and records them without a second upload.

use rusqlite::params;

use super::index::{ms, parse_segment_id, Index, Result, Writer};
use crate::command::Scope;

/// A record that waits for the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub camera: String,
    pub seq: u64,
    /// A gap record: a manifest without media.
    pub gap: bool,
    /// Its media was deleted (by retention) before it went: manifest only.
    pub deleted: bool,
    /// SHA-256 of the manifest's payload, as indexed.
    pub manifest_sha256: [u8; 32],
    /// Size of the sealed media file.
    pub bytes: u64,
}

/// Where a record went, verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offloaded {
    /// The store: endpoint and bucket (`https://s3.example.eu/evidence`).
    pub store: String,
    pub manifest_key: String,
    /// SHA-256 of the manifest object (the manifest file's bytes).
    pub manifest_sha256: [u8; 32],
    /// The media object and its SHA-256 (the ciphertext digest the manifest
    /// signs); `None` for a gap record or deleted media.
    pub media: Option<(String, [u8; 32])>,
    pub bytes: u64,
    pub verified_ms: i64,
}

/// How much waits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Waiting {
    pub records: u64,
    pub bytes: u64,
}

const PENDING: &str = "FROM records r JOIN cameras c ON c.id = r.camera \
    LEFT JOIN offloads o ON o.camera = r.camera AND o.seq = r.seq \
    WHERE o.seq IS NULL AND (c.name IN (SELECT value FROM json_each(?1)) \
    OR EXISTS (SELECT 1 FROM offload_wants w WHERE w.camera = c.name AND \
    (w.seq = r.seq OR (w.seq IS NULL AND r.start_ms < w.to_ms AND r.end_ms >= w.from_ms))))";

fn names(cameras: &[String]) -> String {
    serde_json::Value::from(cameras.to_vec()).to_string()
}

impl Index {
    /// `camera`'s record `seq`, if indexed.
    pub fn record(&self, camera: &str, seq: u64) -> Result<Option<super::index::Row>> {
        use rusqlite::OptionalExtension;
        self.conn()
            .query_row(
                &format!(
                    "SELECT {} FROM records r JOIN cameras c ON c.id = r.camera \
                     WHERE c.name = ?1 AND r.seq = ?2",
                    super::index::ROW_COLUMNS
                ),
                params![camera, seq as i64],
                super::index::row,
            )
            .optional()
    }

    /// Up to `limit` records of `cameras` not yet offloaded, oldest sealed
    /// first.
    pub fn offload_pending(&self, cameras: &[String], limit: usize) -> Result<Vec<Pending>> {
        let mut st = self.conn().prepare_cached(&format!(
            "SELECT c.name, r.seq, r.gap, r.deleted_ms IS NOT NULL, r.manifest_sha256, r.bytes \
             {PENDING} ORDER BY r.sealed_ms, r.camera, r.seq LIMIT ?2"
        ))?;
        let rows = st.query_map(
            params![names(cameras), i64::try_from(limit).unwrap_or(i64::MAX)],
            |r| {
                let sha: Vec<u8> = r.get(4)?;
                Ok(Pending {
                    camera: r.get(0)?,
                    seq: r.get::<_, i64>(1)? as u64,
                    gap: r.get(2)?,
                    deleted: r.get(3)?,
                    manifest_sha256: sha.try_into().unwrap_or([0; 32]),
                    bytes: r.get::<_, i64>(5)? as u64,
                })
            },
        )?;
        rows.collect()
    }

    /// How many records of `cameras`, and how many bytes of media, wait.
    pub fn offload_waiting(&self, cameras: &[String]) -> Result<Waiting> {
        self.conn().query_row(
            &format!(
                "SELECT COUNT(*), COALESCE(SUM(CASE WHEN r.gap = 0 AND r.deleted_ms IS NULL \
                 THEN r.bytes ELSE 0 END), 0) {PENDING}"
            ),
            [names(cameras)],
            |r| {
                Ok(Waiting {
                    records: r.get::<_, i64>(0)? as u64,
                    bytes: r.get::<_, i64>(1)? as u64,
                })
            },
        )
    }

    /// How many records `scope` covers, and how many of them are already
    /// offloaded.
    pub fn offload_covered(&self, scope: &Scope, agent: &str) -> Result<(u64, u64)> {
        let rows = self.in_scope(scope, agent)?;
        let mut done = 0;
        for r in &rows {
            if self.offloaded(&r.camera, r.seq)?.is_some() {
                done += 1;
            }
        }
        Ok((rows.len() as u64, done))
    }

    /// Where `camera`'s record `seq` went, if it was verified in the store.
    pub fn offloaded(&self, camera: &str, seq: u64) -> Result<Option<Offloaded>> {
        use rusqlite::OptionalExtension;
        self.conn()
            .query_row(
                "SELECT o.store, o.manifest_key, o.manifest_sha256, o.media_key, o.media_sha256, \
                 o.bytes, o.verified_ms FROM offloads o JOIN cameras c ON c.id = o.camera \
                 WHERE c.name = ?1 AND o.seq = ?2",
                params![camera, seq as i64],
                |r| {
                    let sha = |b: Vec<u8>| b.try_into().unwrap_or([0; 32]);
                    let media_key: Option<String> = r.get(3)?;
                    let media_sha: Option<Vec<u8>> = r.get(4)?;
                    Ok(Offloaded {
                        store: r.get(0)?,
                        manifest_key: r.get(1)?,
                        manifest_sha256: sha(r.get(2)?),
                        media: media_key.zip(media_sha.map(sha)),
                        bytes: r.get::<_, i64>(5)? as u64,
                        verified_ms: r.get(6)?,
                    })
                },
            )
            .optional()
    }
}

impl Writer<'_> {
    /// Records that `command` asked for every record `scope` covers to be
    /// offloaded (segment ids of other agents are ignored, as everywhere).
    pub fn want_offload(&self, command: &str, scope: &Scope, agent: &str) -> Result<()> {
        let mut st = self.tx.prepare_cached(
            "INSERT INTO offload_wants(command, camera, seq, from_ms, to_ms) \
             VALUES (?1,?2,?3,?4,?5)",
        )?;
        match scope {
            Scope::Range { cameras, from, to } => {
                for cam in cameras {
                    st.execute(params![command, cam, None::<i64>, ms(*from), ms(*to)])?;
                }
            }
            Scope::Segments(ids) => {
                for (cam, seq) in ids.iter().filter_map(|id| parse_segment_id(id, agent)) {
                    st.execute(params![command, cam, seq as i64, None::<i64>, None::<i64>])?;
                }
            }
        }
        Ok(())
    }

    /// Records `camera`'s record `seq` as offloaded and verified (once; a
    /// second call for the same record changes nothing).
    pub fn mark_offloaded(&self, camera: &str, seq: u64, o: &Offloaded) -> Result<()> {
        let cam = self.camera_id(camera)?;
        self.tx.execute(
            "INSERT OR IGNORE INTO offloads(camera, seq, store, manifest_key, manifest_sha256, \
             media_key, media_sha256, bytes, verified_ms) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9)",
            params![
                cam,
                seq as i64,
                o.store,
                o.manifest_key,
                &o.manifest_sha256[..],
                o.media.as_ref().map(|(k, _)| k.as_str()),
                o.media.as_ref().map(|(_, h)| &h[..]),
                o.bytes as i64,
                o.verified_ms,
            ],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retention::index::{from_ms, Row};

    fn row(camera: &str, seq: u64, gap: bool, sealed_ms: i64) -> Row {
        Row {
            camera: camera.into(),
            seq,
            gap,
            start: from_ms(sealed_ms - 2000),
            end: from_ms(sealed_ms),
            sealed_at: from_ms(sealed_ms),
            class: "cctv".into(),
            delete_after: from_ms(sealed_ms + 1_000_000),
            cap_at: None,
            bytes: if gap { 0 } else { 1000 + seq },
            manifest_sha256: [seq as u8; 32],
            ciphertext_sha256: (!gap).then_some([0xAA; 32]),
            truncated: false,
            deleted: None,
        }
    }

    fn at(store: &str) -> Offloaded {
        Offloaded {
            store: store.into(),
            manifest_key: "gw/cam-a/0000000001.json".into(),
            manifest_sha256: [1; 32],
            media: Some(("gw/cam-a/0000000001.mp4.age".into(), [0xAA; 32])),
            bytes: 1001,
            verified_ms: 5,
        }
    }

    /// The queue is every record of the named cameras without a row, oldest
    /// sealed first; a record leaves it only through `mark_offloaded`, once.
    #[test]
    fn the_queue_is_the_records_without_a_verified_object() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut index = Index::open(&dir.path().join("index.sqlite")).expect("index");
        {
            let tx = index.tx().expect("tx");
            let w = Writer { tx: &tx };
            w.insert(&row("cam-a", 1, false, 3000)).expect("insert");
            w.insert(&row("cam-b", 1, false, 2000)).expect("insert");
            w.insert(&row("cam-a", 2, true, 4000)).expect("insert");
            w.insert(&row("cam-c", 1, false, 1000)).expect("insert");
            tx.commit().expect("commit");
        }
        let cams = ["cam-a".to_owned(), "cam-b".to_owned()];
        let ids = |index: &Index| -> Vec<(String, u64)> {
            index
                .offload_pending(&cams, 10)
                .expect("pending")
                .into_iter()
                .map(|p| (p.camera, p.seq))
                .collect()
        };
        assert_eq!(
            ids(&index),
            [
                ("cam-b".into(), 1),
                ("cam-a".into(), 1),
                ("cam-a".into(), 2)
            ],
            "oldest sealed first, cam-c not offloading"
        );
        let pending = index.offload_pending(&cams, 1).expect("pending");
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].manifest_sha256, [1; 32]);
        assert_eq!(
            index.offload_waiting(&cams).expect("waiting"),
            Waiting {
                records: 3,
                bytes: 1001 + 1001
            }
        );
        {
            let tx = index.tx().expect("tx");
            let w = Writer { tx: &tx };
            w.mark_offloaded("cam-a", 1, &at("http://s3/evidence"))
                .expect("mark");
            // A second time changes nothing.
            w.mark_offloaded("cam-a", 1, &at("http://elsewhere/other"))
                .expect("mark again");
            tx.commit().expect("commit");
        }
        assert_eq!(ids(&index), [("cam-b".into(), 1), ("cam-a".into(), 2)]);
        assert_eq!(
            index.offloaded("cam-a", 1).expect("read"),
            Some(at("http://s3/evidence"))
        );
        assert_eq!(index.offloaded("cam-a", 2).expect("read"), None);
        assert_eq!(
            index.offload_waiting(&cams).expect("waiting"),
            Waiting {
                records: 2,
                bytes: 1001
            }
        );
    }
}
