//! An S3 access key in a file of its own: the agent's for its evidence
//! store (`[offload] credentials_file`), HQ's for reading it back
//! (`sargsctl fetch --credentials`).
//!
//! Invariants: the file is refused unless only its owner may read it; no
//! error quotes its content (toml's own error would quote the line, which
//! may be the secret); `Debug` shows the key id only.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde::Deserialize;

/// The store's access key.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

/// The credentials file as written (TOML).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCredentials {
    access_key_id: String,
    secret_access_key: String,
}

impl Credentials {
    /// Reads the credentials file at `path` (see the module invariants);
    /// the error names the file and what is wrong.
    pub fn read(path: &Path) -> Result<Credentials, String> {
        let shown = path.display();
        let meta = std::fs::metadata(path).map_err(|e| format!("{shown}: {e}"))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "{shown}: mode {mode:04o}; it holds the store's secret key and must be \
                 readable by its owner only (chmod 600)"
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?;
        let raw: RawCredentials = toml::from_str(&text).map_err(|_| {
            format!(
                "{shown}: not a TOML file with exactly access_key_id = \"…\" and \
                 secret_access_key = \"…\""
            )
        })?;
        if raw.access_key_id.is_empty() || raw.secret_access_key.is_empty() {
            return Err(format!(
                "{shown}: access_key_id and secret_access_key must not be empty"
            ));
        }
        Ok(Credentials {
            access_key_id: raw.access_key_id,
            secret_access_key: raw.secret_access_key,
        })
    }
}
