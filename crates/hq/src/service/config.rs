//! `hq.toml`: the HQ service's configuration.
//!
//! ```toml
//! [broker]
//! url = "mqtts://broker.example.lv:8883"   # or mqtt://127.0.0.1:1883
//! ca_file = "/etc/sargs-hq/ca.pem"         # required for mqtts://
//! client_id = "sargs-hq-1"                 # one per replica
//! share_group = "sargs-hq"                 # MQTT 5 shared subscription (optional)
//!
//! [database]
//! url = "sqlite:///var/lib/sargs-hq/hq.db" # or postgres://user@host/db
//!
//! [commands]
//! trusted_keys = ["<HQ command key, Base64>"]  # as in the agents' [hq] command_keys
//! key_file = "hq-signing.pk8"    # HQ's command key, to sign what the service issues
//!
//! [api]
//! listen = "127.0.0.1:8640"      # TLS (tls_cert, tls_key) required beyond loopback
//!
//! [ledger]
//! grace_hours = 24        # past a deadline this long with no receipt: overdue
//! offline_after_s = 900   # no status or telemetry this long: offline alarm
//! claim_grace_s = 120     # acknowledged by the broker, not here this long: ask again
//! ```
//!
//! Every error names the file, the key and the reason (the same
//! [`ConfigError`] as the agent's config); a relative path is taken from the
//! directory of the file that names it, so a config is usable wherever it
//! is started from.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use sargs_core::config::check;
use sargs_core::config::error::{decode, read_file};
pub use sargs_core::config::ConfigError;

/// The service's configuration, checked.
#[derive(Debug, Clone)]
pub struct HqConfig {
    pub file: PathBuf,
    pub broker: Broker,
    pub database: Database,
    pub ledger: Ledger,
    /// The command keys the agents trust: a command seen on their topics is
    /// kept (and what it protects counted) only when signed by one of them.
    pub trust: sargs_core::command::Trust,
    /// HQ's command-signing key (mode 0600), when the service issues
    /// commands itself (API, `resend` of what a broker lost).
    pub command_key: Option<PathBuf>,
    pub api: Api,
}

/// The HTTP JSON API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Api {
    /// `host:port`; empty turns the API off.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Certificate chain and key (PEM) for HTTPS; required unless `listen`
    /// is a loopback address.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
}

impl Default for Api {
    fn default() -> Self {
        Api {
            listen: default_listen(),
            tls_cert: None,
            tls_key: None,
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:8640".into()
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Commands {
    #[serde(default)]
    trusted_keys: Vec<String>,
    #[serde(default)]
    key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Broker {
    pub url: String,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    #[serde(default)]
    pub username: Option<String>,
    /// A file holding the password (mode 0600), never the password itself.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// The agents' topic prefix (`[hq] prefix` in their configs).
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// The MQTT client id; its persistent session holds what the broker has
    /// not yet had acknowledged. Each replica needs its own.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// With a group, replicas share the agents' topics through MQTT 5
    /// shared subscriptions (`$share/{group}/…`): each message goes to one.
    #[serde(default)]
    pub share_group: Option<String>,
    #[serde(default = "default_keep_alive")]
    pub keep_alive_s: u64,
    /// Larger payloads are quarantined unread.
    #[serde(default = "default_max_payload")]
    pub max_payload_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Database {
    /// `sqlite://PATH` (created if missing) or `postgres://…`.
    #[serde(default = "default_db")]
    pub url: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ledger {
    /// A deletion is on time when its receipt says it happened at most this
    /// long after the deadline: the agents' sweep interval (default 60 s)
    /// and the sweep itself (design guarantee 2).
    #[serde(default = "default_bound")]
    pub deletion_bound_s: u64,
    /// How long past its deadline a record may stay without a receipt before
    /// it is overdue (the agents' sweep interval and an outage's worth).
    #[serde(default = "default_grace")]
    pub grace_hours: u64,
    /// No status or telemetry from an agent this long raises `agent.offline`.
    #[serde(default = "default_offline")]
    pub offline_after_s: u64,
    /// How often the ledger is checked for overdue records, holes and
    /// silent agents.
    #[serde(default = "default_check")]
    pub check_interval_s: u64,
    /// How long after an agent's telemetry first says the broker has
    /// acknowledged a record or receipt the ledger may still lack it before
    /// HQ asks for it again (the broker lost it): the time a message the
    /// broker holds takes to reach the service, with room to spare.
    #[serde(default = "default_claim_grace")]
    pub claim_grace_s: u64,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger {
            deletion_bound_s: default_bound(),
            grace_hours: default_grace(),
            offline_after_s: default_offline(),
            check_interval_s: default_check(),
            claim_grace_s: default_claim_grace(),
        }
    }
}

impl Default for Database {
    fn default() -> Self {
        Database { url: default_db() }
    }
}

fn default_claim_grace() -> u64 {
    120
}
fn default_prefix() -> String {
    "sargs".into()
}
fn default_client_id() -> String {
    "sargs-hq".into()
}
fn default_keep_alive() -> u64 {
    30
}
fn default_max_payload() -> usize {
    1 << 20
}
fn default_db() -> String {
    "sqlite://hq.db".into()
}
fn default_bound() -> u64 {
    120
}
fn default_grace() -> u64 {
    24
}
fn default_offline() -> u64 {
    900
}
fn default_check() -> u64 {
    60
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    broker: Broker,
    #[serde(default)]
    database: Database,
    #[serde(default)]
    ledger: Ledger,
    #[serde(default)]
    commands: Commands,
    #[serde(default)]
    api: Api,
}

impl HqConfig {
    /// Reads and checks `file`.
    pub fn load(file: &Path) -> Result<HqConfig, ConfigError> {
        let text = read_file(file)?;
        let raw: Raw = decode(&text, file)?;
        let base = file.parent().unwrap_or(Path::new("."));
        let mut errors = Vec::new();
        let mut invalid = |key: &str, reason: String| {
            errors.push(ConfigError::Invalid {
                file: file.to_owned(),
                key: key.to_owned(),
                reason,
            })
        };
        let mut broker = raw.broker;
        match sargs_core::link::parse_url(&broker.url) {
            Ok((true, _, _)) if broker.ca_file.is_none() => invalid(
                "broker.ca_file",
                "required for an mqtts:// broker (the CA that signed its certificate)".into(),
            ),
            Ok(_) => {}
            Err(e) => invalid("broker.url", e),
        }
        for (key, value) in [
            ("broker.client_id", &broker.client_id),
            ("broker.prefix", &broker.prefix),
        ] {
            if let Err(e) = check::id(value) {
                invalid(key, e);
            }
        }
        if let Some(g) = &broker.share_group {
            if let Err(e) = check::id(g) {
                invalid("broker.share_group", e);
            }
        }
        if broker.client_cert.is_some() != broker.client_key.is_some() {
            invalid(
                "broker.client_cert",
                "client_cert and client_key go together".into(),
            );
        }
        if broker.keep_alive_s < 5 {
            invalid("broker.keep_alive_s", "at least 5 seconds".into());
        }
        if broker.max_payload_bytes < 4096 {
            invalid("broker.max_payload_bytes", "at least 4096 bytes".into());
        }
        for p in [
            &mut broker.ca_file,
            &mut broker.client_cert,
            &mut broker.client_key,
            &mut broker.password_file,
        ]
        .into_iter()
        .flatten()
        {
            *p = base.join(&*p);
        }
        let database = Database {
            url: match resolve_db_url(&raw.database.url, base) {
                Ok(u) => u,
                Err(e) => {
                    invalid("database.url", e);
                    String::new()
                }
            },
        };
        let trust = sargs_core::command::Trust::from_b64(&raw.commands.trusted_keys)
            .unwrap_or_else(|e| {
                invalid("commands.trusted_keys", e);
                Default::default()
            });
        if raw.ledger.check_interval_s == 0 {
            invalid("ledger.check_interval_s", "at least 1 second".into());
        }
        if !(1..=86_400).contains(&raw.ledger.claim_grace_s) {
            invalid(
                "ledger.claim_grace_s",
                format!("{}: from 1 to 86400 seconds", raw.ledger.claim_grace_s),
            );
        }
        let mut api = raw.api;
        if !api.listen.is_empty() {
            match api.listen.parse::<std::net::SocketAddr>() {
                Err(e) => invalid("api.listen", format!("{:?}: {e} (host:port)", api.listen)),
                Ok(a) if !a.ip().is_loopback() && (api.tls_cert.is_none() || api.tls_key.is_none()) => invalid(
                    "api.listen",
                    format!("{a} is not a loopback address: set api.tls_cert and api.tls_key (HTTPS)"),
                ),
                Ok(_) => {}
            }
        }
        if api.tls_cert.is_some() != api.tls_key.is_some() {
            invalid("api.tls_cert", "tls_cert and tls_key go together".into());
        }
        for p in [&mut api.tls_cert, &mut api.tls_key].into_iter().flatten() {
            *p = base.join(&*p);
        }
        let command_key = raw.commands.key_file.map(|p| base.join(p));
        ConfigError::from_list(errors)?;
        Ok(HqConfig {
            command_key,
            api,
            file: file.to_owned(),
            broker,
            database,
            ledger: raw.ledger,
            trust,
        })
    }

    /// The broker password, read from its file.
    pub fn password(&self) -> Result<Option<String>, String> {
        let Some(p) = &self.broker.password_file else {
            return Ok(None);
        };
        std::fs::read_to_string(p)
            .map(|s| Some(s.trim_end_matches(['\n', '\r']).to_owned()))
            .map_err(|e| format!("broker.password_file {}: {e}", p.display()))
    }
}

/// `sqlite://relative/path` is taken from the config's directory;
/// `sqlite:///abs`, `postgres://` and `postgresql://` are kept.
fn resolve_db_url(url: &str, base: &Path) -> Result<String, String> {
    if let Some(rest) = url.strip_prefix("sqlite://") {
        let (path, query) = rest
            .split_once('?')
            .map_or((rest, None), |(p, q)| (p, Some(q)));
        if path.is_empty() {
            return Err("sqlite:// needs a file path (sqlite://hq.db)".into());
        }
        let full = base.join(path);
        let mut u = format!("sqlite://{}", full.display());
        if let Some(q) = query {
            u.push('?');
            u.push_str(q);
        }
        Ok(u)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(url.to_owned())
    } else {
        Err(format!(
            "{url:?}: expected sqlite://PATH or postgres://USER@HOST[:PORT]/DB"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<HqConfig, ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("hq.toml");
        std::fs::write(&f, text).expect("write");
        HqConfig::load(&f)
    }

    #[test]
    fn defaults_and_relative_paths() {
        let c = load("[broker]\nurl = \"mqtt://127.0.0.1:1883\"\n").expect("loads");
        assert_eq!(c.broker.prefix, "sargs");
        assert_eq!(c.ledger.grace_hours, 24);
        let dir = c.file.parent().expect("dir");
        assert_eq!(
            c.database.url,
            format!("sqlite://{}", dir.join("hq.db").display())
        );
    }

    #[test]
    fn every_problem_is_named_with_its_key() {
        let e = load(
            "[broker]\nurl = \"mqtts://h:1\"\nshare_group = \"a/b\"\n[database]\nurl = \"mysql://x\"\n",
        )
        .expect_err("refused")
        .to_string();
        for key in ["broker.ca_file", "broker.share_group", "database.url"] {
            assert!(e.contains(key), "{key} in {e}");
        }
        let e = load("[broker]\nurl = \"mqtt://h:1\"\nsharegroup = \"x\"\n")
            .expect_err("typo")
            .to_string();
        assert!(
            e.contains("broker.sharegroup") && e.contains("unknown key"),
            "{e}"
        );
    }
}
