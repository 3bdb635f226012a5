//! Targets for what an operator writes: the agent's `sargs.toml`, HQ's
//! `hq.toml` and a municipality's policy file.
//!
//! Invariant: each input is read by the product's loader as if it were the
//! file itself, in a directory that also holds the shipped policy (so a
//! configuration naming `policy/lv-jekabpils-2022.toml` reads it, as it
//! does when installed); a loader returns the configuration or every
//! problem with its key, and never panics.

use std::path::PathBuf;

use sargs::config::Config;
use sargs_core::policy::Policy;
use sargs_hq::service::config::HqConfig;

use crate::fixture;
use crate::Harness;

/// The shipped policy, installed beside the configurations.
const SHIPPED_POLICY: &str = include_str!("../../deploy/policy/lv-jekabpils-2022.toml");

/// `sargs.toml` (with the policy file it names) and `hq.toml`.
pub struct ConfigTarget {
    _dir: tempfile::TempDir,
    agent: PathBuf,
    hq: PathBuf,
}

impl ConfigTarget {
    pub fn make() -> Result<Box<dyn Harness>, String> {
        let dir = fixture::scratch("config")?;
        let policy = dir.path().join("policy");
        std::fs::create_dir(&policy).map_err(|e| e.to_string())?;
        std::fs::write(policy.join("lv-jekabpils-2022.toml"), SHIPPED_POLICY)
            .map_err(|e| e.to_string())?;
        Ok(Box::new(ConfigTarget {
            agent: dir.path().join("sargs.toml"),
            hq: dir.path().join("hq.toml"),
            _dir: dir,
        }))
    }
}

impl Harness for ConfigTarget {
    fn run(&self, data: &[u8]) {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        let _ = Config::from_str(text, &self.agent);
        if std::fs::write(&self.hq, data).is_ok() {
            let _ = HqConfig::load(&self.hq);
        }
    }
}

/// A policy file.
pub struct PolicyTarget;

impl PolicyTarget {
    pub fn make() -> Result<Box<dyn Harness>, String> {
        Ok(Box::new(PolicyTarget))
    }
}

impl Harness for PolicyTarget {
    fn run(&self, data: &[u8]) {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        if let Ok(policy) = Policy::from_str(text, std::path::Path::new("policy.toml")) {
            // What the agent does with a policy it loaded: a notice for
            // each purpose, the deadline of a record of each class.
            for purpose in policy.purpose_ids() {
                if let Some(p) = policy.purpose(purpose) {
                    let _ = policy.render_notice(p);
                }
            }
            for class in policy.class_ids() {
                if let Some(c) = policy.class(class) {
                    for t in [fixture::now(), chrono::DateTime::<chrono::Utc>::MAX_UTC] {
                        let _ = c.delete_after(t);
                        let _ = c.hold_limit(t);
                    }
                }
            }
        }
    }
}
