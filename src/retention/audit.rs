//! `sargs verify`: chains, receipts and index checked against each other.
//!
//! Reads only. Reports every disagreement by file or record: a chain problem
//! (signature, link, hash, missing media without a receipt), a receipt chain
//! problem, an index row whose state contradicts the files (present but the
//! media is gone, deleted but the media is still there, deleted without a
//! receipt), and a chain the index has not caught up with.

use std::collections::HashSet;
use std::path::Path;

use sargs_core::layout::INDEX_FILE;
use sargs_core::retention::index::{Index, Row};
use sargs_core::retention::receipt::{verify_chain, LiveDeletions};
use sargs_core::seal::verify::{verify_camera_with, Report};

/// What the audit found, per camera and overall.
#[derive(Debug, Default)]
pub struct Audit {
    pub cameras: Vec<(String, Report)>,
    pub receipts: u64,
    pub indexed: bool,
    pub problems: Vec<String>,
}

impl Audit {
    pub fn ok(&self) -> bool {
        self.problems.is_empty() && self.cameras.iter().all(|(_, r)| r.ok())
    }
}

/// Audits the store at `data_dir` of agent `agent` with device key `key`.
///
/// The store may be in use (the agent, or `sargs apply`, writing beside
/// the audit), so it reads in the order a deletion writes, backwards: a
/// deletion makes its receipts durable, then removes the media, then marks
/// the index. The audit reads the index first, then looks for the media,
/// then reads the receipts ([`LiveDeletions`] reads again on a miss). Each
/// thing it finds gone was therefore receipted before it looked at the
/// receipts, and a deletion in progress shows as what it is (the index
/// behind its receipts), never as a deletion without a receipt. Whether the
/// chain has records the index lacks is asked of the index after the
/// chains are read, for the same reason.
pub fn audit(data_dir: &Path, agent: &str, key: &[u8; 32]) -> std::io::Result<Audit> {
    let mut out = Audit::default();
    let cams_dir = data_dir.join("cameras");
    let mut cameras: Vec<String> = match std::fs::read_dir(&cams_dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    cameras.sort();
    let index_path = data_dir.join(INDEX_FILE);
    let shown = index_path.display().to_string();
    let index = if index_path.exists() {
        out.indexed = true;
        match Index::open_read_only(&index_path) {
            Ok(i) => Some(i),
            Err(e) => {
                out.problems.push(format!("{shown}: {e}"));
                None
            }
        }
    } else {
        None
    };
    // 1. The index's rows, and 2. whether each row's media is there.
    let mut looked: Vec<(String, Row, bool)> = Vec::new();
    if let Some(index) = &index {
        for cam in &cameras {
            match rows_of(index, cam) {
                Ok(rows) => looked.extend(rows.into_iter().filter(|r| !r.gap).map(|r| {
                    let exists = cams_dir.join(cam).join(r.media_file()).exists();
                    (cam.clone(), r, exists)
                })),
                Err(e) => out.problems.push(format!("{shown}: {e}")),
            }
        }
    }
    // 3. The chains (a missing media file is judged by the receipts as they
    // are when it was found missing), then the receipt chain itself.
    let receipts_dir = data_dir.join("receipts");
    let live = LiveDeletions::new(&receipts_dir, key);
    for cam in &cameras {
        let r = verify_camera_with(&cams_dir.join(cam), key, &live)?;
        out.cameras.push((cam.clone(), r));
    }
    let chain = verify_chain(&receipts_dir, key)?;
    out.receipts = chain.receipts;
    out.problems.extend(chain.problems.iter().cloned());
    let Some(index) = index else {
        return Ok(out);
    };
    for (cam, r, exists) in &looked {
        let id = r.segment_id(agent);
        let media = cams_dir.join(cam).join(r.media_file());
        match (&r.deleted, exists) {
            (None, false) => out.problems.push(format!(
                "{shown}: {id} is indexed as present but {} is missing",
                media.display()
            )),
            (Some(_), true) => out.problems.push(format!(
                "{shown}: {id} is indexed as deleted but {} still exists",
                media.display()
            )),
            (Some(d), false) if !chain.deleted.contains(&id) => out.problems.push(format!(
                "{shown}: {id} is indexed as deleted (receipt {}) but no valid receipt names it",
                d.receipt
            )),
            _ => {}
        }
    }
    // 4. Records on disk the index does not have, asked after the chains.
    for (cam, report) in &out.cameras {
        let indexed: HashSet<u64> = match rows_of(&index, cam) {
            Ok(rows) => rows.iter().map(|r| r.seq).collect(),
            Err(e) => {
                out.problems.push(format!("{shown}: {e}"));
                continue;
            }
        };
        for m in &report.manifests {
            if !indexed.contains(&m.sequence) {
                out.problems.push(format!(
                    "{shown}: record {} is on disk but not indexed (run `sargs reindex`, or start the agent: it catches up)",
                    m.segment_id
                ));
            }
        }
    }
    Ok(out)
}

fn rows_of(index: &Index, camera: &str) -> rusqlite::Result<Vec<Row>> {
    use chrono::{DateTime, Utc};
    index.in_scope(
        &sargs_core::command::Scope::Range {
            cameras: vec![camera.to_owned()],
            from: DateTime::<Utc>::MIN_UTC,
            to: DateTime::<Utc>::MAX_UTC,
        },
        "",
    )
}
