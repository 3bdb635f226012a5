//! `[offload]`: the S3-compatible evidence store sealed segments are
//! offloaded to, validated; and `offload` of a camera.
//!
//! Invariants (`docs/design.md`, "Evidence offload"; J-A1 26: video is never
//! transferred outside the EU/EEA):
//! - an endpoint or region that is not on the section's allow-list
//!   (`allow_endpoints`, `allow_regions`) is refused at load with an error
//!   naming `offload.endpoint` or `offload.region`; [`Allow::check`] is asked
//!   again before every request (`crate::offload::s3`);
//! - the credentials file is refused unless only its owner can read it (mode
//!   0600 or 0400), and its secret never appears in an error, a log line or
//!   `Debug` output ([`Credentials`]);
//! - a camera with `offload` set needs the `[offload]` section.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use url::Url;

use super::check::Collector;
use super::fields::resolve;

/// Part size of a multipart upload by default, MiB; objects up to this size
/// go in one request.
const DEFAULT_PART_MB: u64 = 8;
/// S3 allows parts of 5 MiB to 5 GiB.
const PART_MB: std::ops::RangeInclusive<u64> = 5..=1024;
/// Highest `max_kib_s` (16 GiB/s: beyond any link; keeps `× 1024` in range).
const MAX_KIB_S: u64 = 16 << 20;

/// `[offload]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOffload {
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub addressing: Option<String>,
    pub credentials_file: String,
    pub ca_file: Option<String>,
    #[serde(default)]
    pub allow_endpoints: Vec<String>,
    #[serde(default)]
    pub allow_regions: Vec<String>,
    pub part_size_mb: Option<u64>,
    pub local: Option<String>,
    pub max_kib_s: Option<u64>,
    #[serde(default)]
    pub schedule: Vec<String>,
    #[serde(default)]
    pub interfaces: Vec<String>,
}

/// How object URLs are formed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addressing {
    /// `https://endpoint/bucket/key` (`addressing = "path"`, the default).
    Path,
    /// `https://bucket.endpoint/key` (`addressing = "virtual-host"`).
    VirtualHost,
}

/// Which of a camera's records are offloaded (`offload` of a camera).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OffloadMode {
    /// None by itself (the default).
    #[default]
    Off,
    /// Every record it seals (`offload = "all"`).
    All,
}

pub use sargs_core::config::credentials::Credentials;

/// The places data may go: endpoints (scheme, host and port) and regions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allow {
    /// Origins, `scheme://host[:port]`, as [`Url::origin`] writes them.
    pub endpoints: Vec<String>,
    pub regions: Vec<String>,
}

impl Allow {
    /// `Ok` if `url` (an endpoint, or a request's URL) goes to an allowed
    /// endpoint — with virtual-host addressing, `bucket.` before an allowed
    /// host — and `region` is allowed; else the reason.
    pub fn check(&self, url: &Url, bucket: &str, region: &str) -> Result<(), String> {
        self.check_region(region)?;
        self.check_endpoint(url, bucket)
    }

    fn check_region(&self, region: &str) -> Result<(), String> {
        if self.regions.iter().any(|r| r == region) {
            Ok(())
        } else {
            Err(format!(
                "region {region:?} is not in offload.allow_regions ({}): \
                 video may not be transferred outside the EU/EEA",
                self.regions.join(", ")
            ))
        }
    }

    fn check_endpoint(&self, url: &Url, bucket: &str) -> Result<(), String> {
        let origin = url.origin().ascii_serialization();
        let allowed = self.endpoints.iter().any(|e| {
            *e == origin
                || url.host_str().is_some_and(|host| {
                    let mut hosted = url.clone();
                    let bare = host.strip_prefix(&format!("{bucket}.")).unwrap_or(host);
                    hosted.set_host(Some(bare)).is_ok()
                        && hosted.origin().ascii_serialization() == *e
                })
        });
        if allowed {
            Ok(())
        } else {
            Err(format!(
                "{origin} is not in offload.allow_endpoints ({}): \
                 video may not be transferred outside the EU/EEA",
                self.endpoints.join(", ")
            ))
        }
    }
}

/// The validated `[offload]` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffloadSettings {
    pub endpoint: Url,
    pub region: String,
    pub bucket: String,
    pub addressing: Addressing,
    pub credentials: Credentials,
    /// PEM CA certificate(s) an `https://` endpoint is verified against.
    pub ca_file: Option<PathBuf>,
    pub allow: Allow,
    /// Objects larger than this go as a multipart upload of parts this size.
    pub part_size: u64,
    /// `local = "free"`: the local media is deleted (with a receipt naming
    /// the object) once verified in the store; `"keep"` (default): it stays
    /// until its own deadline.
    pub free_local: bool,
    /// Upload bandwidth cap, bytes per second (`max_kib_s` × 1024); `None`:
    /// as fast as the link goes.
    pub max_bytes_s: Option<u64>,
    /// When uploads may go (`schedule`, `interfaces`); none: always.
    pub when: super::when::Rules,
}

pub(super) fn offload(
    v: &mut Collector<'_>,
    raw: &RawOffload,
    base: &Path,
) -> Option<OffloadSettings> {
    let endpoint = v.ok("offload.endpoint", endpoint_url(&raw.endpoint));
    if raw.region.trim().is_empty() {
        v.invalid("offload.region", "must not be empty");
    }
    if let Err(reason) = bucket_name(&raw.bucket) {
        v.invalid("offload.bucket", reason);
    }
    let addressing = match raw.addressing.as_deref() {
        None | Some("path") => Addressing::Path,
        Some("virtual-host") => Addressing::VirtualHost,
        Some(other) => {
            v.invalid(
                "offload.addressing",
                format!("{other:?} is not \"path\" or \"virtual-host\""),
            );
            Addressing::Path
        }
    };
    if let (Addressing::VirtualHost, Some(url)) = (addressing, &endpoint) {
        if !matches!(url.host(), Some(url::Host::Domain(_))) {
            v.invalid(
                "offload.addressing",
                "virtual-host addressing needs a host name in offload.endpoint, not an IP address",
            );
        }
    }
    let allow = allow_list(v, raw);
    if let Some(allow) = &allow {
        if let Err(reason) = allow.check_region(&raw.region) {
            v.invalid("offload.region", reason);
        }
        if let Some(url) = &endpoint {
            if let Err(reason) = allow.check_endpoint(url, &raw.bucket) {
                v.invalid("offload.endpoint", reason);
            }
        }
    }
    let credentials = v
        .ok(
            "offload.credentials_file",
            resolve(base, &raw.credentials_file),
        )
        .and_then(|p| v.ok("offload.credentials_file", Credentials::read(&p)));
    let ca_file = raw.ca_file.as_ref().and_then(|p| {
        let path = v.ok("offload.ca_file", resolve(base, p))?;
        if !path.is_file() {
            v.invalid(
                "offload.ca_file",
                format!("{}: no such file", path.display()),
            );
        }
        Some(path)
    });
    if let Some(url) = &endpoint {
        match (url.scheme(), &ca_file) {
            ("https", None) => v.invalid(
                "offload.ca_file",
                "an https:// endpoint needs the CA that signs the store's certificate \
                 (the system's trust store is not used; Debian's is \
                 /etc/ssl/certs/ca-certificates.crt)",
            ),
            ("http", Some(_)) => v.invalid(
                "offload.ca_file",
                "has no effect with an http:// endpoint; use https://",
            ),
            _ => {}
        }
    }
    let part_mb = raw.part_size_mb.unwrap_or(DEFAULT_PART_MB);
    if !PART_MB.contains(&part_mb) {
        v.invalid(
            "offload.part_size_mb",
            format!(
                "{part_mb} is out of range {}..={} (MiB)",
                PART_MB.start(),
                PART_MB.end()
            ),
        );
    }
    let free_local = match raw.local.as_deref() {
        None | Some("keep") => false,
        Some("free") => true,
        Some(other) => {
            v.invalid(
                "offload.local",
                format!("{other:?} is not \"keep\" or \"free\""),
            );
            false
        }
    };
    let max_bytes_s = match raw.max_kib_s {
        Some(0) => {
            v.invalid(
                "offload.max_kib_s",
                "0 would stop every upload; leave it out for no cap",
            );
            None
        }
        Some(n) if n > MAX_KIB_S => {
            v.invalid(
                "offload.max_kib_s",
                format!("{n} is above {MAX_KIB_S} (KiB/s); leave it out for no cap"),
            );
            None
        }
        other => other.map(|n| n << 10),
    };
    let when = super::when::rules(v, &raw.schedule, &raw.interfaces);
    Some(OffloadSettings {
        when,
        free_local,
        max_bytes_s,
        endpoint: endpoint?,
        region: raw.region.clone(),
        bucket: raw.bucket.clone(),
        addressing,
        credentials: credentials?,
        ca_file,
        allow: allow?,
        part_size: part_mb << 20,
    })
}

/// `offload` of a camera (`camera[1].offload`, `dock.camera[0].offload`).
pub(super) fn mode(
    v: &mut Collector<'_>,
    key: &str,
    raw: Option<&str>,
    section: bool,
) -> OffloadMode {
    match raw {
        None => OffloadMode::Off,
        Some("all") if section => OffloadMode::All,
        Some("all") => {
            v.invalid(
                key,
                "set, but there is no [offload] section naming the store",
            );
            OffloadMode::Off
        }
        Some(other) => {
            v.invalid(key, format!("{other:?} is not \"all\""));
            OffloadMode::Off
        }
    }
}

fn endpoint_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("{text:?}: not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{text:?}: use https://HOST[:PORT] (or http://)"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{text:?}: no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{:?}: credentials do not belong in the URL (they go in offload.credentials_file)",
            super::redact_userinfo(text)
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{text:?}: no query or fragment"));
    }
    Ok(url)
}

/// S3 bucket names: 3 to 63 lower-case letters, digits, `-` and `.`,
/// starting and ending with a letter or digit.
fn bucket_name(name: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if (3..=63).contains(&name.len())
        && name.chars().all(ok_char)
        && edge(name.chars().next())
        && edge(name.chars().last())
    {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not an S3 bucket name (3 to 63 of a-z, 0-9, '-', '.')"
        ))
    }
}

fn allow_list(v: &mut Collector<'_>, raw: &RawOffload) -> Option<Allow> {
    let why = "the policy forbids transfers out of the EU/EEA: list the store's \
               endpoints and regions that are inside it";
    if raw.allow_endpoints.is_empty() {
        v.invalid("offload.allow_endpoints", format!("empty; {why}"));
    }
    if raw.allow_regions.is_empty() {
        v.invalid("offload.allow_regions", format!("empty; {why}"));
    }
    let mut endpoints = Vec::new();
    for (i, e) in raw.allow_endpoints.iter().enumerate() {
        if let Some(url) = v.ok(format!("offload.allow_endpoints[{i}]"), endpoint_url(e)) {
            endpoints.push(url.origin().ascii_serialization());
        }
    }
    if endpoints.is_empty()
        || endpoints.len() != raw.allow_endpoints.len()
        || raw.allow_regions.is_empty()
    {
        return None;
    }
    Some(Allow {
        endpoints,
        regions: raw.allow_regions.clone(),
    })
}
