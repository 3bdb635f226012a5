//! Raw → validated: defaults, ranges, cross-references to the policy.
//! Problems are collected so one run of `check-config` shows all of them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::check::{self, Collector};
use super::fields::{purpose_and_class, resolve};
use super::raw::{RawCamera, RawConfig, RawHq, RawRetention, RawSupervision};
use super::{
    source, AgentConfig, CameraConfig, Config, ConfigError, RetentionSettings, Supervision,
};
use sargs_core::policy::Policy;
use sargs_core::seal::Recipient;

/// Segment length bounds, seconds.
pub(super) const SEGMENT_SECONDS: std::ops::RangeInclusive<u32> = 2..=600;
const DEFAULT_SEGMENT_SECONDS: u32 = 60;
/// Default free-space floor of the data directory, in MiB.
const DEFAULT_MIN_FREE_MB: u64 = 256;
/// How long a write or fsync may take before it is a stall, seconds.
const DISK_STALL_S: std::ops::RangeInclusive<u64> = 1..=300;
const DEFAULT_DISK_STALL_S: u64 = 5;
/// Back-off bounds, milliseconds.
const BACKOFF_MIN_MS: u64 = 100;
const BACKOFF_MAX_MS: u64 = 86_400_000;

pub(super) fn build(raw: RawConfig, file: &Path) -> Result<Config, ConfigError> {
    let base = base_dir(file);
    let mut v = Collector::new(file);

    // [agent]
    let a = &raw.agent;
    v.check("agent.id", &a.id, check::id);
    let data_dir = v.ok("agent.data_dir", resolve(&base, &a.data_dir));
    let policy_file = v.ok("agent.policy", resolve(&base, &a.policy));
    let signing_key = match &a.signing_key {
        Some(k) => v.ok("agent.signing_key", resolve(&base, k)),
        None => data_dir
            .as_ref()
            .map(|d| d.join("device").join("signing.pk8")),
    };
    let segment = segment(&mut v, "agent.segment_seconds", a.segment_seconds)
        .unwrap_or(Duration::from_secs(u64::from(DEFAULT_SEGMENT_SECONDS)));
    let min_free_mb = a.min_free_mb.unwrap_or(DEFAULT_MIN_FREE_MB);
    if min_free_mb == 0 {
        v.invalid(
            "agent.min_free_mb",
            "must be at least 1: a segment is closed cleanly before the disk is full, never after",
        );
    }

    let disk_stall_s = a.disk_stall_s.unwrap_or(DEFAULT_DISK_STALL_S);
    if !DISK_STALL_S.contains(&disk_stall_s) {
        v.invalid(
            "agent.disk_stall_s",
            format!(
                "{disk_stall_s} is out of range; a write may take {} to {} seconds before it is reported as a stall",
                DISK_STALL_S.start(),
                DISK_STALL_S.end()
            ),
        );
    }

    // [seal]
    let recipients = recipients(&mut v, &raw.seal.recipients);

    // [supervision]
    let supervision = supervision(&mut v, raw.supervision.as_ref());

    // [retention], [hq]
    let retention = retention(
        &mut v,
        raw.retention.as_ref(),
        min_free_mb.saturating_mul(1 << 20),
    );
    let command_keys = command_keys(&mut v, raw.hq.as_ref());
    let link = raw
        .hq
        .as_ref()
        .and_then(|hq| super::link::link(&mut v, hq, &base));
    let offload = raw
        .offload
        .as_ref()
        .and_then(|o| super::offload::offload(&mut v, o, &base));
    let store = raw.offload.is_some();

    // The policy file: its own errors name it.
    let policy = match &policy_file {
        Some(p) => match Policy::load(p) {
            Ok(policy) => Some(Arc::new(policy)),
            Err(e) => {
                v.push(e);
                None
            }
        },
        None => None,
    };

    // [[camera]]
    let body_cameras = raw.dock.as_ref().map_or(0, |d| d.camera.len());
    if raw.camera.is_empty() && body_cameras == 0 {
        v.invalid(
            "camera",
            "no [[camera]] and no [[dock.camera]] is configured: nothing to record or ingest",
        );
    }
    let mut cameras = Vec::with_capacity(raw.camera.len());
    let mut ids: HashMap<&str, usize> = HashMap::new();
    for (i, cam) in raw.camera.iter().enumerate() {
        if let Some(&first) = ids.get(cam.id.as_str()) {
            v.invalid(
                format!("camera[{i}].id"),
                format!("camera id {:?} is already used by camera[{first}]", cam.id),
            );
        } else {
            ids.insert(&cam.id, i);
        }
        if let Some(c) = camera(&mut v, i, cam, &base, policy.as_deref(), segment, store) {
            cameras.push(c);
        }
    }
    let dock = raw.dock.as_ref().map(|d| {
        let taken = |id: &str| ids.get(id).map(|i| format!("camera[{i}]"));
        super::dock::dock(&mut v, d, &base, policy.as_deref(), segment, &taken, store)
    });

    v.finish()?;
    match (data_dir, policy_file, signing_key, policy) {
        (Some(data_dir), Some(policy_file), Some(signing_key), Some(policy)) => Ok(Config {
            file: file.to_owned(),
            agent: AgentConfig {
                id: raw.agent.id,
                data_dir,
                policy_file,
                signing_key,
                segment,
                min_free_bytes: min_free_mb.saturating_mul(1 << 20),
                disk_stall: Duration::from_secs(disk_stall_s),
            },
            recipients,
            supervision,
            retention,
            command_keys,
            link,
            cameras,
            dock,
            offload,
            policy,
        }),
        // Every `None` above recorded an error, so `finish` returned it.
        _ => Err(ConfigError::Invalid {
            file: file.to_owned(),
            key: "agent".into(),
            reason: "incomplete after validation (internal error)".into(),
        }),
    }
}

/// The directory relative paths resolve against: the config file's own.
fn base_dir(file: &Path) -> PathBuf {
    let dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    std::path::absolute(&dir).unwrap_or(dir)
}

pub(super) fn segment(v: &mut Collector<'_>, key: &str, seconds: Option<u32>) -> Option<Duration> {
    let s = seconds?;
    if SEGMENT_SECONDS.contains(&s) {
        Some(Duration::from_secs(u64::from(s)))
    } else {
        v.invalid(
            key,
            format!(
                "{s} is out of range; a segment is {} to {} seconds long",
                SEGMENT_SECONDS.start(),
                SEGMENT_SECONDS.end()
            ),
        );
        None
    }
}

fn recipients(v: &mut Collector<'_>, raw: &[String]) -> Vec<Recipient> {
    if raw.is_empty() {
        v.invalid(
            "seal.recipients",
            "at least one age recipient (age1…) is needed: segments are sealed to HQ's key",
        );
    }
    let mut out: Vec<Recipient> = Vec::with_capacity(raw.len());
    for (i, text) in raw.iter().enumerate() {
        match text.parse::<Recipient>() {
            Ok(r) => {
                if let Some(first) = out.iter().position(|o| o == &r) {
                    v.invalid(
                        format!("seal.recipients[{i}]"),
                        format!("the same recipient as seal.recipients[{first}]"),
                    );
                } else {
                    out.push(r);
                }
            }
            Err(e) => v.invalid(
                format!("seal.recipients[{i}]"),
                format!("not an age X25519 recipient: {e}"),
            ),
        }
    }
    out
}

fn supervision(v: &mut Collector<'_>, raw: Option<&RawSupervision>) -> Supervision {
    let default = Supervision::default();
    let Some(raw) = raw else { return default };
    let mut ms = |key: &str, value: Option<u64>, fallback: Duration| -> u64 {
        let fallback = u64::try_from(fallback.as_millis()).unwrap_or(u64::MAX);
        match value {
            None => fallback,
            Some(n) if (BACKOFF_MIN_MS..=BACKOFF_MAX_MS).contains(&n) => n,
            Some(n) => {
                v.invalid(
                    format!("supervision.{key}"),
                    format!(
                        "{n} is out of range {BACKOFF_MIN_MS}..={BACKOFF_MAX_MS} (milliseconds)"
                    ),
                );
                fallback
            }
        }
    };
    let initial = ms(
        "backoff_initial_ms",
        raw.backoff_initial_ms,
        default.backoff_initial,
    );
    let max = ms("backoff_max_ms", raw.backoff_max_ms, default.backoff_max);
    if max < initial {
        v.invalid(
            "supervision.backoff_max_ms",
            format!("{max} is less than backoff_initial_ms = {initial}"),
        );
    }
    Supervision {
        backoff_initial: Duration::from_millis(initial),
        backoff_max: Duration::from_millis(max.max(initial)),
    }
}

fn retention(
    v: &mut Collector<'_>,
    raw: Option<&RawRetention>,
    min_free_bytes: u64,
) -> RetentionSettings {
    let default = RetentionSettings {
        free_space_floor_bytes: RetentionSettings::default()
            .free_space_floor_bytes
            .max(min_free_bytes),
        ..RetentionSettings::default()
    };
    let Some(raw) = raw else { return default };
    let mut out = default;
    let mut seconds = |key: &str, s: Option<u64>, max: u64| {
        let s = s?;
        if (1..=max).contains(&s) {
            Some(Duration::from_secs(s))
        } else {
            v.invalid(key, format!("{s} is out of range 1..={max} (seconds)"));
            None
        }
    };
    if let Some(d) = seconds("retention.sweep_interval_s", raw.sweep_interval_s, 3600) {
        out.sweep_interval = d;
    }
    if let Some(d) = seconds("retention.clock_jump_s", raw.clock_jump_s, 86_400) {
        out.clock_jump = d;
    }
    out.clock_settle = seconds("retention.clock_settle_s", raw.clock_settle_s, 86_400)
        .unwrap_or(out.sweep_interval.max(Duration::from_secs(60)));
    if let Some(mb) = raw.free_space_floor_mb {
        let bytes = mb.saturating_mul(1 << 20);
        if bytes < min_free_bytes {
            v.invalid(
                "retention.free_space_floor_mb",
                format!(
                    "{mb} is below agent.min_free_mb ({}): space must be freed before recording has to stop",
                    min_free_bytes >> 20
                ),
            );
        } else {
            out.free_space_floor_bytes = bytes;
        }
    }
    if let Some(t) = raw.trust_unsynchronised_clock {
        out.trust_unsynchronised_clock = t;
    }
    out
}

fn command_keys(v: &mut Collector<'_>, raw: Option<&RawHq>) -> Vec<[u8; 32]> {
    use base64::Engine;
    let Some(raw) = raw else { return Vec::new() };
    if raw.broker.is_some() && raw.command_keys.is_empty() {
        v.invalid(
            "hq.command_keys",
            "a broker is configured but no HQ command key: every command would be refused",
        );
    }
    let mut keys = Vec::new();
    for (i, k) in raw.command_keys.iter().enumerate() {
        match base64::engine::general_purpose::STANDARD
            .decode(k.trim())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
        {
            Some(key) => keys.push(key),
            None => v.invalid(
                format!("hq.command_keys[{i}]"),
                format!(
                    "{k:?} is not a Base64 Ed25519 public key (as printed by `sargsctl keygen`)"
                ),
            ),
        }
    }
    keys
}

fn camera(
    v: &mut Collector<'_>,
    i: usize,
    raw: &RawCamera,
    base: &Path,
    policy: Option<&Policy>,
    default_segment: Duration,
    store: bool,
) -> Option<CameraConfig> {
    let key = |k: &str| format!("camera[{i}].{k}");
    v.check(key("id"), &raw.id, check::id);
    let segment = match raw.segment_seconds {
        Some(_) => segment(v, &key("segment_seconds"), raw.segment_seconds),
        None => Some(default_segment),
    };

    let (purpose, class) = purpose_and_class(v, &key, &raw.purpose, &raw.class, policy);

    let offload = super::offload::mode(v, &key("offload"), raw.offload.as_deref(), store);
    let (source, masks) = source::build(v, &format!("camera[{i}]"), &raw.source, &raw.masks, base)?;
    Some(CameraConfig {
        id: raw.id.clone(),
        kind: raw.kind,
        purpose: purpose?,
        class: class?,
        enabled: raw.enabled.unwrap_or(true),
        segment: segment?,
        masks,
        offload,
        source,
    })
}
