//! Small value checks shared by the agent config and the policy file. Each
//! returns the reason a value is unacceptable, worded to follow "key: ".

use std::path::Path;

use super::ConfigError;

/// Identifiers (agent, camera, policy, purpose, class ids) become file-name
/// components and MQTT topic levels, so they are restricted to
/// `[A-Za-z0-9._-]`, 1 to 64 characters, and may not start with a dot
/// (which also rules out `.` and `..`).
pub fn id(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if value.chars().count() > 64 {
        return Err(format!("{value:?} is longer than 64 characters"));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "{value:?} contains {c:?}; use only letters A-Z a-z, digits, '.', '_' and '-'"
        ));
    }
    if value.starts_with('.') {
        return Err(format!("{value:?} must not start with '.'"));
    }
    Ok(())
}

/// A text that must say something.
pub fn non_empty(value: &str) -> Result<(), String> {
    if value.trim().is_empty() {
        Err("must not be empty".to_owned())
    } else {
        Ok(())
    }
}

/// Looks like `local@domain.tld`: one `@`, both sides non-empty, a dot in
/// the domain, no whitespace. Deliverability is not checked.
pub fn email(value: &str) -> Result<(), String> {
    let bad = || format!("{value:?} does not look like an e-mail address (name@example.lv)");
    if value.chars().any(char::is_whitespace) {
        return Err(bad());
    }
    let Some((local, domain)) = value.split_once('@') else {
        return Err(bad());
    };
    let domain_ok = !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..");
    if local.is_empty() || !domain_ok {
        return Err(bad());
    }
    Ok(())
}

/// A web address shown to the public: `https://` or `http://` and a host.
pub fn web_url(value: &str) -> Result<(), String> {
    let rest = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"));
    match rest {
        Some(r)
            if !r.is_empty() && !r.starts_with('/') && !value.chars().any(char::is_whitespace) =>
        {
            Ok(())
        }
        _ => Err(format!("{value:?} is not an http:// or https:// address")),
    }
}

/// A phone number as printed: digits, spaces, `+`, `-`, `(`, `)`; at least
/// three digits.
pub fn phone(value: &str) -> Result<(), String> {
    let ok_chars = value
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '+' | '-' | '(' | ')'));
    let digits = value.chars().filter(char::is_ascii_digit).count();
    if ok_chars && digits >= 3 {
        Ok(())
    } else {
        Err(format!(
            "{value:?} is not a phone number (digits, spaces, '+', '-')"
        ))
    }
}

/// Collects validation errors for one file, so a user sees every problem
/// at once.
pub struct Collector<'a> {
    file: &'a Path,
    errors: Vec<ConfigError>,
}

impl<'a> Collector<'a> {
    pub fn new(file: &'a Path) -> Self {
        Collector {
            file,
            errors: Vec::new(),
        }
    }

    /// Records `key: reason`.
    pub fn invalid(&mut self, key: impl Into<String>, reason: impl Into<String>) {
        self.errors.push(ConfigError::Invalid {
            file: self.file.to_owned(),
            key: key.into(),
            reason: reason.into(),
        });
    }

    /// Records an error found elsewhere (e.g. in the policy file), keeping
    /// the list flat.
    pub fn push(&mut self, error: ConfigError) {
        match error {
            ConfigError::Many(all) => self.errors.extend(all),
            one => self.errors.push(one),
        }
    }

    /// Records that a required key is absent.
    pub fn missing(&mut self, key: impl Into<String>) {
        self.errors.push(ConfigError::MissingKey {
            file: self.file.to_owned(),
            key: key.into(),
        });
    }

    /// Runs `f` on `value` and records its complaint under `key`.
    pub fn check(
        &mut self,
        key: impl Into<String>,
        value: &str,
        f: fn(&str) -> Result<(), String>,
    ) {
        if let Err(reason) = f(value) {
            self.invalid(key, reason);
        }
    }

    /// Records the error of `result` under `key`, passing its value on.
    pub fn ok<T>(&mut self, key: impl Into<String>, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(reason) => {
                self.invalid(key, reason);
                None
            }
        }
    }

    /// `Ok` if nothing was recorded; one error as itself; several as `Many`.
    pub fn finish(self) -> Result<(), ConfigError> {
        ConfigError::from_list(self.errors)
    }
}

/// `"a", "b", "c"` for listing the valid choices in a message.
pub fn quoted_list<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    items
        .into_iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(id("gw-jekabpils-01").is_ok());
        assert!(id("cam_1.a").is_ok());
        assert!(id(&"a".repeat(64)).is_ok());
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "a b",
            "kā",
            "a+b",
            &"a".repeat(65),
        ] {
            assert!(id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn emails() {
        assert!(email("pasts@jekabpils.lv").is_ok());
        for bad in [
            "",
            "pasts",
            "@jekabpils.lv",
            "a@b",
            "a@@b.lv",
            "a b@c.lv",
            "a@.lv",
            "a@b.lv.",
        ] {
            assert!(email(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn urls_and_phones() {
        assert!(web_url("https://www.jekabpils.lv/lv/datu-aizsardziba").is_ok());
        assert!(web_url("ftp://x").is_err());
        assert!(web_url("https://").is_err());
        assert!(phone("65236777").is_ok());
        assert!(phone("+371 67 22 31 31").is_ok());
        assert!(phone("call us").is_err());
    }
}
