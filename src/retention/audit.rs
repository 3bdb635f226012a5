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
use sargs_core::retention::receipt::verify_chain;
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
pub fn audit(data_dir: &Path, agent: &str, key: &[u8; 32]) -> std::io::Result<Audit> {
    let mut out = Audit::default();
    let chain = verify_chain(&data_dir.join("receipts"), key)?;
    out.receipts = chain.receipts;
    out.problems.extend(chain.problems.iter().cloned());
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
    for cam in &cameras {
        let r = verify_camera_with(&cams_dir.join(cam), key, &chain.deleted)?;
        out.cameras.push((cam.clone(), r));
    }
    let index_path = data_dir.join(INDEX_FILE);
    if !index_path.exists() {
        return Ok(out);
    }
    out.indexed = true;
    let index = match Index::open_read_only(&index_path) {
        Ok(i) => i,
        Err(e) => {
            out.problems.push(format!("{}: {e}", index_path.display()));
            return Ok(out);
        }
    };
    let shown = index_path.display().to_string();
    for (cam, report) in &out.cameras {
        let rows = match rows_of(&index, cam) {
            Ok(r) => r,
            Err(e) => {
                out.problems.push(format!("{shown}: {e}"));
                continue;
            }
        };
        let indexed: HashSet<u64> = rows.iter().map(|r| r.seq).collect();
        for m in &report.manifests {
            if !indexed.contains(&m.sequence) {
                out.problems.push(format!(
                    "{shown}: record {} is on disk but not indexed (run `sargs reindex`, or start the agent: it catches up)",
                    m.segment_id
                ));
            }
        }
        let dir = cams_dir.join(cam);
        for r in rows.iter().filter(|r| !r.gap) {
            let id = r.segment_id(agent);
            let media = dir.join(r.media_file());
            let exists = media.exists();
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
