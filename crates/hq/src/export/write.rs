//! Writing an export: a private staging folder, each segment decrypted and
//! hashed in one pass, and publication at the end (see the module above).

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::plan::{Candidate, Item, Plan};
use super::{
    ExportError, ExportRecord, GapEntry, Refusal, RefusalReason, Request, Source, EXPORT_VERSION,
};
use sargs_core::fsutil;
use sargs_core::seal::manifest::{hex, sha256_hex};
use sargs_core::seal::open::{self, OpenError};
use sargs_core::seal::sign::Envelope;

type Identities = [Box<dyn age::Identity + Send + Sync>];

/// The folder an export is written into before it is published. Dropped
/// without [`Staging::publish`], it is removed with everything in it.
pub(crate) struct Staging {
    dir: PathBuf,
    out: PathBuf,
    /// `--out` existed (empty): entries are moved into it.
    into_existing: bool,
    published: bool,
}

impl Staging {
    /// Checks `out` (absent, or an empty folder) and creates the staging
    /// folder beside it (absent) or inside it (existing).
    pub fn create(out: &Path) -> Result<Staging, ExportError> {
        let bad = |reason: String| ExportError::Out {
            path: out.to_owned(),
            reason,
        };
        let Some(name) = out.file_name().and_then(|n| n.to_str()) else {
            return Err(bad("not a folder name".into()));
        };
        let suffix = random_hex().map_err(bad)?;
        let (dir, into_existing) = match std::fs::metadata(out) {
            Ok(m) if m.is_dir() => {
                let mut entries = std::fs::read_dir(out).map_err(|e| bad(e.to_string()))?;
                if let Some(e) = entries.next() {
                    let first = e.map(|e| e.file_name()).unwrap_or_default();
                    return Err(bad(format!(
                        "is not empty (it holds {}); an export is written only into a new or empty folder",
                        first.to_string_lossy()
                    )));
                }
                (out.join(format!(".partial-{suffix}")), true)
            }
            Ok(_) => return Err(bad("exists and is not a folder".into())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let parent = match out.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p,
                    _ => Path::new("."),
                };
                if !parent.is_dir() {
                    return Err(bad(format!(
                        "its folder {} does not exist",
                        parent.display()
                    )));
                }
                (parent.join(format!(".{name}.partial-{suffix}")), false)
            }
            Err(e) => return Err(bad(e.to_string())),
        };
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&dir)
                .map_err(ExportError::io(&dir))?;
        }
        let staging = Staging {
            dir,
            out: out.to_owned(),
            into_existing,
            published: false,
        };
        fsutil::create_private_dir(&staging.scratch()).map_err(ExportError::io(&staging.dir))?;
        Ok(staging)
    }

    /// A private folder for reading the index; removed before publication.
    pub fn scratch(&self) -> PathBuf {
        self.dir.join(".index")
    }

    pub fn drop_scratch(&self) -> Result<(), ExportError> {
        let s = self.scratch();
        std::fs::remove_dir_all(&s).map_err(ExportError::io(&s))
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// Makes the export visible under `out`, `export.json` last.
    pub fn publish(mut self) -> Result<PathBuf, ExportError> {
        let parent = self.dir.parent().map(Path::to_owned).unwrap_or_default();
        if !self.into_existing {
            std::fs::rename(&self.dir, &self.out).map_err(|e| ExportError::Out {
                path: self.out.clone(),
                reason: format!("publishing {}: {e}", self.dir.display()),
            })?;
            self.published = true;
            fsutil::sync_dir(&parent).map_err(ExportError::io(&parent))?;
            return Ok(self.out.clone());
        }
        let mut moved = Vec::new();
        let result = self.move_into_out(&mut moved);
        if result.is_err() {
            for p in moved {
                let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
            }
            return result.map(|_| PathBuf::new());
        }
        self.published = true;
        let _ = std::fs::remove_dir(&self.dir);
        fsutil::sync_dir(&self.out).map_err(ExportError::io(&self.out))?;
        Ok(self.out.clone())
    }

    fn move_into_out(&self, moved: &mut Vec<PathBuf>) -> Result<(), ExportError> {
        let out_err = |e: std::io::Error| ExportError::Out {
            path: self.out.clone(),
            reason: format!("publishing into it: {e}"),
        };
        for name in ["cameras", "receipts"] {
            let from = self.dir.join(name);
            if from.exists() {
                let to = self.out.join(name);
                std::fs::rename(&from, &to).map_err(out_err)?;
                moved.push(to);
            }
        }
        fsutil::sync_dir(&self.out).map_err(out_err)?;
        // A hard link never replaces an existing file.
        let to = self.out.join("export.json");
        std::fs::hard_link(self.dir.join("export.json"), &to).map_err(out_err)?;
        moved.push(to);
        std::fs::remove_file(self.dir.join("export.json")).map_err(out_err)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.published {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn random_hex() -> Result<String, String> {
    let mut b = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .map_err(|_| "the system random source failed".to_string())?;
    Ok(hex(&b))
}

/// Writes every item of `plan` into `staging`, then the signed export record.
pub(crate) fn write(
    req: &Request<'_>,
    plan: &Plan,
    ids: &Identities,
    staging: &Staging,
) -> Result<ExportRecord, ExportError> {
    let mut record = ExportRecord {
        v: EXPORT_VERSION,
        record: "export".into(),
        id: req.id.clone(),
        created_at: req.now,
        case: req.case.clone(),
        recipient: req.recipient.clone(),
        issuer: req.issuer.clone(),
        agent_id: plan.agent.clone(),
        device_key: {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(req.device_key)
        },
        scope: sargs_core::command::scope_json(&req.scope),
        restrictions_as_of: plan.index.clone(),
        sources: Vec::new(),
        gaps: Vec::new(),
        refused: Vec::new(),
        tool: format!("sargsctl {}", sargs_core::VERSION),
    };
    let (mut attempts, mut unopened, mut example) = (0, 0, None::<String>);
    let mut dirs = vec![staging.dir.clone()];
    for item in &plan.items {
        match item {
            Item::Export(c) => {
                ensure_dir(&mut dirs, staging.path(&format!("cameras/{}", c.camera)))?;
                attempts += 1;
                match segment(c, staging, ids, &req.device_key)? {
                    Ok(s) => record.sources.push(s),
                    Err((r, not_for_us)) => {
                        if not_for_us {
                            unopened += 1;
                            example.get_or_insert_with(|| r.detail.clone());
                        }
                        record.refused.push(*r);
                    }
                }
            }
            Item::Gap(c) => {
                ensure_dir(&mut dirs, staging.path(&format!("cameras/{}", c.camera)))?;
                let manifest = format!("cameras/{}/{:010}.json", c.camera, c.manifest.sequence);
                match copy_signed(
                    &c.dir.join(format!("{:010}.json", c.manifest.sequence)),
                    &c.manifest_sha256,
                    &staging.path(&manifest),
                    &req.device_key,
                )? {
                    Ok(()) => record.gaps.push(GapEntry {
                        segment_id: c.manifest.segment_id.clone(),
                        camera: c.camera.clone(),
                        sequence: c.manifest.sequence,
                        start: c.manifest.start,
                        end: c.manifest.end,
                        reason: c
                            .manifest
                            .gap
                            .as_ref()
                            .map(|g| g.reason.clone())
                            .unwrap_or_default(),
                        manifest,
                        manifest_sha256: c.manifest_sha256.clone(),
                    }),
                    Err(detail) => {
                        record
                            .refused
                            .push(refusal(c, RefusalReason::Unverified, detail))
                    }
                }
            }
            Item::Refuse(r, receipt) => {
                let mut r = (**r).clone();
                if let (Some(rf), Some(rref)) = (receipt, r.receipt.clone()) {
                    ensure_dir(&mut dirs, staging.path("receipts"))?;
                    if let Err(detail) = copy_signed(
                        &rf.path,
                        &rf.sha256,
                        &staging.path(&rref.file),
                        &req.device_key,
                    )? {
                        r.reason = RefusalReason::Missing;
                        r.detail = format!("{detail}; the segment's media is gone");
                        r.receipt = None;
                    }
                }
                record.refused.push(r);
            }
        }
    }
    if attempts > 0 && unopened == attempts {
        return Err(ExportError::Identity {
            path: req.identity.clone(),
            reason: format!(
                "opens none of the {attempts} segment(s) in scope ({}): wrong identity for this agent",
                example.unwrap_or_default()
            ),
        });
    }
    let payload =
        serde_json::to_string(&record).map_err(|e| ExportError::Invalid(e.to_string()))?;
    write_new(
        &staging.path("export.json"),
        &req.signing_key.sign_envelope(&payload),
    )?;
    if staging.path("cameras").exists() {
        dirs.push(staging.path("cameras"));
    }
    for d in &dirs {
        fsutil::sync_dir(d).map_err(ExportError::io(d))?;
    }
    Ok(record)
}

/// Creates a folder of the export once, remembering it for the final fsync.
fn ensure_dir(dirs: &mut Vec<PathBuf>, dir: PathBuf) -> Result<(), ExportError> {
    if !dirs.contains(&dir) {
        fsutil::create_private_dir(&dir).map_err(ExportError::io(&dir))?;
        dirs.push(dir);
    }
    Ok(())
}

/// A refusal of a verified record found while writing.
fn refusal(c: &Candidate, reason: RefusalReason, detail: String) -> Refusal {
    Refusal {
        segment_id: c.manifest.segment_id.clone(),
        camera: c.camera.clone(),
        sequence: c.manifest.sequence,
        start: Some(c.manifest.start),
        end: Some(c.manifest.end),
        manifest_sha256: Some(c.manifest_sha256.clone()),
        reason,
        detail,
        restriction: None,
        receipt: None,
    }
}

/// A source-side refusal, and whether it was HQ's identity that failed.
type Refused = (Box<Refusal>, bool);

/// Decrypts one segment into the staging folder and copies its manifest.
/// `Ok(Err(..))`: the source refused it (nothing of it stays written);
/// `Err`: the output side failed and the export stops.
fn segment(
    c: &Candidate,
    staging: &Staging,
    ids: &Identities,
    device_key: &[u8; 32],
) -> Result<Result<Source, Refused>, ExportError> {
    let Some(media) = c.manifest.media.as_ref() else {
        let r = refusal(
            c,
            RefusalReason::Unverified,
            "segment record without media".into(),
        );
        return Ok(Err((Box::new(r), false)));
    };
    let seq = c.manifest.sequence;
    let src_rel = format!("cameras/{}/{}", c.camera, media.file);
    let file = format!("cameras/{}/{seq:010}.mp4", c.camera);
    let manifest = format!("cameras/{}/{seq:010}.json", c.camera);
    let dst = staging.path(&file);
    let refuse = |reason, detail: String, unopened| {
        let _ = std::fs::remove_file(&dst);
        Ok(Err((Box::new(refusal(c, reason, detail)), unopened)))
    };
    let input = match File::open(c.dir.join(&media.file)) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return refuse(
                RefusalReason::Missing,
                format!("{src_rel}: vanished during the export"),
                false,
            )
        }
        Err(e) => return refuse(RefusalReason::Unreadable, format!("{src_rel}: {e}"), false),
    };
    let mut hashing = Hashing::new(input);
    let mut out = fsutil::create_new(&dst, 0o600).map_err(ExportError::io(&dst))?;
    let decrypted = decrypt(&mut hashing, ids, &mut out, media.truncated);
    if let Err(e) = std::io::copy(&mut hashing, &mut std::io::sink()) {
        return refuse(RefusalReason::Unreadable, format!("{src_rel}: {e}"), false);
    }
    let (ct_sha, ct_bytes) = hashing.finish();
    if ct_bytes != media.ciphertext_bytes || ct_sha != media.ciphertext_sha256 {
        let detail = format!(
            "{src_rel}: SHA-256 {ct_sha} ({ct_bytes} bytes) does not match the manifest's {} ({} bytes): altered",
            media.ciphertext_sha256, media.ciphertext_bytes
        );
        return refuse(RefusalReason::Altered, detail, false);
    }
    let (bytes, sha256) = match decrypted {
        Ok(plain) => plain,
        Err(Failure::Output(e)) => return Err(ExportError::io(&dst)(e)),
        Err(Failure::NoKey) => {
            let detail = format!(
                "{src_rel}: not sealed to this identity (sealed to {})",
                media.recipients.join(", ")
            );
            return refuse(RefusalReason::Undecryptable, detail, true);
        }
        Err(Failure::Source(e)) => {
            return refuse(
                RefusalReason::Undecryptable,
                format!("{src_rel}: {e}"),
                false,
            )
        }
    };
    out.sync_all().map_err(ExportError::io(&dst))?;
    let src_manifest = c.dir.join(format!("{seq:010}.json"));
    if let Err(detail) = copy_signed(
        &src_manifest,
        &c.manifest_sha256,
        &staging.path(&manifest),
        device_key,
    )? {
        return refuse(RefusalReason::Unverified, detail, false);
    }
    Ok(Ok(Source {
        segment_id: c.manifest.segment_id.clone(),
        camera: c.camera.clone(),
        sequence: seq,
        start: c.manifest.start,
        end: c.manifest.end,
        class: c.manifest.retention.class.clone(),
        purpose: c.manifest.purpose.clone(),
        notice: c.manifest.notice.clone(),
        manifest,
        manifest_sha256: c.manifest_sha256.clone(),
        ciphertext_sha256: ct_sha,
        ciphertext_bytes: ct_bytes,
        file,
        sha256,
        bytes,
        truncated: media.truncated,
    }))
}

enum Failure {
    /// HQ's identity is not among the file's recipients.
    NoKey,
    /// The age stream could not be read or does not authenticate.
    Source(String),
    /// Writing the plaintext failed.
    Output(std::io::Error),
}

/// Decrypts the age stream from `input` into `out`; returns the plaintext's
/// size and SHA-256. With `salvage` (a segment recorded cut short), the
/// stream ends at its last whole chunk instead of failing.
fn decrypt(
    input: &mut Hashing<File>,
    ids: &Identities,
    out: &mut File,
    salvage: bool,
) -> Result<(u64, String), Failure> {
    match open::decrypt_to(input, ids, out, salvage) {
        Ok(o) => Ok((o.bytes, hex(&o.sha256))),
        Err(OpenError::NoKey) => Err(Failure::NoKey),
        Err(OpenError::Header(why)) => Err(Failure::Source(why)),
        Err(OpenError::Stream { after, reason }) => {
            Err(Failure::Source(format!("after {after} bytes: {reason}")))
        }
        Err(OpenError::Output(e)) => Err(Failure::Output(e)),
    }
}

/// Copies a signed file (manifest, receipt) byte for byte after checking
/// that it still verifies and is the one verified before (payload SHA-256).
/// `Ok(Err(..))`: the source changed since.
fn copy_signed(
    src: &Path,
    payload_sha256: &str,
    dst: &Path,
    key: &[u8; 32],
) -> Result<Result<(), String>, ExportError> {
    let changed = |why: String| Ok(Err(format!("{}: {why}", src.display())));
    let bytes = match std::fs::read(src) {
        Ok(b) => b,
        Err(e) => return changed(e.to_string()),
    };
    match Envelope::open(&bytes, Some(key)) {
        Ok(env) if sha256_hex(env.payload.as_bytes()) == payload_sha256 => {}
        Ok(_) => return changed("changed since it was verified".into()),
        Err(e) => return changed(e.to_string()),
    }
    write_new(dst, &bytes)?;
    Ok(Ok(()))
}

fn write_new(path: &Path, bytes: &[u8]) -> Result<(), ExportError> {
    let mut f = fsutil::create_new(path, 0o600).map_err(ExportError::io(path))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(ExportError::io(path))
}

/// A reader that hashes every byte it hands out.
struct Hashing<R> {
    inner: R,
    ctx: ring::digest::Context,
    bytes: u64,
}

impl<R> Hashing<R> {
    fn new(inner: R) -> Self {
        Hashing {
            inner,
            ctx: ring::digest::Context::new(&ring::digest::SHA256),
            bytes: 0,
        }
    }

    /// The SHA-256 (hex) and count of the bytes read.
    fn finish(self) -> (String, u64) {
        (hex(self.ctx.finish().as_ref()), self.bytes)
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.ctx.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}
