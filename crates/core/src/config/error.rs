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
//! Every kind is fatal for the file it names: the agent refuses to start (or
//! `check-config` fails) and nothing already running is changed.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

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
    let tree = match DeTable::parse(text) {
        Ok(tree) => tree,
        Err(e) => {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unzip();
            return Err(ConfigError::Syntax {
                file: file.to_owned(),
                line,
                column,
                message: e.message().to_owned(),
            });
        }
    };
    toml::from_str(text).map_err(|e| classify(&e, text, &tree, file))
}

fn classify(
    e: &toml::de::Error,
    text: &str,
    tree: &Spanned<DeTable<'_>>,
    file: &Path,
) -> ConfigError {
    let file = file.to_owned();
    let message = e.message();
    let span = e.span();
    let path = span.as_ref().and_then(|s| locate(tree, s.start));
    let line = span.as_ref().map(|s| line_col(text, s.start).0);

    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (name, tail) = rest.split_once('`').unwrap_or((rest, ""));
        let expected = match tail.split_once("expected ") {
            Some((_, exp)) => exp.to_owned(),
            None => "no keys here".to_owned(),
        };
        let key = match path {
            Some(p) if p == name || p.ends_with(&format!(".{name}")) => p,
            Some(p) => join(&p, name),
            None => name.to_owned(),
        };
        return ConfigError::UnknownKey {
            file,
            key,
            line,
            expected,
        };
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        let name = rest.split_once('`').map_or(rest, |(n, _)| n);
        let key = match path {
            Some(p) => join(&p, name),
            None => name.to_owned(),
        };
        return ConfigError::MissingKey { file, key };
    }
    match path.filter(|p| !p.is_empty()) {
        Some(key) => ConfigError::Invalid {
            file,
            key,
            reason: message.to_owned(),
        },
        None => {
            let (line, column) = span.map(|s| line_col(text, s.start)).unzip();
            ConfigError::Syntax {
                file,
                line,
                column,
                message: message.to_owned(),
            }
        }
    }
}

fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_owned()
    } else {
        format!("{parent}.{name}")
    }
}

/// The dotted path of the innermost key or value whose span contains `pos`
/// ("" for the document itself).
fn locate(tree: &Spanned<DeTable<'_>>, pos: usize) -> Option<String> {
    let mut path = String::new();
    if locate_table(tree.get_ref(), pos, &mut path) {
        Some(path)
    } else {
        Some(String::new())
    }
}

fn locate_table(table: &DeTable<'_>, pos: usize, path: &mut String) -> bool {
    for (key, value) in table.iter() {
        let in_key = key.span().contains(&pos);
        let in_value = value.span().contains(&pos);
        // Sub-tables and arrays of tables may have spans that do not cover
        // their own contents (a header is far from its keys), so descend
        // into containers regardless and keep the deepest match.
        let len = path.len();
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key.get_ref());
        if locate_value(value.get_ref(), pos, path) || in_key || in_value {
            return true;
        }
        path.truncate(len);
    }
    false
}

fn locate_value(value: &DeValue<'_>, pos: usize, path: &mut String) -> bool {
    match value {
        DeValue::Table(t) => locate_table(t, pos, path),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                if locate_value(item.get_ref(), pos, path) || item.span().contains(&pos) {
                    return true;
                }
                path.truncate(len);
            }
            false
        }
        _ => false,
    }
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
