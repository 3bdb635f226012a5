//! The link's TLS client configuration: rustls on the `ring` provider (the
//! one crypto provider of the agent), the broker verified against the
//! configured CA only, and an optional client certificate.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsFiles;

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
