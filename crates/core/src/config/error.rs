//! Configuration errors: every one names the file, the key and the reason.
//!
//! Keys are dotted paths as a user reads them in the file: `agent.id`,
//! `seal.recipients[1]`, `camera[0].source.url` (array elements counted from
//! 0 in file order). TOML decoding errors are mapped onto the same kinds:
//! an unknown key becomes [`ConfigError::UnknownKey`], a missing one
//! [`ConfigError::MissingKey`], a value of the wrong type or an unknown enum
//! name [`ConfigError::Invalid`], and anything the TOML parser itself rejects
//! [`ConfigError::Syntax`].
//!
//! [`decode`] deserializes through `serde_path_to_error`, which records the
//! path to the value being decoded when an error happens; the key is that
//! path, and the line and column come from the span `toml` puts on its error.
//! Only the *kind* of a decoding error is not structured: serde's derive
//! reports an unknown or a missing field through `de::Error::unknown_field` /
//! `missing_field`, whose default bodies (`toml::de::Error` does not override
//! them) keep nothing but the message text, "unknown field `name`, expected
//! …" or "missing field `name`". `field_error` is the one place that reads
//! those two prefixes.
//!
//! Every kind is fatal for the file it names: the agent refuses to start (or
//! `check-config` fails) and nothing already running is changed.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// A configuration or policy file that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read the file: {source}", file.display())]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("{}{}: {message}", file.display(), Position(*line, *column))]
    Syntax {
        file: PathBuf,
        /// 1-based line, if known.
        line: Option<usize>,
        /// 1-based column (in characters), if known.
        column: Option<usize>,
        message: String,
    },
    /// A key the format does not define (often a typo).
    #[error("{}{}: {key}: unknown key; expected {expected}", file.display(), Position(*line, None))]
    UnknownKey {
        file: PathBuf,
        /// Full dotted path of the unknown key.
        key: String,
        /// 1-based line of the key, if known.
        line: Option<usize>,
        /// The keys allowed at that place, e.g. "one of `id`, `kind`".
        expected: String,
    },
    /// A required key is absent.
    #[error("{}: {key}: required key is missing", file.display())]
    MissingKey { file: PathBuf, key: String },
    /// A key is present but its value is not acceptable.
    #[error("{}: {key}: {reason}", file.display())]
    Invalid {
        file: PathBuf,
        key: String,
        reason: String,
    },
    /// Several independent problems, in file order.
    #[error("{}", ManyDisplay(.0))]
    Many(Vec<ConfigError>),
}

impl ConfigError {
    /// The file the error is about (for `Many`, the first error's file).
    pub fn file(&self) -> Option<&Path> {
        match self {
            ConfigError::Read { file, .. }
            | ConfigError::Syntax { file, .. }
            | ConfigError::UnknownKey { file, .. }
            | ConfigError::MissingKey { file, .. }
            | ConfigError::Invalid { file, .. } => Some(file),
            ConfigError::Many(all) => all.first().and_then(ConfigError::file),
        }
    }

    /// The key the error is about, if it names one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::UnknownKey { key, .. }
            | ConfigError::MissingKey { key, .. }
            | ConfigError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }

    /// Every single error, with `Many` flattened.
    pub fn flatten(&self) -> Vec<&ConfigError> {
        match self {
            ConfigError::Many(all) => all.iter().flat_map(ConfigError::flatten).collect(),
            one => vec![one],
        }
    }

    /// One error as itself, several as `Many`; `Ok` when there are none.
    pub fn from_list(mut errors: Vec<ConfigError>) -> Result<(), ConfigError> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(ConfigError::Many(errors)),
        }
    }
}

struct Position(Option<usize>, Option<usize>);

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0, self.1) {
            (Some(l), Some(c)) => write!(f, ":{l}:{c}"),
            (Some(l), None) => write!(f, ":{l}"),
            _ => Ok(()),
        }
    }
}

struct ManyDisplay<'a>(&'a [ConfigError]);

impl fmt::Display for ManyDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} problems:", self.0.len())?;
        for e in self.0 {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

/// Reads a file, naming it on failure.
pub fn read_file(file: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
        file: file.to_owned(),
        source,
    })
}

/// Decodes `text` into the raw layer `T`, mapping TOML errors onto
/// [`ConfigError`] kinds with the dotted key path and line.
pub fn decode<T: DeserializeOwned>(text: &str, file: &Path) -> Result<T, ConfigError> {
    let de = toml::Deserializer::parse(text).map_err(|e| syntax(&e, text, file))?;
    serde_path_to_error::deserialize(de).map_err(|e| classify(&e, text, file))
}

/// A TOML error that names no key, at its line and column if known.
fn syntax(e: &toml::de::Error, text: &str, file: &Path) -> ConfigError {
    let (line, column) = e.span().map(|s| line_col(text, s.start)).unzip();
    ConfigError::Syntax {
        file: file.to_owned(),
        line,
        column,
        message: e.message().to_owned(),
    }
}

fn classify(
    e: &serde_path_to_error::Error<toml::de::Error>,
    text: &str,
    file: &Path,
) -> ConfigError {
    let path = key_path(e.path());
    let inner = e.inner();
    let message = inner.message();
    match field_error(message) {
        // The path normally ends at the unknown key itself (it is read before
        // it is refused).
        Some(FieldError::Unknown { name, expected }) => ConfigError::UnknownKey {
            file: file.to_owned(),
            key: if path == name || path.ends_with(&format!(".{name}")) {
                path
            } else {
                join(&path, name)
            },
            line: inner.span().map(|s| line_col(text, s.start).0),
            expected: expected.unwrap_or("no keys here").to_owned(),
        },
        // The path ends at the table the key is missing from.
        Some(FieldError::Missing { name }) => ConfigError::MissingKey {
            file: file.to_owned(),
            key: join(&path, name),
        },
        None if path.is_empty() => syntax(inner, text, file),
        None => ConfigError::Invalid {
            file: file.to_owned(),
            key: path,
            reason: message.to_owned(),
        },
    }
}

/// Dotted key path with array indexes (`camera[1].source.url`); "" for the
/// document itself.
fn key_path(path: &serde_path_to_error::Path) -> String {
    if path.iter().len() == 0 {
        String::new()
    } else {
        path.to_string()
    }
}

fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_owned()
    } else {
        format!("{parent}.{name}")
    }
}

/// A decoding error about a field rather than a value.
#[derive(Debug, PartialEq, Eq)]
enum FieldError<'a> {
    /// "unknown field `name`, expected …" (`None` when serde says there are
    /// no fields).
    Unknown {
        name: &'a str,
        expected: Option<&'a str>,
    },
    /// "missing field `name`".
    Missing { name: &'a str },
}

/// Which field error serde's message states, if any (see the module doc for
/// why this reads text).
fn field_error(message: &str) -> Option<FieldError<'_>> {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (name, tail) = rest.split_once('`').unwrap_or((rest, ""));
        let expected = tail.split_once("expected ").map(|(_, exp)| exp);
        return Some(FieldError::Unknown { name, expected });
    }
    let rest = message.strip_prefix("missing field `")?;
    let name = rest.split_once('`').map_or(rest, |(name, _)| name);
    Some(FieldError::Missing { name })
}

/// 1-based line and column (in characters) of byte offset `pos`.
pub fn line_col(text: &str, pos: usize) -> (usize, usize) {
    let pos = pos.min(text.len());
    let before = text.get(..pos).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}
