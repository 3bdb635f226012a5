//! `[dock]` and `[[dock.camera]]`: body cameras offloaded at this gateway.
//!
//! Rules kept here: dock paths are absolute after resolution; every body
//! camera has a unique serial (its directory name in a dock path, so it may
//! not contain `/` or be `.`/`..`), a camera id unique across all cameras, an
//! officer identifier, and a purpose and class from the policy — the
//! camera's own or the `[dock]` defaults (class `municipal-police` unless
//! told otherwise: body cameras are police equipment).

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use super::check::{self, Collector};
use super::fields::{purpose_and_class, resolve};
use super::raw::RawDock;
use super::{BodyCamera, CameraConfig, CameraKind, DockSettings, SourceConfig};
use sargs_core::policy::Policy;

/// The retention class of body cameras unless `[dock] class` says otherwise.
pub const DEFAULT_CLASS: &str = "municipal-police";
/// Recording file extensions looked for on a docked camera by default.
pub const DEFAULT_EXTENSIONS: [&str; 8] = ["mp4", "mov", "m4v", "mkv", "avi", "ts", "mts", "3gp"];
/// The file a docked camera may state its clock in, by default.
pub const DEFAULT_CLOCK_FILE: &str = "CLOCK.TXT";
const DEFAULT_SCAN_S: u64 = 5;
const SCAN_S: std::ops::RangeInclusive<u64> = 1..=3600;
const WORKERS: std::ops::RangeInclusive<u64> = 1..=256;

/// Validates `[dock]`. `taken` says which `[[camera]]` already uses an id.
pub(super) fn dock(
    v: &mut Collector<'_>,
    raw: &RawDock,
    base: &Path,
    policy: Option<&Policy>,
    segment: Duration,
    taken: &dyn Fn(&str) -> Option<String>,
    store: bool,
) -> DockSettings {
    let mut paths = Vec::with_capacity(raw.paths.len());
    for (i, p) in raw.paths.iter().enumerate() {
        if let Some(p) = v.ok(format!("dock.paths[{i}]"), resolve(base, p)) {
            if paths.contains(&p) {
                v.invalid(format!("dock.paths[{i}]"), "the same path is listed twice");
            } else {
                paths.push(p);
            }
        }
    }
    let scan = raw.scan_interval_s.unwrap_or(DEFAULT_SCAN_S);
    if !SCAN_S.contains(&scan) {
        v.invalid(
            "dock.scan_interval_s",
            format!("{scan} is out of range 1..=3600 (seconds)"),
        );
    }
    if let Some(w) = raw.workers.filter(|w| !WORKERS.contains(w)) {
        v.invalid(
            "dock.workers",
            format!("{w} is out of range 1..=256 (docked cameras ingested at once; leave it out to follow the cores)"),
        );
    }
    let extensions = match &raw.extensions {
        None => DEFAULT_EXTENSIONS.iter().map(|e| (*e).to_owned()).collect(),
        Some(list) => extensions(v, list),
    };
    let clock_file = raw
        .clock_file
        .clone()
        .unwrap_or_else(|| DEFAULT_CLOCK_FILE.to_owned());
    v.check("dock.clock_file", &clock_file, file_name);

    let mut serials: HashMap<&str, usize> = HashMap::new();
    let mut ids: HashMap<&str, usize> = HashMap::new();
    let mut cameras = Vec::with_capacity(raw.camera.len());
    for (i, cam) in raw.camera.iter().enumerate() {
        let key = |k: &str| format!("dock.camera[{i}].{k}");
        v.check(key("serial"), &cam.serial, file_name);
        if let Some(first) = serials.insert(&cam.serial, i) {
            v.invalid(
                key("serial"),
                format!(
                    "serial {:?} is already used by dock.camera[{first}]",
                    cam.serial
                ),
            );
        }
        v.check(key("id"), &cam.id, check::id);
        if let Some(other) = taken(&cam.id) {
            v.invalid(
                key("id"),
                format!("camera id {:?} is already used by {other}", cam.id),
            );
        } else if let Some(first) = ids.insert(&cam.id, i) {
            v.invalid(
                key("id"),
                format!(
                    "camera id {:?} is already used by dock.camera[{first}]",
                    cam.id
                ),
            );
        }
        v.check(key("officer"), &cam.officer, officer);
        let Some(purpose_id) = cam.purpose.as_ref().or(raw.purpose.as_ref()) else {
            v.invalid(
                key("purpose"),
                "no purpose: set it here or as dock.purpose for every body camera",
            );
            continue;
        };
        let class_id = cam
            .class
            .as_deref()
            .or(raw.class.as_deref())
            .unwrap_or(DEFAULT_CLASS);
        // A default from [dock] is reported under the key that set it.
        let keyed = |k: &str| match (k, &cam.purpose, &cam.class) {
            ("purpose", None, _) | ("class", _, None) => format!("dock.{k} (for dock.camera[{i}])"),
            _ => key(k),
        };
        let (purpose, class) = purpose_and_class(v, &keyed, purpose_id, class_id, policy);
        let offload = super::offload::mode(v, &key("offload"), cam.offload.as_deref(), store);
        if let (Some(purpose), Some(class)) = (purpose, class) {
            cameras.push(BodyCamera {
                serial: cam.serial.clone(),
                officer: cam.officer.clone(),
                camera: CameraConfig {
                    id: cam.id.clone(),
                    kind: CameraKind::Body,
                    purpose,
                    class,
                    enabled: true,
                    segment,
                    masks: Vec::new(),
                    offload,
                    source: SourceConfig::Dock {
                        serial: cam.serial.clone(),
                    },
                },
            });
        }
    }
    DockSettings {
        paths,
        keep_originals: raw.keep_originals.unwrap_or(false),
        scan_interval: Duration::from_secs(scan),
        workers: raw.workers.and_then(|w| usize::try_from(w).ok()),
        extensions,
        clock_file,
        cameras,
    }
}

fn extensions(v: &mut Collector<'_>, list: &[String]) -> Vec<String> {
    if list.is_empty() {
        v.invalid(
            "dock.extensions",
            "must list at least one extension: nothing would be ingested",
        );
    }
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for (i, e) in list.iter().enumerate() {
        let e = e.trim_start_matches('.').to_ascii_lowercase();
        if e.is_empty() || !e.chars().all(|c| c.is_ascii_alphanumeric()) {
            v.invalid(
                format!("dock.extensions[{i}]"),
                format!("{e:?} is not a file extension like \"mp4\""),
            );
        } else if !out.contains(&e) {
            out.push(e);
        }
    }
    out
}

/// A single file-name component: a serial is a directory name in a dock path.
fn file_name(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if value.chars().count() > 64 {
        return Err(format!("{value:?} is longer than 64 characters"));
    }
    if value == "." || value == ".." || value.contains('/') || value.chars().any(char::is_control) {
        return Err(format!("{value:?} is not a single file or directory name"));
    }
    Ok(())
}

/// An officer identifier: printable, at most 64 characters. It goes into
/// manifests and events, so it must be an identifier, not a person's name.
fn officer(value: &str) -> Result<(), String> {
    if value.trim().is_empty() {
        return Err("must not be empty".to_owned());
    }
    if value.chars().count() > 64 || value.chars().any(char::is_control) {
        return Err(format!(
            "{value:?} is not an officer identifier (printable, at most 64 characters)"
        ));
    }
    Ok(())
}
