//! `[camera.source]` and `masks`: per-type keys, video parameters, RTSP URL
//! checks (without a URL crate) and privacy-mask geometry.
//!
//! Rule kept here: a mask is only accepted where the agent decodes the
//! frame it would be burnt into, and only if it lies wholly inside that
//! frame. A passthrough RTSP stream is never decoded, so masks on it are an
//! error (the user is told to set `transcode = true`) — a mask that would
//! silently not be applied is worse than none.

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use super::check::{quoted_list, Collector};
use super::fields::resolve;
use super::raw::{RawMask, RawSource, SourceType};
use super::{MaskRect, SourceConfig, VideoParams};

/// `videotestsrc` pattern nicks (GStreamer 1.22).
pub(super) const TEST_PATTERNS: [&str; 26] = [
    "smpte",
    "snow",
    "black",
    "white",
    "red",
    "green",
    "blue",
    "checkers-1",
    "checkers-2",
    "checkers-4",
    "checkers-8",
    "circular",
    "blink",
    "smpte75",
    "zone-plate",
    "gamut",
    "chroma-zone-plate",
    "solid-color",
    "ball",
    "smpte100",
    "bar",
    "pinwheel",
    "spokes",
    "gradient",
    "colors",
    "smpte-rp-219",
];

const WIDTH: RangeInclusive<u32> = 16..=7680;
const HEIGHT: RangeInclusive<u32> = 16..=4320;
const FPS: RangeInclusive<u32> = 1..=120;
const BITRATE_KBPS: RangeInclusive<u32> = 100..=50_000;
const LATENCY_MS: RangeInclusive<u32> = 0..=10_000;
const MAX_MASKS: usize = 64;
const DEFAULT_LATENCY_MS: u32 = 200;
const DEFAULT_V4L2_DEVICE: &str = "/dev/video0";
const VIDEO_KEYS: [&str; 4] = ["width", "height", "fps", "bitrate_kbps"];

/// Validates one camera's source and masks; `camera` is the key prefix
/// (`camera[0]`). `None` when something was wrong (and recorded).
pub(super) fn build(
    v: &mut Collector<'_>,
    camera: &str,
    raw: &RawSource,
    masks: &[RawMask],
    base: &Path,
) -> Option<(SourceConfig, Vec<MaskRect>)> {
    let key = |k: &str| format!("{camera}.source.{k}");
    let ty = raw.kind;

    // Keys that belong to another source type.
    let own: &[&str] = match ty {
        SourceType::Test => &["pattern"],
        SourceType::V4l2 => &["device"],
        SourceType::File => &["path"],
        SourceType::Rtsp => &["url", "transport", "latency_ms", "transcode"],
    };
    let mut stray = false;
    for k in raw.set_keys() {
        if !own.contains(&k) && !VIDEO_KEYS.contains(&k) {
            stray = true;
            v.invalid(
                key(k),
                format!(
                    "not used by type = \"{}\" (it belongs to {})",
                    ty.as_str(),
                    owner_of(k)
                ),
            );
        }
    }

    let source = match ty {
        SourceType::Test => {
            let pattern = raw.pattern.clone().unwrap_or_else(|| "smpte".into());
            if !TEST_PATTERNS.contains(&pattern.as_str()) {
                v.invalid(
                    key("pattern"),
                    format!(
                        "unknown pattern {pattern:?}; expected one of {}",
                        quoted_list(TEST_PATTERNS)
                    ),
                );
            }
            video(v, camera, raw, false).map(|video| SourceConfig::Test { pattern, video })
        }
        SourceType::V4l2 => {
            let device = raw.device.as_deref().unwrap_or(DEFAULT_V4L2_DEVICE);
            let ok = Path::new(device).is_absolute();
            if !ok {
                v.invalid(
                    key("device"),
                    format!("{device:?} is not an absolute device path like \"/dev/video0\""),
                );
            }
            let video = video(v, camera, raw, false);
            video.filter(|_| ok).map(|video| SourceConfig::V4l2 {
                device: PathBuf::from(device),
                video,
            })
        }
        SourceType::File => {
            let path = match raw.path.as_deref() {
                Some(p) => v.ok(key("path"), resolve(base, p)),
                None => {
                    v.missing(key("path"));
                    None
                }
            };
            let video = video(v, camera, raw, false);
            path.zip(video)
                .map(|(path, video)| SourceConfig::File { path, video })
        }
        SourceType::Rtsp => rtsp(v, camera, raw, !masks.is_empty()),
    };
    let source = source.filter(|_| !stray)?;

    // Masks, checked against the frame they are burnt into.
    let mask_key = format!("{camera}.masks");
    let Some(frame) = source.video().copied() else {
        if !masks.is_empty() {
            v.invalid(
                mask_key,
                "privacy masks need the video decoded, but this RTSP source is recorded as the \
                 camera sends it; set `transcode = true` in [camera.source] (with width and height)",
            );
            return None;
        }
        return Some((source, Vec::new()));
    };
    if masks.len() > MAX_MASKS {
        v.invalid(
            &mask_key,
            format!(
                "{} masks given; at most {MAX_MASKS} are allowed",
                masks.len()
            ),
        );
        return None;
    }
    let mut out = Vec::with_capacity(masks.len());
    for (i, m) in masks.iter().enumerate() {
        match mask(m, &frame) {
            Ok(r) => out.push(r),
            Err(reason) => v.invalid(format!("{mask_key}[{i}]"), reason),
        }
    }
    (out.len() == masks.len()).then_some((source, out))
}

fn owner_of(key: &str) -> &'static str {
    match key {
        "pattern" => "type = \"test\"",
        "device" => "type = \"v4l2\"",
        "path" => "type = \"file\"",
        _ => "type = \"rtsp\"",
    }
}

fn rtsp(
    v: &mut Collector<'_>,
    camera: &str,
    raw: &RawSource,
    has_masks: bool,
) -> Option<SourceConfig> {
    let key = |k: &str| format!("{camera}.source.{k}");
    let url = match raw.url.as_deref() {
        Some(u) => v.ok(key("url"), check_rtsp_url(u).map(|()| u.to_owned())),
        None => {
            v.missing(key("url"));
            None
        }
    };
    let latency_ms = raw.latency_ms.unwrap_or(DEFAULT_LATENCY_MS);
    let latency_ok = in_range(
        v,
        &key("latency_ms"),
        latency_ms,
        &LATENCY_MS,
        "milliseconds",
    );
    let transcode = if raw.transcode.unwrap_or(false) {
        Some(video(v, camera, raw, has_masks)?)
    } else {
        let mut ok = true;
        for k in VIDEO_KEYS.iter().filter(|k| raw.set_keys().contains(k)) {
            ok = false;
            v.invalid(
                key(k),
                "only used with transcode = true; a passthrough stream keeps the camera's own encoding",
            );
        }
        if !ok {
            return None;
        }
        None
    };
    Some(SourceConfig::Rtsp {
        url: url?,
        transport: raw.transport.unwrap_or_default(),
        latency_ms: latency_ok.then_some(latency_ms)?,
        transcode,
    })
}

/// Encoder parameters with defaults; `need_size` makes width and height
/// mandatory (masks on a transcoded RTSP stream, whose native size is unknown).
fn video(
    v: &mut Collector<'_>,
    camera: &str,
    raw: &RawSource,
    need_size: bool,
) -> Option<VideoParams> {
    let key = |k: &str| format!("{camera}.source.{k}");
    let d = VideoParams::default();
    let mut ok = true;
    if need_size {
        for (k, val) in [("width", raw.width), ("height", raw.height)] {
            if val.is_none() {
                ok = false;
                v.invalid(
                    key(k),
                    "required when masks are set on a transcoded RTSP source: masks are in pixels of \
                     the encoded frame, so its size must be stated",
                );
            }
        }
    }
    let p = VideoParams {
        width: raw.width.unwrap_or(d.width),
        height: raw.height.unwrap_or(d.height),
        fps: raw.fps.unwrap_or(d.fps),
        bitrate_kbps: raw.bitrate_kbps.unwrap_or(d.bitrate_kbps),
    };
    for (k, val, range) in [("width", p.width, &WIDTH), ("height", p.height, &HEIGHT)] {
        if !range.contains(&val) || val % 2 != 0 {
            ok = false;
            v.invalid(
                key(k),
                format!(
                    "{val} is not an even number of pixels from {} to {}",
                    range.start(),
                    range.end()
                ),
            );
        }
    }
    ok &= in_range(v, &key("fps"), p.fps, &FPS, "frames per second");
    ok &= in_range(
        v,
        &key("bitrate_kbps"),
        p.bitrate_kbps,
        &BITRATE_KBPS,
        "kbit/s",
    );
    ok.then_some(p)
}

fn in_range(
    v: &mut Collector<'_>,
    key: &str,
    val: u32,
    range: &RangeInclusive<u32>,
    unit: &str,
) -> bool {
    let ok = range.contains(&val);
    if !ok {
        v.invalid(
            key,
            format!(
                "{val} is out of range {}..={} ({unit})",
                range.start(),
                range.end()
            ),
        );
    }
    ok
}

fn mask(m: &RawMask, frame: &VideoParams) -> Result<MaskRect, String> {
    if m.width == 0 || m.height == 0 {
        return Err("a mask needs width and height greater than 0".into());
    }
    let right = u64::from(m.x) + u64::from(m.width);
    let bottom = u64::from(m.y) + u64::from(m.height);
    if right > u64::from(frame.width) || bottom > u64::from(frame.height) {
        return Err(format!(
            "mask x={} y={} width={} height={} reaches outside the {}x{} frame",
            m.x, m.y, m.width, m.height, frame.width, frame.height
        ));
    }
    Ok(MaskRect {
        x: m.x,
        y: m.y,
        width: m.width,
        height: m.height,
    })
}

/// Splits `scheme://authority/rest` → (scheme, authority, rest).
fn split_url(url: &str) -> Option<(&str, &str, &str)> {
    let (scheme, after) = url.split_once("://")?;
    let end = after.find(['/', '?', '#']).unwrap_or(after.len());
    Some((scheme, &after[..end], &after[end..]))
}

/// `url` with any `user:password@` replaced by `***@`, safe to log or show.
///
/// Errs on the side of hiding: everything between `://` and the last `@`
/// is hidden, so a password containing an unescaped `/` or `@` is hidden
/// too (at the price of hiding some path text in the rare URL whose path
/// holds an `@`).
pub fn redact_userinfo(url: &str) -> String {
    let (prefix, after) = match url.split_once("://") {
        Some((scheme, after)) => (format!("{scheme}://"), after),
        None => (String::new(), url),
    };
    match after.rfind('@') {
        Some(at) => format!("{prefix}***{}", &after[at..]),
        None => url.to_owned(),
    }
}

/// Checks an RTSP URL: `rtsp://` or `rtsps://`, a non-empty host, a valid
/// port if one is given, no whitespace or control characters. Messages show
/// the URL with userinfo redacted.
pub(super) fn check_rtsp_url(url: &str) -> Result<(), String> {
    let shown = redact_userinfo(url);
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{shown:?} contains whitespace or control characters"
        ));
    }
    let Some((scheme, authority, _)) = split_url(url) else {
        return Err(format!(
            "{shown:?} is not a URL; expected rtsp://host[:port]/path"
        ));
    };
    if !scheme.eq_ignore_ascii_case("rtsp") && !scheme.eq_ignore_ascii_case("rtsps") {
        return Err(format!("{shown:?} must start with rtsp:// or rtsps://"));
    }
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, "")) => (h, None),
            Some((h, rest)) => match rest.strip_prefix(':') {
                Some(port) => (h, Some(port)),
                None => return Err(format!("{shown:?} has a malformed IPv6 host")),
            },
            None => return Err(format!("{shown:?} has a malformed IPv6 host")),
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((h, port)) => (h, Some(port)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err(format!("{shown:?} has no host"));
    }
    if let Some(port) = port {
        let valid = !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u32>().is_ok_and(|p| (1..=65_535).contains(&p));
        if !valid {
            return Err(format!(
                "{shown:?} has an invalid port (expected 1 to 65535)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtsp_urls() {
        for ok in [
            "rtsp://192.0.2.10/stream1",
            "rtsp://cam.local:554/h264",
            "RTSP://cam",
            "rtsps://user:p%40ss@cam.example.lv:322/live?channel=1",
            "rtsp://[2001:db8::1]:8554/x",
            "rtsp://[2001:db8::1]/x",
        ] {
            assert_eq!(check_rtsp_url(ok), Ok(()), "{ok}");
        }
        for bad in [
            "http://cam/x",
            "cam/x",
            "rtsp:///x",
            "rtsp://user:pw@/x",
            "rtsp://cam:0/x",
            "rtsp://cam:99999/x",
            "rtsp://cam:/x",
            "rtsp://cam /x",
            "rtsp://[::1/x",
        ] {
            assert!(check_rtsp_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn passwords_never_shown() {
        let url = "rtsp://admin:hunter2@cam.example.lv:554/stream";
        assert_eq!(redact_userinfo(url), "rtsp://***@cam.example.lv:554/stream");
        let err = check_rtsp_url("rtsp://admin:hunter2@cam.example.lv:0/stream").unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
        let err = check_rtsp_url("rtsp://admin:hunter2@cam example").unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
        let err = check_rtsp_url("http://admin:hunter2@cam/").unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
        assert_eq!(redact_userinfo("admin:hunter2@cam/x"), "***@cam/x");
        assert_eq!(redact_userinfo("rtsp://cam/a@b"), "rtsp://***@b");
        assert_eq!(redact_userinfo("rtsp://cam/stream"), "rtsp://cam/stream");
        let odd = "rtsp://admin:pa/ss@cam/x";
        assert!(!redact_userinfo(odd).contains("pa/ss"));
        assert!(!check_rtsp_url(odd).unwrap_err().contains("pa/ss"));
    }
}
