//! The S3 client of the offload: the few requests it needs (PUT, multipart
//! upload, GET), each checked against the allow-list before it is sent.
//!
//! Invariants:
//! - no request leaves for a place outside `offload.allow_endpoints` and
//!   `offload.allow_regions` ([`Allow::check`] on every request URL;
//!   redirects are never followed, so a store cannot send a request on);
//! - the secret key is used to sign and for nothing else: it is in no error,
//!   no log line, no URL (a presigned URL carries a signature, not the key);
//! - an answer that is not success is an error naming the request, the
//!   object key and the store's status and message.
//!
//! The client: `rusty-s3` signs requests (AWS Signature V4, presigned URLs)
//! and does no I/O; `ureq` 3 sends them over a blocking connection with the
//! workspace's rustls on `ring`. Together they add seven small crates to the
//! agent's build, and they fit the uploader, which is one thread and one
//! request at a time. `object_store` and the AWS SDK were the alternatives:
//! both bring an async HTTP stack (hyper, tower or the SDK's runtime) and
//! several times as many crates to a gateway build that is already long,
//! for features (listing streams, credentials providers, retries) the
//! uploader does not use.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

mod multipart;

use rusty_s3::actions::{GetObject, PutObject, S3Action};
use rusty_s3::{Bucket, UrlStyle};
use url::Url;

use super::pace::Paced;
use crate::config::offload::{Addressing, Allow, OffloadSettings};
use tokio_util::sync::CancellationToken;

/// How long a signed request stays valid: long enough for a part on a slow
/// uplink.
const SIGNED_FOR: Duration = Duration::from_secs(3600);
/// Longest wait for a connection, and for any read or write to progress.
const CONNECT: Duration = Duration::from_secs(15);
const STALL: Duration = Duration::from_secs(120);

/// What went wrong with the store.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    /// The store could not be reached or the connection broke: worth a retry.
    #[error("{what} {key}: {reason}")]
    Transport {
        what: &'static str,
        key: String,
        reason: String,
    },
    /// The store answered with an error.
    #[error("{what} {key}: HTTP {status}: {message}")]
    Status {
        what: &'static str,
        key: String,
        status: u16,
        message: String,
    },
    /// The request would go where data may not go.
    #[error("{what} {key} refused: {reason}")]
    Refused {
        what: &'static str,
        key: String,
        reason: String,
    },
    /// A local file could not be read.
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// One store: endpoint, bucket and the gateway's key.
pub struct Store {
    http: ureq::Agent,
    bucket: Bucket,
    credentials: rusty_s3::Credentials,
    allow: Allow,
    part_size: u64,
    label: String,
    /// `[offload] max_kib_s`, in bytes per second.
    max_bytes_s: Option<u64>,
    /// The agent's stop: a request body under way ends with an error.
    cancel: Option<CancellationToken>,
}

impl S3Error {
    /// The object key of the request, or the file, that failed.
    pub fn key(&self) -> String {
        match self {
            S3Error::Transport { key, .. }
            | S3Error::Status { key, .. }
            | S3Error::Refused { key, .. } => key.clone(),
            S3Error::Io { path, .. } => path.display().to_string(),
        }
    }
}

impl Store {
    /// A client for `s`; the error names the key of `[offload]` at fault.
    pub fn new(s: &OffloadSettings) -> Result<Store, String> {
        let style = match s.addressing {
            Addressing::Path => UrlStyle::Path,
            Addressing::VirtualHost => UrlStyle::VirtualHost,
        };
        let bucket = Bucket::new(
            s.endpoint.clone(),
            style,
            s.bucket.clone(),
            s.region.clone(),
        )
        .map_err(|e| format!("offload.endpoint: {}: {e:?}", s.endpoint))?;
        let mut tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
            .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()));
        if let Some(ca) = &s.ca_file {
            let pem =
                std::fs::read(ca).map_err(|e| format!("offload.ca_file: {}: {e}", ca.display()))?;
            let certs: Vec<_> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err(format!(
                    "offload.ca_file: {}: no PEM certificate",
                    ca.display()
                ));
            }
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
        }
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_connect(Some(CONNECT))
            .timeout_per_read(Some(STALL))
            .timeout_per_write(Some(STALL))
            .tls_config(tls.build())
            .build();
        let label = format!("{}/{}", s.endpoint.as_str().trim_end_matches('/'), s.bucket);
        Ok(Store {
            http: config.into(),
            bucket,
            credentials: rusty_s3::Credentials::new(
                s.credentials.access_key_id.clone(),
                s.credentials.secret_access_key.clone(),
            ),
            allow: s.allow.clone(),
            part_size: s.part_size,
            label,
            max_bytes_s: s.max_bytes_s,
            cancel: None,
        })
    }

    /// Under a cap, request bodies under way end with an error once
    /// `cancel` is cancelled (a capped upload never holds up a stop).
    pub fn stop_on(mut self, cancel: CancellationToken) -> Store {
        self.cancel = Some(cancel);
        self
    }

    /// `body` as a request body of `len` bytes, at the cap and until a stop.
    fn body<R: Read>(&self, body: R) -> Paced<'_, R> {
        Paced::new(body, self.max_bytes_s, self.cancel.as_ref())
    }

    /// The store as events and the index name it: endpoint and bucket.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The signed URL of `action`, if it may go where it points.
    fn signed<'a>(
        &self,
        what: &'static str,
        key: &str,
        action: &impl S3Action<'a>,
    ) -> Result<Url, S3Error> {
        let url = action.sign(SIGNED_FOR);
        self.allow
            .check(&url, self.bucket.name(), self.bucket.region())
            .map_err(|reason| S3Error::Refused {
                what,
                key: key.to_owned(),
                reason,
            })?;
        Ok(url)
    }

    /// The object `key`'s SHA-256 and length, read back in full; `None` if
    /// there is no such object.
    pub fn get_sha256(&self, key: &str) -> Result<Option<([u8; 32], u64)>, S3Error> {
        const WHAT: &str = "GET";
        let url = self.signed(
            WHAT,
            key,
            &GetObject::new(&self.bucket, Some(&self.credentials), key),
        )?;
        let resp =
            idempotent(|| self.http.get(url.as_str()).call()).map_err(transport(WHAT, key))?;
        match resp.status().as_u16() {
            200 => {}
            404 => return Ok(None),
            status => return Err(status_error(WHAT, key, status, resp)),
        }
        let mut body = resp.into_body().into_reader();
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let mut buf = vec![0u8; 64 << 10];
        let mut len = 0u64;
        loop {
            let n = body.read(&mut buf).map_err(|e| S3Error::Transport {
                what: WHAT,
                key: key.to_owned(),
                reason: e.to_string(),
            })?;
            if n == 0 {
                break;
            }
            ctx.update(&buf[..n]);
            len += n as u64;
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        Ok(Some((out, len)))
    }

    /// Uploads the file at `path` as `key`: one PUT up to the part size,
    /// a multipart upload of parts that size above it, which resumes from
    /// the upload `progress` records ([`multipart`]) if given. Returns the
    /// bytes sent by this call.
    pub fn put_file(
        &self,
        key: &str,
        path: &Path,
        progress: Option<&Path>,
    ) -> Result<u64, S3Error> {
        let io = |source| S3Error::Io {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len <= self.part_size {
            const WHAT: &str = "PUT";
            let url = self.signed(
                WHAT,
                key,
                &PutObject::new(&self.bucket, Some(&self.credentials), key),
            )?;
            let mut body = self.body(&file);
            let resp = self
                .http
                .put(url.as_str())
                .header("content-length", len)
                .send(ureq::SendBody::from_reader(&mut body))
                .map_err(transport(WHAT, key))?;
            return match resp.status().as_u16() {
                200 => Ok(len),
                status => Err(status_error(WHAT, key, status, resp)),
            };
        }
        self.multipart(key, file, len, progress)
            .map_err(|e| match e {
                S3Error::Io { path: p, source } if p.as_os_str().is_empty() => io(source),
                other => other,
            })
    }
}

/// Sends an idempotent request (GET, DELETE), and once more if the first
/// try found its connection closed: a store may close a connection after an
/// error answer (a refused PUT) that the client had kept for the next
/// request. A request with a body is never sent twice here.
pub(super) fn idempotent<T>(
    mut send: impl FnMut() -> Result<T, ureq::Error>,
) -> Result<T, ureq::Error> {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    match send() {
        Err(ureq::Error::Io(e))
            if matches!(
                e.kind(),
                UnexpectedEof | ConnectionReset | BrokenPipe | ConnectionAborted
            ) =>
        {
            send()
        }
        other => other,
    }
}

fn transport<'k>(what: &'static str, key: &'k str) -> impl FnOnce(ureq::Error) -> S3Error + 'k {
    move |e| S3Error::Transport {
        what,
        key: key.to_owned(),
        reason: e.to_string(),
    }
}

fn status_error(
    what: &'static str,
    key: &str,
    status: u16,
    resp: http_response::Response,
) -> S3Error {
    let text = resp
        .into_body()
        .with_config()
        .limit(16 << 10)
        .read_to_string()
        .unwrap_or_default();
    S3Error::Status {
        what,
        key: key.to_owned(),
        status,
        message: short(&text),
    }
}

fn ok_text(
    what: &'static str,
    key: &str,
    resp: http_response::Response,
) -> Result<String, S3Error> {
    let status = resp.status().as_u16();
    if status != 200 {
        return Err(status_error(what, key, status, resp));
    }
    resp.into_body()
        .with_config()
        .limit(1 << 20)
        .read_to_string()
        .map_err(transport(what, key))
}

/// The store's message: its `<Code>` and `<Message>` if it sent S3's XML,
/// else the start of what it sent.
fn short(text: &str) -> String {
    let tag = |name: &str| {
        let open = format!("<{name}>");
        let start = text.find(&open)? + open.len();
        let end = text[start..].find(&format!("</{name}>"))? + start;
        Some(text[start..end].to_owned())
    };
    match (tag("Code"), tag("Message")) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c,
        _ => text.chars().take(200).collect(),
    }
}

mod http_response {
    pub type Response = ureq::http::Response<ureq::Body>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::offload::Credentials;

    /// The allow-list is asked again at run time, of every request: a store
    /// that is not on it (here: settings that never passed the config check)
    /// gets no connection at all, and the error says why.
    #[test]
    fn a_request_off_the_allow_list_is_refused_before_anything_is_sent() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let settings = OffloadSettings {
            endpoint: Url::parse(&format!("http://127.0.0.1:{port}")).expect("url"),
            region: "garage".into(),
            bucket: "evidence".into(),
            addressing: Addressing::Path,
            credentials: Credentials {
                access_key_id: "GK1".into(),
                secret_access_key: "never-shown".into(),
            },
            ca_file: None,
            allow: Allow {
                endpoints: vec!["http://127.0.0.1:1".into()],
                regions: vec!["garage".into()],
            },
            part_size: 8 << 20,
            free_local: false,
            max_bytes_s: None,
            when: Default::default(),
        };
        let store = Store::new(&settings).expect("client");
        let file = tempfile::NamedTempFile::new().expect("file");
        std::fs::write(file.path(), b"sealed bytes").expect("write");
        for err in [
            store.get_sha256("gw/cam/0000000001.json").map(|_| ()),
            store
                .put_file("gw/cam/0000000001.json", file.path(), None)
                .map(|_| ()),
        ] {
            let err = err.expect_err("refused");
            assert!(matches!(err, S3Error::Refused { .. }), "{err}");
            let msg = err.to_string();
            assert!(msg.contains("offload.allow_endpoints"), "{msg}");
            assert!(!msg.contains("never-shown"), "{msg}");
        }
        let mut other = settings.clone();
        other.allow.endpoints = vec![format!("http://127.0.0.1:{port}")];
        other.allow.regions = vec!["lv-1".into()];
        let err = Store::new(&other)
            .expect("client")
            .put_file("k", file.path(), None)
            .expect_err("region refused");
        assert!(err.to_string().contains("offload.allow_regions"), "{err}");
        assert!(
            matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "no connection was made"
        );
    }

    #[test]
    fn the_store_message_is_its_code_and_message() {
        let xml = "<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code>\
                   <Message>Forbidden: no write</Message></Error>";
        assert_eq!(short(xml), "AccessDenied: Forbidden: no write");
        assert_eq!(short("plain"), "plain");
    }
}
