//! The MQTT link's address and TLS client configuration, shared by the
//! agent's link and HQ's broker client: `mqtt://`/`mqtts://` URLs, rustls on
//! the `ring` provider (the one crypto provider of sargs), the broker verified
//! against the configured CA only, and an optional client certificate.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use std::path::PathBuf;

/// TLS files of the link (absolute paths).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM CA certificate(s) that sign the broker's certificate; the system's
    /// trust store is not used, so this is required for `mqtts://`.
    pub ca: PathBuf,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// `mqtt://host[:1883]` or `mqtts://host[:8883]`: (TLS?, host, port).
pub fn parse_url(url: &str) -> Result<(bool, String, u16), String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("mqtts://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("mqtt://") {
        (false, r)
    } else {
        return Err(format!(
            "{url:?}: use mqtt://HOST[:PORT] or mqtts://HOST[:PORT]"
        ));
    };
    let rest = rest.trim_end_matches('/');
    if rest.contains('@') || rest.contains('/') {
        return Err(format!(
            "{url:?}: only host and port belong in the URL (credentials go in username/password_file)"
        ));
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
            let port = p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("{url:?}: port {p:?} is not 1 to 65535"))?;
            (h, port)
        }
        _ => (rest, if tls { 8883 } else { 1883 }),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("{url:?}: no host"));
    }
    Ok((tls, host.to_owned(), port))
}

/// Builds the client configuration; errors name the file and the problem.
pub fn client_config(files: &TlsFiles) -> Result<rustls::ClientConfig, String> {
    let shown = |p: &std::path::Path| p.display().to_string();
    let mut roots = rustls::RootCertStore::empty();
    let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.ca)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| format!("{}: {e}", shown(&files.ca)))?;
    if cas.is_empty() {
        return Err(format!("{}: no PEM certificate", shown(&files.ca)));
    }
    for ca in cas {
        roots
            .add(ca)
            .map_err(|e| format!("{}: {e}", shown(&files.ca)))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    match (&files.client_cert, &files.client_key) {
        (Some(cert), Some(key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<_, _>>())
                .map_err(|e| format!("{}: {e}", shown(cert)))?;
            let key =
                PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", shown(key)))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("{}: {e}", shown(cert)))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}
