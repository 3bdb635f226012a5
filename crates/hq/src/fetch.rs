//! `sargsctl fetch`: a gateway's evidence, read back from the S3-compatible
//! evidence store into a folder laid out as the agent's data directory, so
//! that HQ works from the store as from the gateway itself:
//! `sargsctl verify OUT/cameras/CAMERA` checks it the same way (a store may
//! hold only the records HQ asked for: `verify` finds `fetched.json` and
//! lists the records the copy lacks instead of failing on them,
//! `sargs_core::seal::verify::verify_camera_partial`).
//!
//! ```text
//! {agent}/{camera}/NNNNNNNNNN.json     -> OUT/cameras/{camera}/NNNNNNNNNN.json
//! {agent}/{camera}/NNNNNNNNNN.mp4.age  -> OUT/cameras/{camera}/NNNNNNNNNN.mp4.age
//! {agent}/receipts/NNNNNNNNNN.json     -> OUT/receipts/NNNNNNNNNN.json
//! ```
//!
//! Invariants:
//! - only the agent's own objects are read (its key prefix), and only those
//!   whose names are a record's or a receipt's: any other key is counted and
//!   left, never written under OUT (a key can name no path outside it);
//! - it writes into a new folder only (absent or empty), each file whole
//!   (written beside, then renamed), and `fetched.json` last, naming the
//!   store, the agent and what was fetched: a folder without it is a fetch
//!   cut short;
//! - it checks nothing itself: the signatures, the chain and each media
//!   object's digest are `sargsctl verify`'s to check, against the device
//!   key, as for a copy of the gateway's own folder.
//!
//! The client is the agent's pair (`rusty-s3` signs, `ureq` sends, rustls
//! on ring), for the same reasons (`sargs::offload::s3`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusty_s3::actions::{ListObjectsV2, S3Action};
use rusty_s3::{Bucket, UrlStyle};
use serde::Serialize;

/// How long a signed request stays valid.
const SIGNED_FOR: Duration = Duration::from_secs(3600);

/// Where to read from.
pub struct Source {
    pub endpoint: url::Url,
    pub region: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// PEM CA certificate(s) an `https://` endpoint is verified against.
    pub ca_file: Option<PathBuf>,
}

/// What a fetch did.
#[derive(Debug, Default, Serialize)]
pub struct Fetched {
    pub store: String,
    pub agent: String,
    pub records: u64,
    pub media: u64,
    pub receipts: u64,
    pub bytes: u64,
    /// Keys under the agent's prefix that are no record's or receipt's.
    pub skipped: Vec<String>,
}

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0}")]
    Store(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FetchError + '_ {
    move |source| FetchError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Where a key under the agent's prefix goes in OUT, if it is a record's or
/// a receipt's (of one of `cameras`, if any are named).
fn place(rest: &str, cameras: &[String]) -> Option<(PathBuf, Kind)> {
    let (dir, file) = rest.split_once('/')?;
    let (number, ext) = file.split_once('.')?;
    if number.len() != 10 || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match (dir, ext) {
        ("receipts", "json") => Some((Path::new("receipts").join(file), Kind::Receipt)),
        ("receipts", _) => None,
        (camera, "json" | "mp4.age") => {
            sargs_core::config::check::id(camera).ok()?;
            if !cameras.is_empty() && !cameras.iter().any(|c| c == camera) {
                return None;
            }
            let kind = if ext == "json" {
                Kind::Record
            } else {
                Kind::Media
            };
            Some((Path::new("cameras").join(camera).join(file), kind))
        }
        _ => None,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Record,
    Media,
    Receipt,
}

/// Fetches `agent`'s objects (of `cameras`, or all) from `src` into `out`.
pub fn fetch(
    src: &Source,
    agent: &str,
    cameras: &[String],
    out: &Path,
) -> Result<Fetched, FetchError> {
    sargs_core::config::check::id(agent)
        .map_err(|why| FetchError::Usage(format!("--agent: {why}")))?;
    let empty = match std::fs::read_dir(out) {
        Ok(mut d) => d.next().is_none(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => return Err(io(out)(e)),
    };
    if !empty {
        return Err(FetchError::Usage(format!(
            "{}: not empty; fetch into a new folder",
            out.display()
        )));
    }
    let client = Client::new(src)?;
    let prefix = format!("{agent}/");
    let mut done = Fetched {
        store: format!(
            "{}/{}",
            src.endpoint.as_str().trim_end_matches('/'),
            src.bucket
        ),
        agent: agent.to_owned(),
        ..Fetched::default()
    };
    for key in client.list(&prefix)? {
        let rest = key.strip_prefix(&prefix).unwrap_or(&key);
        let Some((rel, kind)) = place(rest, cameras) else {
            done.skipped.push(key);
            continue;
        };
        let path = out.join(&rel);
        done.bytes += client.get_to(&key, &path)?;
        match kind {
            Kind::Record => done.records += 1,
            Kind::Media => done.media += 1,
            Kind::Receipt => done.receipts += 1,
        }
    }
    let summary = serde_json::to_vec_pretty(&done).map_err(|e| FetchError::Store(e.to_string()))?;
    std::fs::create_dir_all(out).map_err(io(out))?;
    let file = out.join("fetched.json");
    std::fs::write(&file, summary).map_err(io(&file))?;
    Ok(done)
}

/// Sends a GET, and once more if the first try found its connection closed
/// (a connection the store closed while the client kept it for reuse).
fn again_if_dropped<T>(mut send: impl FnMut() -> Result<T, ureq::Error>) -> Result<T, ureq::Error> {
    use std::io::ErrorKind::{ConnectionReset, UnexpectedEof};
    match send() {
        Err(ureq::Error::Io(e)) if matches!(e.kind(), UnexpectedEof | ConnectionReset) => send(),
        other => other,
    }
}

struct Client {
    http: ureq::Agent,
    bucket: Bucket,
    credentials: rusty_s3::Credentials,
}

impl Client {
    fn new(src: &Source) -> Result<Client, FetchError> {
        let bucket = Bucket::new(
            src.endpoint.clone(),
            UrlStyle::Path,
            src.bucket.clone(),
            src.region.clone(),
        )
        .map_err(|e| FetchError::Usage(format!("--endpoint {}: {e:?}", src.endpoint)))?;
        let mut tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
            .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()));
        if let Some(ca) = &src.ca_file {
            let pem = std::fs::read(ca).map_err(io(ca))?;
            let certs: Vec<_> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err(FetchError::Usage(format!(
                    "--ca-file {}: no PEM certificate",
                    ca.display()
                )));
            }
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
        }
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_per_read(Some(Duration::from_secs(120)))
            .tls_config(tls.build())
            .build();
        Ok(Client {
            http: config.into(),
            bucket,
            credentials: rusty_s3::Credentials::new(
                src.access_key_id.clone(),
                src.secret_access_key.clone(),
            ),
        })
    }

    /// Every key under `prefix`, in the store's (key) order.
    fn list(&self, prefix: &str) -> Result<Vec<String>, FetchError> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut action = ListObjectsV2::new(&self.bucket, Some(&self.credentials));
            action.with_prefix(prefix);
            if let Some(t) = &token {
                action.with_continuation_token(t.clone());
            }
            let url = action.sign(SIGNED_FOR);
            let text = self.text("LIST", prefix, url.as_str())?;
            let page = ListObjectsV2::parse_response(&text)
                .map_err(|e| FetchError::Store(format!("LIST {prefix}: unreadable answer: {e}")))?;
            keys.extend(page.contents.into_iter().map(|c| c.key));
            match page.next_continuation_token {
                Some(t) => token = Some(t),
                None => return Ok(keys),
            }
        }
    }

    fn text(&self, what: &str, key: &str, url: &str) -> Result<String, FetchError> {
        let mut resp = again_if_dropped(|| self.http.get(url).call())
            .map_err(|e| FetchError::Store(format!("{what} {key}: {e}")))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(16 << 20)
            .read_to_string()
            .map_err(|e| FetchError::Store(format!("{what} {key}: {e}")))?;
        if status != 200 {
            return Err(FetchError::Store(format!(
                "{what} {key}: HTTP {status}: {}",
                text.chars().take(300).collect::<String>()
            )));
        }
        Ok(text)
    }

    /// Writes object `key` to `path` whole (beside it, then renamed);
    /// returns its length.
    fn get_to(&self, key: &str, path: &Path) -> Result<u64, FetchError> {
        let url = self
            .bucket
            .get_object(Some(&self.credentials), key)
            .sign(SIGNED_FOR);
        let resp = again_if_dropped(|| self.http.get(url.as_str()).call())
            .map_err(|e| FetchError::Store(format!("GET {key}: {e}")))?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(FetchError::Store(format!("GET {key}: HTTP {status}")));
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let part = path.with_extension("fetching");
        let mut file = std::fs::File::create(&part).map_err(io(&part))?;
        let mut body = resp.into_body().into_reader();
        let n = std::io::copy(&mut body, &mut file)
            .map_err(|e| FetchError::Store(format!("GET {key}: {e}")))?;
        file.flush().map_err(io(&part))?;
        std::fs::rename(&part, path).map_err(io(path))?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_record_and_receipt_names_have_a_place_and_none_leaves_the_folder() {
        let none: Vec<String> = Vec::new();
        let at = |rest: &str| place(rest, &none).map(|(p, _)| p);
        assert_eq!(
            at("cam-1/0000000001.json"),
            Some(PathBuf::from("cameras/cam-1/0000000001.json"))
        );
        assert_eq!(
            at("cam-1/0000000001.mp4.age"),
            Some(PathBuf::from("cameras/cam-1/0000000001.mp4.age"))
        );
        assert_eq!(
            at("receipts/0000000007.json"),
            Some(PathBuf::from("receipts/0000000007.json"))
        );
        for bad in [
            "../x/0000000001.json",
            "cam-1/../../etc/passwd",
            "cam-1/1.json",
            "cam-1/0000000001.txt",
            "receipts/0000000001.mp4.age",
            "cam-1/sub/0000000001.json",
            "cam 1/0000000001.json",
            "0000000001.json",
        ] {
            assert_eq!(at(bad), None, "{bad}");
        }
        let only = vec!["cam-2".to_owned()];
        assert!(place("cam-1/0000000001.json", &only).is_none());
        assert!(place("cam-2/0000000001.json", &only).is_some());
        assert!(place("receipts/0000000001.json", &only).is_some());
    }
}
