//! Checks of single fields that several tables share (`[[camera]]`,
//! `[dock]`, `[hq]`): paths made absolute against the config's folder, and a
//! camera's purpose and retention class looked up in the policy. Each adds
//! its error to the [`Collector`] under the key it is given.

use std::path::{Path, PathBuf};

use super::check::{self, Collector};
use sargs_core::policy::{Policy, Purpose, RetentionClass};

/// A non-empty path, made absolute against `base` (no file-system access).
pub(super) fn resolve(base: &Path, value: &str) -> Result<PathBuf, String> {
    if value.trim().is_empty() {
        return Err("must not be empty".into());
    }
    let p = Path::new(value);
    Ok(if p.is_absolute() {
        p.to_owned()
    } else {
        base.join(p)
    })
}

/// Resolves a camera's purpose and retention class in the policy (only
/// checkable when the policy loaded); `key` names the camera's keys.
pub(super) fn purpose_and_class(
    v: &mut Collector<'_>,
    key: &dyn Fn(&str) -> String,
    purpose_id: &str,
    class_id: &str,
    policy: Option<&Policy>,
) -> (Option<Purpose>, Option<RetentionClass>) {
    let Some(policy) = policy else {
        return (None, None);
    };
    let purpose = policy.purpose(purpose_id).cloned();
    if purpose.is_none() {
        v.invalid(
            key("purpose"),
            format!(
                "unknown purpose {purpose_id:?}; the policy defines {}",
                check::quoted_list(policy.purpose_ids())
            ),
        );
    }
    let class = policy.class(class_id).cloned();
    if class.is_none() {
        v.invalid(
            key("class"),
            format!(
                "unknown retention class {class_id:?}; the policy defines {}",
                check::quoted_list(policy.class_ids())
            ),
        );
    }
    if let (Some(p), Some(c)) = (&purpose, &class) {
        if !p.allows_class(&c.id) {
            v.invalid(
                key("class"),
                format!(
                    "purpose {:?} may not use retention class {:?}; it allows {}",
                    p.id,
                    c.id,
                    check::quoted_list(p.allowed_classes.iter().map(String::as_str))
                ),
            );
        }
    }
    (purpose, class)
}
