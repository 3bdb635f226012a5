//! Multipart uploads that resume. A record larger than one part goes as an
//! S3 multipart upload, and what was sent survives a failure, a stop of the
//! agent or a kill -9: a body camera's recording on a capped LTE uplink is
//! not sent again from its first byte after every drop.
//!
//! Invariants:
//! - the upload's id, and then the ETag the store answered for each part,
//!   are written to the record's progress file (atomically, durably) as soon
//!   as the store has acknowledged them — the id before any part is sent —
//!   so every upload the gateway starts is one it knows of;
//! - a part counts as sent on a later attempt only if the store lists it,
//!   under that upload, with the ETag and size it answered when the part was
//!   sent, and every part before it counts too; from the first part that
//!   does not count on, parts are sent again (a part number sent again
//!   replaces the store's part);
//! - the file is a sealed record and never changes; the whole object is read
//!   back and its SHA-256 checked after completion (`crate::offload`), so a
//!   resumed object is verified like any other;
//! - an upload that cannot be resumed (unknown to the store, another part
//!   size or file length) is aborted (its parts would otherwise stay in the
//!   store, unseen) and a new one is started; the progress file is removed
//!   once the object is complete, or once the store has forgotten the
//!   upload.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use rusty_s3::actions::{
    AbortMultipartUpload, CompleteMultipartUpload, CreateMultipartUpload, ListParts, UploadPart,
};
use serde::{Deserialize, Serialize};

use super::{idempotent, ok_text, short, status_error, transport, S3Error, Store};

const WHAT: &str = "multipart upload";

/// A record's progress file.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct Progress {
    key: String,
    upload_id: String,
    part_size: u64,
    /// The file's length.
    bytes: u64,
    /// The ETag the store answered for parts 1, 2, … as they were sent.
    etags: Vec<String>,
}

/// A part as the store lists it: number, ETag, size.
type Listed = (u16, String, u64);

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> S3Error + '_ {
    move |source| S3Error::Io {
        path: path.to_owned(),
        source,
    }
}

fn save(path: &Path, p: &Progress) -> Result<(), S3Error> {
    let bytes = serde_json::to_vec(p).map_err(|e| io(path)(std::io::Error::other(e)))?;
    if let Some(dir) = path.parent() {
        sargs_core::fsutil::create_private_dir(dir).map_err(io(path))?;
    }
    sargs_core::fsutil::write_atomic(path, &bytes, 0o600).map_err(io(path))
}

/// The progress in `path`, if it is there and readable (an unreadable one
/// is as good as none: the upload starts again).
fn load(path: &Path) -> Option<Progress> {
    let bytes = std::fs::read(path).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e,
                "offload: unreadable upload progress; starting the upload again");
            None
        }
    }
}

fn forget(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(file = %path.display(), error = %e, "offload: progress file stays");
        }
    }
}

impl Store {
    /// Gives up the upload `progress` records, if any: it is aborted in the
    /// store and the file removed (the record was deleted before its upload
    /// finished, or its object is complete).
    pub fn abandon(&self, progress: &Path) {
        if let Some(p) = load(progress) {
            self.abort(&p.key, &p.upload_id);
        }
        forget(progress);
    }

    /// Forgets `progress` of an upload the store completed (the object is
    /// there; a crash came before the file was removed).
    pub fn completed(&self, progress: &Path) {
        forget(progress);
    }

    /// Uploads `file` (`len` bytes) as `key` in parts, resuming the upload
    /// `progress` names if the store still has it; returns the bytes sent
    /// by this call.
    pub(super) fn multipart(
        &self,
        key: &str,
        mut file: std::fs::File,
        len: u64,
        progress: Option<&Path>,
    ) -> Result<u64, S3Error> {
        let resumed = match progress.and_then(|p| load(p).map(|old| (p, old))) {
            Some((path, old)) => self.resumable(key, len, path, old)?,
            None => None,
        };
        let mut p = match resumed {
            Some(p) => p,
            None => {
                let p = Progress {
                    key: key.to_owned(),
                    upload_id: self.create(key)?,
                    part_size: self.part_size,
                    bytes: len,
                    etags: Vec::new(),
                };
                if let Some(path) = progress {
                    save(path, &p)?;
                }
                p
            }
        };
        let done = p.etags.len() as u64 * self.part_size;
        if done > 0 {
            tracing::info!(
                key,
                parts = p.etags.len(),
                bytes = done,
                "offload: resuming an upload"
            );
        }
        file.seek(SeekFrom::Start(done))
            .map_err(|source| S3Error::Io {
                path: Default::default(),
                source,
            })?;
        let mut sent = 0u64;
        let mut buf = Vec::new();
        while done + sent < len {
            buf.clear();
            (&mut file)
                .take(self.part_size)
                .read_to_end(&mut buf)
                .map_err(|source| S3Error::Io {
                    path: Default::default(),
                    source,
                })?;
            if buf.is_empty() {
                break;
            }
            let number = u16::try_from(p.etags.len() + 1).map_err(|_| S3Error::Status {
                what: WHAT,
                key: key.to_owned(),
                status: 0,
                message: "more than 65535 parts: raise offload.part_size_mb".into(),
            })?;
            p.etags.push(self.part(key, &p.upload_id, number, &buf)?);
            sent += buf.len() as u64;
            if let Some(path) = progress {
                save(path, &p)?;
            }
        }
        match self.complete(key, &p) {
            Ok(()) => {}
            // The store no longer knows the upload, or refuses its parts:
            // the next attempt starts a new one.
            Err(
                e @ S3Error::Status {
                    status: 400 | 404, ..
                },
            ) => {
                if let Some(path) = progress {
                    forget(path);
                }
                return Err(e);
            }
            Err(e) => return Err(e),
        }
        if let Some(path) = progress {
            forget(path);
        }
        Ok(sent)
    }

    /// `old` if its upload can go on: the same object, part size and length,
    /// and the store still has it; its parts cut back to those that count
    /// (see the module invariant). Else it is aborted and forgotten.
    fn resumable(
        &self,
        key: &str,
        len: u64,
        path: &Path,
        mut old: Progress,
    ) -> Result<Option<Progress>, S3Error> {
        let same = old.key == key && old.part_size == self.part_size && old.bytes == len;
        let listed = if same {
            self.list_parts(key, &old.upload_id)?
        } else {
            None
        };
        let Some(listed) = listed else {
            if old.key == key {
                self.abort(key, &old.upload_id);
            }
            forget(path);
            return Ok(None);
        };
        let counted = old
            .etags
            .iter()
            .enumerate()
            .take_while(|(i, etag)| {
                let size = self.part_size.min(len - *i as u64 * self.part_size);
                listed
                    .iter()
                    .any(|(n, e, s)| *n as usize == i + 1 && e == *etag && *s == size)
            })
            .count();
        if counted < old.etags.len() {
            tracing::warn!(
                key,
                counted,
                recorded = old.etags.len(),
                "offload: parts of an upload do not match what was sent; sending them again"
            );
        }
        old.etags.truncate(counted);
        Ok(Some(old))
    }

    fn create(&self, key: &str) -> Result<String, S3Error> {
        let create = CreateMultipartUpload::new(&self.bucket, Some(&self.credentials), key);
        let url = self.signed(WHAT, key, &create)?;
        let resp = self
            .http
            .post(url.as_str())
            .send_empty()
            .map_err(transport(WHAT, key))?;
        let text = ok_text(WHAT, key, resp)?;
        let created =
            CreateMultipartUpload::parse_response(&text).map_err(|e| S3Error::Status {
                what: WHAT,
                key: key.to_owned(),
                status: 200,
                message: format!("unreadable answer: {e}"),
            })?;
        Ok(created.upload_id().to_owned())
    }

    /// Sends part `number`; returns the ETag the store answered.
    fn part(
        &self,
        key: &str,
        upload_id: &str,
        number: u16,
        bytes: &[u8],
    ) -> Result<String, S3Error> {
        let part = UploadPart::new(
            &self.bucket,
            Some(&self.credentials),
            key,
            number,
            upload_id,
        );
        let url = self.signed(WHAT, key, &part)?;
        let mut body = self.body(bytes);
        let resp = self
            .http
            .put(url.as_str())
            .header("content-length", bytes.len())
            .send(ureq::SendBody::from_reader(&mut body))
            .map_err(transport(WHAT, key))?;
        if resp.status().as_u16() != 200 {
            let status = resp.status().as_u16();
            return Err(status_error(WHAT, key, status, resp));
        }
        resp.headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| S3Error::Status {
                what: WHAT,
                key: key.to_owned(),
                status: 200,
                message: format!("part {number} answered without an ETag"),
            })
    }

    /// The parts the store has of upload `upload_id` (number, ETag, size),
    /// or `None` if it does not know the upload.
    fn list_parts(&self, key: &str, upload_id: &str) -> Result<Option<Vec<Listed>>, S3Error> {
        let mut out = Vec::new();
        let mut marker = None;
        loop {
            let mut list = ListParts::new(&self.bucket, Some(&self.credentials), key, upload_id);
            if let Some(m) = marker {
                list.set_part_number_marker(m);
            }
            let url = self.signed(WHAT, key, &list)?;
            let resp =
                idempotent(|| self.http.get(url.as_str()).call()).map_err(transport(WHAT, key))?;
            if resp.status().as_u16() == 404 {
                return Ok(None);
            }
            let text = ok_text(WHAT, key, resp)?;
            let page = ListParts::parse_response(&text).map_err(|_| S3Error::Status {
                what: WHAT,
                key: key.to_owned(),
                status: 200,
                message: short(&text),
            })?;
            out.extend(page.parts.into_iter().map(|p| (p.number, p.etag, p.size)));
            match page.next_part_number_marker {
                Some(m) => marker = Some(m),
                None => return Ok(Some(out)),
            }
        }
    }

    /// Aborts upload `upload_id` so that its parts do not stay in the store;
    /// a failure is logged (the store's own expiry of incomplete uploads is
    /// the second guard).
    fn abort(&self, key: &str, upload_id: &str) {
        let abort =
            AbortMultipartUpload::new(&self.bucket, Some(&self.credentials), key, upload_id);
        let result = self.signed(WHAT, key, &abort).and_then(|url| {
            idempotent(|| self.http.delete(url.as_str()).call()).map_err(transport(WHAT, key))
        });
        match result {
            Ok(r) if matches!(r.status().as_u16(), 200 | 204 | 404) => {
                tracing::info!(key, "offload: an upload that could not go on was aborted");
            }
            Ok(r) => tracing::warn!(key, status = r.status().as_u16(),
                "offload: aborting an old upload failed; its parts stay until the store expires them"),
            Err(e) => tracing::warn!(key, error = %e,
                "offload: aborting an old upload failed; its parts stay until the store expires them"),
        }
    }

    fn complete(&self, key: &str, p: &Progress) -> Result<(), S3Error> {
        let complete = CompleteMultipartUpload::new(
            &self.bucket,
            Some(&self.credentials),
            key,
            &p.upload_id,
            p.etags.iter().map(String::as_str),
        );
        let url = self.signed(WHAT, key, &complete)?;
        let resp = self
            .http
            .post(url.as_str())
            .send(complete.body())
            .map_err(transport(WHAT, key))?;
        // A store may answer 200 and still report an error in the body.
        let text = ok_text(WHAT, key, resp)?;
        rusty_s3::actions::CompleteMultipartUploadResponse::parse(&text).map_err(|_| {
            S3Error::Status {
                what: WHAT,
                key: key.to_owned(),
                status: 200,
                message: short(&text),
            }
        })?;
        Ok(())
    }
}
