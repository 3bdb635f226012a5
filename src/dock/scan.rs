//! What is on a docked camera: its recordings (files with a configured
//! extension, in any subdirectory, in path order; hidden entries and
//! symbolic links are not followed) and the clock it states, if any.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use chrono::{DateTime, Utc};

use crate::config::DockSettings;

/// A recording on a docked camera.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Path relative to the camera's storage, `/`-separated.
    pub name: String,
    pub path: PathBuf,
    pub len: u64,
    pub modified: Option<SystemTime>,
}

/// The recordings under `dir`, sorted by name.
pub fn recordings(dir: &Path, settings: &DockSettings) -> std::io::Result<Vec<Candidate>> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_owned(), String::new())];
    while let Some((d, prefix)) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let ty = entry.file_type()?;
            let rel = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}/{name}")
            };
            if ty.is_dir() {
                stack.push((entry.path(), rel));
            } else if ty.is_file() && is_recording(&name, settings) {
                let meta = entry.metadata()?;
                out.push(Candidate {
                    name: rel,
                    path: entry.path(),
                    len: meta.len(),
                    modified: meta.modified().ok(),
                });
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn is_recording(name: &str, settings: &DockSettings) -> bool {
    name.rsplit_once('.').is_some_and(|(stem, ext)| {
        !stem.is_empty()
            && settings
                .extensions
                .iter()
                .any(|e| e.eq_ignore_ascii_case(ext))
    })
}

/// The camera's clock offset (camera minus gateway, milliseconds) from its
/// clock file: one RFC 3339 instant, the camera's time when it wrote the
/// file on being docked. `Ok(None)` when there is no such file.
pub fn clock_offset(
    dir: &Path,
    settings: &DockSettings,
    now: DateTime<Utc>,
) -> Result<Option<i64>, String> {
    let path = dir.join(&settings.clock_file);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let stated = DateTime::parse_from_rfc3339(text.trim()).map_err(|e| {
        format!(
            "{}: {:?} is not an RFC 3339 time ({e})",
            path.display(),
            text.trim()
        )
    })?;
    Ok(Some((stated.with_timezone(&Utc) - now).num_milliseconds()))
}
