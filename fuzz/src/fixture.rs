//! What every target shares: the fixed instant the checks are made at, the
//! agent's id, the test signing key (the agent's device key and HQ's
//! command key alike), HQ's test age identity, and a scratch directory.
//!
//! Invariant: everything here is fixed, so a target gives the same result
//! for the same input on every run and machine (a crash found once is found
//! again), and the seed corpora signed or sealed with these keys stay valid.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use chrono::{DateTime, Utc};
use sargs_core::seal::sign::DeviceKey;

/// The agent the targets act as, and the agent HQ's ledger has enrolled.
pub const AGENT: &str = "gw-01";

/// The MQTT topic prefix of the test fleet.
pub const PREFIX: &str = "sargs";

/// The instant every check is made at: 2026-11-23T10:00:00Z.
pub const NOW_MS: i64 = 1_795_428_000_000;

/// [`NOW_MS`] as an instant.
pub fn now() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(NOW_MS).unwrap_or_default()
}

/// The test Ed25519 key (PKCS#8 v2, as `sargs` stores a device key). Known
/// to anyone who reads this file: it signs test data only.
const KEY_PKCS8: &[u8; 85] = b"\
\x30\x53\x02\x01\x01\x30\x05\x06\x03\x2b\x65\x70\x04\x22\x04\x20\
\x6f\x1a\xa8\x86\x46\x8e\xe9\x2b\x58\x2a\x45\x1a\x10\xbb\xa9\x0e\
\xb5\x5b\xf0\x46\x6b\xd1\x29\xd4\x4b\x6b\x16\xf3\x5f\x3d\x4a\x11\
\xa1\x23\x03\x21\x00\x86\xdd\xcb\xa5\xad\xfe\x64\xa4\xeb\x43\x48\
\x24\xb7\x85\x3a\x49\x64\x12\x3f\xe7\x3e\x48\x7e\xdc\x10\xdb\x7e\
\xdd\x7c\x5b\x9a\xd6";

/// The public half of the test key, Base64.
pub const KEY_B64: &str = "ht3Lpa3+ZKTrQ0gkt4U6SWQSP+c+SH7cENt+3XxbmtY=";

/// HQ's test age identity, and its recipient (seeds are sealed to it).
pub const AGE_IDENTITY: &str =
    "AGE-SECRET-KEY-1HSXLALGLT0ZLAGP5343UX4Q8RA2QDF8CKRECCQNM4G8MVJZ6LJ2QM0LRED";
pub const AGE_RECIPIENT: &str = "age1ctpvrppyme383fns7cmdaqng2m2zzkk0lszdhaf7thxn9zxesulqmecnq3";

/// The test key, loaded as the agent loads its device key (from a file of
/// mode 0600, written into `dir`).
pub fn key(dir: &Path) -> Result<DeviceKey, String> {
    let path = dir.join("device.key");
    if !path.exists() {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        f.write_all(KEY_PKCS8)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    DeviceKey::load(&path).map_err(|e| e.to_string())
}

/// HQ's test identity, as `sargsctl decrypt` holds its identities.
pub fn identities() -> Result<sargs_core::seal::open::Identities, String> {
    let id: age::x25519::Identity = AGE_IDENTITY.parse().map_err(|e: &str| e.to_owned())?;
    Ok(vec![Box::new(id)])
}

/// A scratch directory for one target in one process, removed when dropped
/// (under `$TMPDIR`: `scripts/fuzz` points it into the build directory).
pub fn scratch(target: &str) -> Result<tempfile::TempDir, String> {
    tempfile::Builder::new()
        .prefix(&format!("sargs-fuzz-{target}-"))
        .tempdir()
        .map_err(|e| format!("scratch directory: {e}"))
}

/// The public half of the test key, as bytes.
pub fn key_public() -> [u8; 32] {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(KEY_B64)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .unwrap_or([0; 32])
}
