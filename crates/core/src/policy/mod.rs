//! The municipality's policy: who the controller is, why cameras record
//! (purposes with their legal basis), and how long recordings are kept
//! (retention classes).
//!
//! Guarantee: a [`Policy`] value has passed every check below, so code that
//! stamps manifests or computes deadlines never sees an empty controller
//! notice, a dangling id or a hold cap shorter than the normal period:
//! - ids (`policy.id`, purposes, classes) are unique and use `[A-Za-z0-9._-]`;
//! - every controller-notice and supervisory-authority field is non-empty;
//!   e-mail fields look like e-mail addresses, `url` is an http(s) address,
//!   phone numbers are phone numbers;
//! - at least one purpose and one retention class exist; a purpose's
//!   `classes` list names only defined classes;
//! - `hold_cap`, when present, is at least `keep` from every starting day.
//!
//! The policy lives in its own TOML file (one municipality's policy serves
//! all its gateways); `deploy/policy/lv-jekabpils-2022.toml` encodes the
//! Jēkabpils 2022 privacy policy. The file format is documented key by key
//! in `docs/config.md`.

mod period;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::check;
use crate::config::error::{decode, read_file};
use crate::config::ConfigError;

pub use period::{Period, PeriodError, PeriodUnit, MAX_COUNT as PERIOD_MAX_COUNT};

/// A validated policy file.
#[derive(Clone, Debug, Serialize)]
pub struct Policy {
    /// Short identifier, e.g. `lv-jekabpils-2022`.
    pub id: String,
    /// Human title of the policy.
    pub title: String,
    /// The legal act the policy encodes (council decision, date).
    pub reference: String,
    /// The controller notice stamped into every manifest.
    pub controller: ControllerNotice,
    /// Where people filmed can complain (J 29).
    pub supervisory_authority: SupervisoryAuthority,
    /// Why cameras may record, in file order.
    pub purposes: Vec<Purpose>,
    /// How long recordings are kept, in file order.
    pub classes: Vec<RetentionClass>,
}

/// Who is responsible for the recordings (J 3, J 5). Serialized verbatim
/// into signed manifests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerNotice {
    pub name: String,
    pub registration_no: String,
    pub address: String,
    pub phone: String,
    pub email: String,
    pub dpo_email: String,
    pub url: String,
    pub notice_version: String,
}

/// The data-protection supervisory authority (J 29).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisoryAuthority {
    pub name: String,
    pub address: String,
    pub phone: String,
    pub email: String,
}

/// The legal basis of a processing purpose (J 18.1–18.5; GDPR Art. 6(1)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LegalBasis {
    /// J 18.1 — to meet a legal obligation (GDPR Art. 6(1)(c)).
    LegalObligation,
    /// J 18.2 — a task in the public interest or official authority (6(1)(e)).
    PublicTask,
    /// J 18.3 — performance of a contract (6(1)(b)).
    Contract,
    /// J 18.4 — vital interests: life and health (6(1)(d)).
    VitalInterests,
    /// J 18.5 — consent (6(1)(a)).
    Consent,
}

impl LegalBasis {
    /// The name used in the policy file and in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            LegalBasis::LegalObligation => "legal-obligation",
            LegalBasis::PublicTask => "public-task",
            LegalBasis::Contract => "contract",
            LegalBasis::VitalInterests => "vital-interests",
            LegalBasis::Consent => "consent",
        }
    }

    /// The GDPR provision, e.g. `GDPR Art. 6(1)(e)`.
    pub fn gdpr_article(self) -> &'static str {
        match self {
            LegalBasis::LegalObligation => "GDPR Art. 6(1)(c)",
            LegalBasis::PublicTask => "GDPR Art. 6(1)(e)",
            LegalBasis::Contract => "GDPR Art. 6(1)(b)",
            LegalBasis::VitalInterests => "GDPR Art. 6(1)(d)",
            LegalBasis::Consent => "GDPR Art. 6(1)(a)",
        }
    }
}

impl std::fmt::Display for LegalBasis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a camera records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Purpose {
    pub id: String,
    /// The purpose as the policy states it (Latvian original); this is the
    /// "Mērķis" line of the information sign.
    pub text: String,
    /// An English rendering, for operators; not legally binding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text_en: Option<String>,
    pub legal_basis: LegalBasis,
    /// Where the policy states it, e.g. `J-A1 17.1`.
    pub reference: String,
    /// Retention classes a camera with this purpose may use; empty = any.
    /// A policy constraint, not part of the purpose statement, so it is not
    /// serialized into manifests.
    #[serde(skip)]
    pub allowed_classes: Vec<String>,
}

impl Purpose {
    /// True if a camera with this purpose may use retention class `class_id`.
    pub fn allows_class(&self, class_id: &str) -> bool {
        self.allowed_classes.is_empty() || self.allowed_classes.iter().any(|c| c == class_id)
    }
}

/// How long recordings are kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RetentionClass {
    pub id: String,
    pub title: String,
    /// The normal retention: delete after this long.
    pub keep: Period,
    /// The longest a hold may keep a recording; `None` when the policy sets
    /// no cap (the hold lasts until it is released).
    pub hold_cap: Option<Period>,
    /// Why the policy allows keeping longer (informational, as the policy
    /// states it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold_grounds: Option<String>,
    /// Where the policy states it, e.g. `J-A1 28`.
    pub reference: String,
}

impl RetentionClass {
    /// The instant a recording made at `t` must be deleted by (absent holds).
    pub fn delete_after(
        &self,
        t: chrono::DateTime<chrono::Utc>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        self.keep.add_to(t)
    }

    /// The latest instant a hold may keep a recording made at `t`; `None`
    /// when uncapped (or out of range).
    pub fn hold_limit(
        &self,
        t: chrono::DateTime<chrono::Utc>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        self.hold_cap.and_then(|cap| cap.add_to(t))
    }
}

impl Policy {
    /// Reads and validates a policy file.
    pub fn load(path: &Path) -> Result<Policy, ConfigError> {
        let text = read_file(path)?;
        Policy::from_str(&text, path)
    }

    /// Validates policy text; `file` is named in errors.
    pub fn from_str(text: &str, file: &Path) -> Result<Policy, ConfigError> {
        let raw: RawPolicyFile = decode(text, file)?;
        raw.validate(file)
    }

    /// The purpose with this id.
    pub fn purpose(&self, id: &str) -> Option<&Purpose> {
        self.purposes.iter().find(|p| p.id == id)
    }

    /// The retention class with this id.
    pub fn class(&self, id: &str) -> Option<&RetentionClass> {
        self.classes.iter().find(|c| c.id == id)
    }

    /// Purpose ids in file order.
    pub fn purpose_ids(&self) -> impl Iterator<Item = &str> {
        self.purposes.iter().map(|p| p.id.as_str())
    }

    /// Retention-class ids in file order.
    pub fn class_ids(&self) -> impl Iterator<Item = &str> {
        self.classes.iter().map(|c| c.id.as_str())
    }

    /// The information-sign text for a camera with `purpose` (the template at
    /// the end of J-A1): purpose, controller, contact, more information. One
    /// field per line; also written as a tag into every media container.
    pub fn render_notice(&self, purpose: &Purpose) -> String {
        let c = &self.controller;
        format!(
            "Mērķis: {}\nPārzinis: {}\nKontaktinformācija: {}, tālrunis {}; elektroniskā pasta adrese: {}\nPapildus informācija: {}",
            purpose.text.trim(),
            c.name,
            c.address,
            c.phone,
            c.email,
            c.url
        )
    }
}

// ---- raw layer -----------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicyFile {
    policy: RawHead,
    controller: ControllerNotice,
    supervisory_authority: SupervisoryAuthority,
    #[serde(default)]
    purpose: Vec<RawPurpose>,
    #[serde(default)]
    retention_class: Vec<RawClass>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHead {
    id: String,
    title: String,
    reference: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPurpose {
    id: String,
    text: String,
    text_en: Option<String>,
    legal_basis: LegalBasis,
    reference: String,
    classes: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClass {
    id: String,
    title: String,
    keep: Period,
    hold_cap: Option<Period>,
    hold_grounds: Option<String>,
    reference: String,
}

type Check = fn(&str) -> Result<(), String>;

impl RawPolicyFile {
    fn validate(self, file: &Path) -> Result<Policy, ConfigError> {
        let mut v = check::Collector::new(file);
        v.check("policy.id", &self.policy.id, check::id);
        v.check("policy.title", &self.policy.title, check::non_empty);
        v.check("policy.reference", &self.policy.reference, check::non_empty);

        let c = &self.controller;
        let controller_checks: [(&str, &str, Check); 8] = [
            ("name", &c.name, check::non_empty),
            ("registration_no", &c.registration_no, check::non_empty),
            ("address", &c.address, check::non_empty),
            ("phone", &c.phone, check::phone),
            ("email", &c.email, check::email),
            ("dpo_email", &c.dpo_email, check::email),
            ("url", &c.url, check::web_url),
            ("notice_version", &c.notice_version, check::non_empty),
        ];
        for (k, value, f) in controller_checks {
            v.check(format!("controller.{k}"), value, f);
        }
        let a = &self.supervisory_authority;
        let authority_checks: [(&str, &str, Check); 4] = [
            ("name", &a.name, check::non_empty),
            ("address", &a.address, check::non_empty),
            ("phone", &a.phone, check::phone),
            ("email", &a.email, check::email),
        ];
        for (k, value, f) in authority_checks {
            v.check(format!("supervisory_authority.{k}"), value, f);
        }

        let class_ids: Vec<&str> = self.retention_class.iter().map(|c| c.id.as_str()).collect();
        let mut seen = HashSet::new();
        for (i, p) in self.purpose.iter().enumerate() {
            let key = |k: &str| format!("purpose[{i}].{k}");
            v.check(key("id"), &p.id, check::id);
            if !seen.insert(p.id.as_str()) {
                v.invalid(key("id"), format!("purpose {:?} is defined twice", p.id));
            }
            v.check(key("text"), &p.text, check::non_empty);
            if let Some(en) = &p.text_en {
                v.check(key("text_en"), en, check::non_empty);
            }
            v.check(key("reference"), &p.reference, check::non_empty);
            for (j, cls) in p.classes.iter().flatten().enumerate() {
                if !class_ids.contains(&cls.as_str()) {
                    v.invalid(
                        format!("purpose[{i}].classes[{j}]"),
                        format!(
                            "unknown retention class {cls:?}; the policy defines {}",
                            check::quoted_list(class_ids.iter().copied())
                        ),
                    );
                }
            }
        }
        let mut seen = HashSet::new();
        for (i, c) in self.retention_class.iter().enumerate() {
            let key = |k: &str| format!("retention_class[{i}].{k}");
            v.check(key("id"), &c.id, check::id);
            if !seen.insert(c.id.as_str()) {
                v.invalid(
                    key("id"),
                    format!("retention class {:?} is defined twice", c.id),
                );
            }
            v.check(key("title"), &c.title, check::non_empty);
            v.check(key("reference"), &c.reference, check::non_empty);
            if let Some(g) = &c.hold_grounds {
                v.check(key("hold_grounds"), g, check::non_empty);
            }
            if let Some(cap) = c.hold_cap {
                if !cap.covers(&c.keep) {
                    v.invalid(
                        key("hold_cap"),
                        format!("\"{cap}\" is shorter than keep = \"{}\"", c.keep),
                    );
                }
            }
        }
        if self.purpose.is_empty() {
            v.invalid("purpose", "no [[purpose]] is defined; a camera needs one");
        }
        if self.retention_class.is_empty() {
            v.invalid(
                "retention_class",
                "no [[retention_class]] is defined; a camera needs one",
            );
        }
        v.finish()?;

        Ok(Policy {
            id: self.policy.id,
            title: self.policy.title,
            reference: self.policy.reference,
            controller: self.controller,
            supervisory_authority: self.supervisory_authority,
            purposes: self
                .purpose
                .into_iter()
                .map(|p| Purpose {
                    id: p.id,
                    text: p.text,
                    text_en: p.text_en,
                    legal_basis: p.legal_basis,
                    reference: p.reference,
                    allowed_classes: p.classes.unwrap_or_default(),
                })
                .collect(),
            classes: self
                .retention_class
                .into_iter()
                .map(|c| RetentionClass {
                    id: c.id,
                    title: c.title,
                    keep: c.keep,
                    hold_cap: c.hold_cap,
                    hold_grounds: c.hold_grounds,
                    reference: c.reference,
                })
                .collect(),
        })
    }
}
