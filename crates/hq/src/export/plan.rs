//! What the scope covers and what becomes of each record, decided before
//! anything is decrypted: chains and receipts verified with the device key,
//! restrictions read from the agent's index (see the module above for why the
//! index of a stopped store is read from a private copy).

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use super::{
    millis, AppliedCommand, ExportError, IndexState, ReceiptRef, Refusal, RefusalReason, Request,
};
use sargs_core::command::Scope;
use sargs_core::layout::INDEX_FILE;
use sargs_core::retention::index::Index;
use sargs_core::retention::receipt::{verify_chain, ChainReport};
use sargs_core::retention::rules::{Coverage, Facts, Protections};
use sargs_core::seal::manifest::{Manifest, RecordKind};
use sargs_core::seal::sign::Envelope;
use sargs_core::seal::verify::{verify_camera_checked, MediaCheck, MediaState, Report, Verdict};

/// Everything decided about the scope.
pub(crate) struct Plan {
    pub agent: String,
    pub items: Vec<Item>,
    pub index: IndexState,
}

/// One record in scope.
pub(crate) enum Item {
    /// Verified, unrestricted, media present: to be decrypted.
    Export(Candidate),
    /// A gap record: its manifest is copied.
    Gap(Candidate),
    /// Not exported; a deleted segment's receipt is copied.
    Refuse(Box<Refusal>, Option<ReceiptFile>),
}

/// A verified record and where it lives in the source.
pub(crate) struct Candidate {
    pub camera: String,
    /// The camera's directory in the data directory.
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub manifest_sha256: String,
}

/// A verified receipt to copy.
pub(crate) struct ReceiptFile {
    pub path: PathBuf,
    pub sha256: String,
}

/// A position in a camera's chain: a record file, or a sequence number
/// with no file (a hole).
enum Slot<'r> {
    Record(&'r Verdict, Option<&'r Manifest>),
    Absent(u64),
}

impl Slot<'_> {
    fn sequence(&self) -> u64 {
        match self {
            Slot::Record(v, _) => v.sequence,
            Slot::Absent(s) => *s,
        }
    }
    fn manifest(&self) -> Option<&Manifest> {
        match self {
            Slot::Record(_, m) => *m,
            Slot::Absent(_) => None,
        }
    }
}

impl Plan {
    /// Reads and verifies what `req` covers; `scratch` is a private folder
    /// for the index copy.
    pub fn make(req: &Request<'_>, scratch: &Path) -> Result<Plan, ExportError> {
        let data_dir = &req.data_dir;
        let cams_dir = data_dir.join("cameras");
        let bad_dir = |reason: String| ExportError::DataDir {
            path: data_dir.clone(),
            reason,
        };
        match std::fs::metadata(data_dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(bad_dir("not a directory".into())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(bad_dir("no such data directory".into()))
            }
            Err(e) => return Err(bad_dir(e.to_string())),
        }
        if !cams_dir.is_dir() {
            return Err(bad_dir(
                "not an agent's data directory (it has no cameras/ folder)".into(),
            ));
        }
        let wanted = wanted(&req.scope, &cams_dir)?;
        let receipts = verify_chain(&data_dir.join("receipts"), &req.device_key)
            .map_err(ExportError::io(&data_dir.join("receipts")))?;
        let (prot, index) = read_index(data_dir, scratch)?;
        let mut reports = Vec::new();
        for (camera, _) in &wanted {
            let dir = cams_dir.join(camera);
            check_device_key(&dir, &req.device_key)?;
            let report =
                verify_camera_checked(&dir, &req.device_key, &receipts.deleted, MediaCheck::Size)
                    .map_err(ExportError::io(&dir))?;
            reports.push(report);
        }
        let agent = reports
            .iter()
            .flat_map(|r| r.manifests.first())
            .map(|m| m.agent_id.clone())
            .next()
            .ok_or_else(|| {
                bad_dir("no record of the cameras in scope verifies against the device key".into())
            })?;
        let ctx = Ctx {
            data_dir,
            agent: &agent,
            prot: &prot,
            receipts: &receipts,
        };
        let mut items = Vec::new();
        for ((camera, seqs), report) in wanted.iter().zip(&reports) {
            let dir = cams_dir.join(camera);
            let slots = slots(report);
            let chosen: Vec<&Slot<'_>> = match seqs {
                None => in_range(&slots, &req.scope),
                Some(seqs) => by_sequence(&slots, seqs, camera, &ctx, &dir)?,
            };
            for slot in chosen {
                items.push(ctx.classify(slot, camera, &dir));
            }
        }
        if items.is_empty() {
            return Err(ExportError::Scope(format!(
                "covers no record in {} (nothing recorded there in that time)",
                cams_dir.display()
            )));
        }
        Ok(Plan {
            agent,
            items,
            index,
        })
    }
}

/// The cameras in scope, in the order named, each with its explicit
/// segment ids by sequence number, or `None` (a time range).
type Wanted = Vec<(String, Option<BTreeMap<u64, String>>)>;

fn wanted(scope: &Scope, cams_dir: &Path) -> Result<Wanted, ExportError> {
    let mut out: Wanted = Vec::new();
    let mut add = |camera: &str, seq: Option<(u64, &String)>| -> Result<(), ExportError> {
        if let Err(why) = sargs_core::config::check::id(camera) {
            return Err(ExportError::Scope(format!("camera {why}")));
        }
        if !cams_dir.join(camera).is_dir() {
            return Err(ExportError::Scope(format!(
                "no camera {camera:?} in {} (it has: {})",
                cams_dir.display(),
                camera_names(cams_dir).join(", ")
            )));
        }
        let pos = match out.iter().position(|(c, _)| c == camera) {
            Some(p) => p,
            None => {
                out.push((camera.to_owned(), seq.map(|_| BTreeMap::new())));
                out.len() - 1
            }
        };
        if let (Some((seq, id)), Some(seqs)) = (seq, out[pos].1.as_mut()) {
            seqs.insert(seq, id.clone());
        }
        Ok(())
    };
    match scope {
        Scope::Range { cameras, from, to } => {
            if from >= to {
                return Err(ExportError::Scope(format!("{from} is not before {to}")));
            }
            for c in cameras {
                add(c, None)?;
            }
        }
        Scope::Segments(ids) => {
            for id in ids {
                let parts: Vec<&str> = id.split('/').collect();
                let seq = match parts[..] {
                    [_, _, seq] => seq.parse::<u64>().ok().filter(|s| *s > 0),
                    _ => None,
                };
                let Some(seq) = seq else {
                    return Err(ExportError::Scope(format!(
                        "segment id {id:?} is not agent/camera/sequence"
                    )));
                };
                add(parts[1], Some((seq, id)))?;
            }
        }
    }
    if out.is_empty() {
        return Err(ExportError::Scope("names no camera or segment".into()));
    }
    Ok(out)
}

fn camera_names(cams_dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(cams_dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .collect();
    v.sort();
    v
}

/// A wrong `--device-key` is bad input, not a verdict on each record: the
/// camera's first record names the key that signed it.
fn check_device_key(dir: &Path, key: &[u8; 32]) -> Result<(), ExportError> {
    use base64::Engine;
    let first = std::fs::read_dir(dir)
        .map_err(ExportError::io(dir))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name();
            let seq = name.to_str()?.strip_suffix(".json")?.parse::<u64>().ok()?;
            Some((seq, e.path()))
        })
        .min();
    let Some((_, path)) = first else {
        return Ok(());
    };
    let bytes = std::fs::read(&path).map_err(ExportError::io(&path))?;
    let Ok(env) = serde_json::from_slice::<Envelope>(&bytes) else {
        return Ok(()); // unreadable: the verification reports it
    };
    let expected = base64::engine::general_purpose::STANDARD.encode(key);
    if env.key != expected {
        return Err(ExportError::WrongDeviceKey {
            path,
            found: env.key,
            expected,
        });
    }
    Ok(())
}

/// The chain's positions in order, holes included.
fn slots(report: &Report) -> Vec<Slot<'_>> {
    let mut out = Vec::new();
    let mut next = 1;
    for v in &report.verdicts {
        out.extend((next..v.sequence).map(Slot::Absent));
        out.push(Slot::Record(v, v.manifest.map(|i| &report.manifests[i])));
        next = v.sequence + 1;
    }
    out
}

fn facts(m: &Manifest) -> Facts<'_> {
    Facts {
        id: &m.segment_id,
        camera: &m.camera_id,
        start: millis(m.start),
        end: millis(m.end),
        delete_after: m.retention.delete_after,
        cap_at: None,
    }
}

/// The slots a time range covers. A position whose manifest cannot be read
/// is placed by its neighbours: it lies between the previous record's end
/// and the next one's start, and is in scope if that stretch overlaps.
fn in_range<'s, 'r>(slots: &'s [Slot<'r>], scope: &Scope) -> Vec<&'s Slot<'r>> {
    let Scope::Range { from, to, .. } = scope else {
        return Vec::new();
    };
    let coverage = Coverage::from(scope);
    let (from, to) = (millis(*from), millis(*to));
    let mut out = Vec::new();
    for (i, slot) in slots.iter().enumerate() {
        let covered = match slot.manifest() {
            Some(m) => coverage.covers(&facts(m)),
            None => {
                let lo = slots[..i]
                    .iter()
                    .rev()
                    .find_map(|s| s.manifest().map(|m| millis(m.end)))
                    .unwrap_or(DateTime::<Utc>::MIN_UTC);
                let hi = slots[i + 1..]
                    .iter()
                    .find_map(|s| s.manifest().map(|m| millis(m.start)))
                    .unwrap_or(DateTime::<Utc>::MAX_UTC);
                lo < to && hi >= from
            }
        };
        if covered {
            out.push(slot);
        }
    }
    out
}

/// The slots named by sequence number; a number past the chain's end, or a
/// record that is not the segment id named, is a bad scope.
fn by_sequence<'s, 'r>(
    slots: &'s [Slot<'r>],
    seqs: &BTreeMap<u64, String>,
    camera: &str,
    ctx: &Ctx<'_>,
    dir: &Path,
) -> Result<Vec<&'s Slot<'r>>, ExportError> {
    let mut out = Vec::new();
    for (&seq, named) in seqs {
        let id = format!("{}/{camera}/{seq}", ctx.agent);
        if *named != id {
            return Err(ExportError::Scope(format!(
                "segment id {named} is not of agent {}, whose recordings {} holds",
                ctx.agent,
                dir.display()
            )));
        }
        let Some(slot) = slots.iter().find(|s| s.sequence() == seq) else {
            return Err(ExportError::Scope(format!(
                "no segment {id} in {} (its chain has {} record(s))",
                dir.display(),
                slots.len()
            )));
        };
        if let Some(m) = slot.manifest() {
            if m.segment_id != id {
                return Err(ExportError::Scope(format!(
                    "no segment {id}: record {seq} of {} is {}",
                    dir.display(),
                    m.segment_id
                )));
            }
        }
        out.push(slot);
    }
    Ok(out)
}

struct Ctx<'a> {
    data_dir: &'a Path,
    agent: &'a str,
    prot: &'a Protections,
    receipts: &'a ChainReport,
}

impl Ctx<'_> {
    fn classify(&self, slot: &Slot<'_>, camera: &str, dir: &Path) -> Item {
        let seq = slot.sequence();
        let rel = |name: String| format!("cameras/{camera}/{name}");
        let manifest_file = rel(format!("{seq:010}.json"));
        let mut refusal = Refusal {
            segment_id: format!("{}/{camera}/{seq}", self.agent),
            camera: camera.to_owned(),
            sequence: seq,
            start: None,
            end: None,
            manifest_sha256: None,
            reason: RefusalReason::Unverified,
            detail: String::new(),
            restriction: None,
            receipt: None,
        };
        let refuse = |mut r: Refusal, reason, detail: String| {
            r.reason = reason;
            r.detail = detail;
            Item::Refuse(Box::new(r), None)
        };
        let (verdict, m) = match slot {
            Slot::Absent(_) => {
                let detail = format!("{manifest_file}: missing from the chain");
                return refuse(refusal, RefusalReason::Unverified, detail);
            }
            Slot::Record(v, None) => {
                let detail = problems(&manifest_file, v.problems());
                return refuse(refusal, RefusalReason::Unverified, detail);
            }
            Slot::Record(v, Some(m)) => (v, m),
        };
        let sha = verdict.manifest_sha256.clone().unwrap_or_default();
        refusal.segment_id = m.segment_id.clone();
        refusal.start = Some(m.start);
        refusal.end = Some(m.end);
        refusal.manifest_sha256 = Some(sha.clone());
        if !verdict.chain.is_empty() {
            let detail = problems(&manifest_file, verdict.chain.iter().cloned());
            return refuse(refusal, RefusalReason::Unverified, detail);
        }
        let candidate = Candidate {
            camera: camera.to_owned(),
            dir: dir.to_owned(),
            manifest: (*m).clone(),
            manifest_sha256: sha.clone(),
        };
        if m.record == RecordKind::Gap {
            return Item::Gap(candidate);
        }
        let media_file = rel(m.media.as_ref().map(|f| f.file.clone()).unwrap_or_default());
        match &verdict.media {
            Some(MediaState::Deleted) => match self.receipts.by_segment.get(&m.segment_id) {
                Some((r, rsha)) if r.manifest_sha256 == sha => {
                    let file = format!("receipts/{:010}.json", r.sequence);
                    refusal.receipt = Some(ReceiptRef {
                        sequence: r.sequence,
                        file: file.clone(),
                        deleted_at: r.deleted_at,
                        reason: r.reason.as_str().to_owned(),
                        command_id: r.command_id.clone(),
                    });
                    refusal.reason = RefusalReason::Deleted;
                    refusal.detail = format!(
                        "deleted at {} ({}), receipt {file}",
                        r.deleted_at,
                        r.reason.as_str()
                    );
                    let copy = ReceiptFile {
                        path: self
                            .data_dir
                            .join("receipts")
                            .join(format!("{:010}.json", r.sequence)),
                        sha256: rsha.clone(),
                    };
                    Item::Refuse(Box::new(refusal), Some(copy))
                }
                _ => refuse(
                    refusal,
                    RefusalReason::Missing,
                    format!("{media_file}: missing; its receipt names another manifest"),
                ),
            },
            Some(MediaState::Missing) | None => {
                let partial = dir.join(format!("{seq:010}.{}", sargs_core::layout::PARTIAL_EXT));
                let detail = if partial.exists() {
                    format!("{media_file}: not yet renamed into place by the running agent; export again")
                } else {
                    format!("{media_file}: missing, and no valid deletion receipt names it")
                };
                refuse(refusal, RefusalReason::Missing, detail)
            }
            Some(state) => {
                if let Some(r) = self.prot.restriction(&facts(m)) {
                    refusal.restriction = Some(r.id.clone());
                    let detail = format!("restriction {} in force (as of the agent's index)", r.id);
                    return refuse(refusal, RefusalReason::Restricted, detail);
                }
                match state {
                    MediaState::Altered(why) => refuse(
                        refusal,
                        RefusalReason::Altered,
                        format!("cameras/{camera}/{why}"),
                    ),
                    MediaState::Unreadable(why) => refuse(
                        refusal,
                        RefusalReason::Unreadable,
                        format!("cameras/{camera}/{why}"),
                    ),
                    _ => Item::Export(candidate),
                }
            }
        }
    }
}

fn problems(file: &str, ps: impl Iterator<Item = String>) -> String {
    let ps: Vec<String> = ps.collect();
    format!("{file}: {}", ps.join("; "))
}

/// Restrictions and the index's state, without creating or changing any
/// file of the data directory.
fn read_index(data_dir: &Path, scratch: &Path) -> Result<(Protections, IndexState), ExportError> {
    let db = data_dir.join(INDEX_FILE);
    let bad = |reason: String| ExportError::Index {
        path: db.clone(),
        reason,
    };
    if !db.is_file() {
        return Err(bad("missing: without the agent's index the export cannot tell which \
             segments are restricted (copy index.sqlite and index.sqlite-wal with the data directory)"
            .into()));
    }
    let live = store_is_live(data_dir)?;
    let index = if live {
        Index::open_read_only(&db).map_err(|e| bad(e.to_string()))?
    } else {
        // SQLite creates -wal and -shm beside a WAL database even to read
        // it: read a private copy instead.
        let copy = scratch.join(INDEX_FILE);
        std::fs::copy(&db, &copy).map_err(|e| bad(e.to_string()))?;
        let wal = data_dir.join(format!("{INDEX_FILE}-wal"));
        if wal.exists() {
            std::fs::copy(&wal, scratch.join(format!("{INDEX_FILE}-wal")))
                .map_err(ExportError::io(&wal))?;
        }
        Index::open_read_only(&copy).map_err(|e| bad(e.to_string()))?
    };
    let prot = index.protections().map_err(|e| bad(e.to_string()))?;
    let last_command =
        index
            .last_command()
            .map_err(|e| bad(e.to_string()))?
            .map(|(id, kind, applied_at)| AppliedCommand {
                id,
                kind,
                applied_at,
            });
    if !live && store_is_live(data_dir)? {
        return Err(bad(
            "an agent started on this data directory while its index was copied; run the export again"
                .into(),
        ));
    }
    Ok((prot, IndexState { live, last_command }))
}

/// Whether an agent (or `sargs apply`) holds the store's lock.
fn store_is_live(data_dir: &Path) -> Result<bool, ExportError> {
    let path = data_dir.join("LOCK");
    let f = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(ExportError::io(&path)(e)),
    };
    // SAFETY: flock on a descriptor we own; closing it releases the lock.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } == 0 {
        return Ok(false);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(true)
    } else {
        Err(ExportError::io(&path)(e))
    }
}
