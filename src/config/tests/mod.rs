use std::path::{Path, PathBuf};

use super::*;

mod dock;
mod offload;

const EXAMPLE: &str = include_str!("../../../deploy/sargs.toml");
const PRESET: &str = include_str!("../../../deploy/policy/lv-jekabpils-2022.toml");

/// A config directory with the shipped policy at `policy/lv-jekabpils-2022.toml`.
struct Dir {
    dir: tempfile::TempDir,
    recipient: String,
}

impl Dir {
    fn new() -> Dir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("policy")).expect("mkdir");
        std::fs::write(dir.path().join("policy/lv-jekabpils-2022.toml"), PRESET)
            .expect("write policy");
        let recipient = age::x25519::Identity::generate().to_public().to_string();
        Dir { dir, recipient }
    }

    fn file(&self) -> PathBuf {
        self.dir.path().join("sargs.toml")
    }

    /// A minimal valid config, with `extra` appended to the first camera.
    fn minimal(&self, camera_extra: &str, source_extra: &str) -> String {
        format!(
            r#"[agent]
id = "gw-test"
data_dir = "data"
policy = "policy/lv-jekabpils-2022.toml"

[seal]
recipients = ["{r}"]

[[camera]]
id = "cam-a"
kind = "stationary"
purpose = "property-protection"
class = "cctv"
{camera_extra}
[camera.source]
type = "test"
{source_extra}
"#,
            r = self.recipient
        )
    }

    fn load(&self, text: &str) -> Result<Config, ConfigError> {
        Config::from_str(text, &self.file())
    }

    fn err(&self, text: &str) -> ConfigError {
        self.load(text).expect_err("config should be rejected")
    }

    /// Asserts `e` is one error naming this config file and `key`.
    fn names(&self, e: &ConfigError, key: &str) {
        let msg = e.to_string();
        let file = self.file().display().to_string();
        assert!(
            msg.starts_with(&file),
            "message does not start with {file}: {msg}"
        );
        assert!(msg.contains(key), "message does not name {key}: {msg}");
        assert_eq!(e.key(), Some(key), "{e:?}");
    }
}

#[test]
fn example_config_loads() {
    let d = Dir::new();
    std::fs::write(d.file(), EXAMPLE).expect("write");
    let c = Config::load(&d.file()).expect("example config is valid");
    assert_eq!(c.agent.id, "gw-jekabpils-01");
    assert_eq!(c.agent.data_dir, Path::new("/var/lib/sargs"));
    assert_eq!(
        c.agent.signing_key,
        Path::new("/var/lib/sargs/device/signing.pk8")
    );
    assert_eq!(
        c.agent.policy_file,
        d.dir.path().join("policy/lv-jekabpils-2022.toml")
    );
    assert_eq!(c.agent.segment, Duration::from_secs(60));
    assert_eq!(c.policy.id, "lv-jekabpils-2022");
    assert_eq!(c.recipients.len(), 1);
    assert_eq!(c.supervision, Supervision::default());
    assert_eq!(c.cameras.len(), 5);
    assert_eq!(c.enabled_cameras().count(), 1);

    let cam = c.camera("townhall-entrance").expect("camera");
    assert_eq!(cam.kind, CameraKind::Stationary);
    assert_eq!(cam.purpose.id, "property-protection");
    assert_eq!(cam.class.keep.to_string(), "30 days");
    assert_eq!(
        cam.masks,
        [MaskRect {
            x: 0,
            y: 0,
            width: 320,
            height: 180
        }]
    );
    assert_eq!(
        cam.source,
        SourceConfig::Test {
            pattern: "smpte".into(),
            video: VideoParams::default()
        }
    );
    let pass = c.camera("market-square-north").expect("camera");
    assert!(matches!(
        &pass.source,
        SourceConfig::Rtsp {
            transport: RtspTransport::Tcp,
            latency_ms: 200,
            transcode: None,
            ..
        }
    ));
    let trans = c.camera("market-square-south").expect("camera");
    assert_eq!(
        trans.source.video().map(|v| (v.width, v.height)),
        Some((1920, 1080))
    );
    let file = c.camera("patrol-car-07").expect("camera");
    assert_eq!(file.kind, CameraKind::Vehicle);
    assert_eq!(
        file.source,
        SourceConfig::File {
            path: d.dir.path().join("demo.mp4"),
            video: VideoParams::default()
        }
    );
    // The RTSP password is in the config, but never in debug output.
    let debug = format!("{c:?}");
    assert!(
        debug.contains("rtsp://***@192.0.2.21:554/stream1"),
        "{debug}"
    );
    assert!(!debug.contains("change-me"));
}

#[test]
fn minimal_config_gets_defaults() {
    let d = Dir::new();
    let c = d.load(&d.minimal("", "")).expect("valid");
    assert_eq!(c.agent.data_dir, d.dir.path().join("data"));
    assert_eq!(
        c.agent.signing_key,
        d.dir.path().join("data/device/signing.pk8")
    );
    let cam = &c.cameras[0];
    assert!(cam.enabled);
    assert_eq!(cam.segment, Duration::from_secs(60));
    assert!(cam.masks.is_empty());
    assert_eq!(cam.source.type_str(), "test");
    assert_eq!(cam.source.video(), Some(&VideoParams::default()));
    assert_eq!(c.supervision.backoff_initial, Duration::from_secs(1));
    assert_eq!(c.agent.disk_stall, Duration::from_secs(5));
}

#[test]
fn a_disk_stall_bound_out_of_range_is_named() {
    let d = Dir::new();
    let with = |v: &str| {
        d.minimal("", "")
            .replacen("[seal]", &format!("disk_stall_s = {v}\n\n[seal]"), 1)
    };
    for bad in ["0", "301"] {
        let e = d.err(&with(bad));
        d.names(&e, "agent.disk_stall_s");
    }
    let c = d.load(&with("1")).expect("valid");
    assert_eq!(c.agent.disk_stall, Duration::from_secs(1));
}

#[test]
fn error_read() {
    let d = Dir::new();
    let e = Config::load(&d.file()).expect_err("no file");
    assert!(matches!(e, ConfigError::Read { .. }), "{e:?}");
    assert!(
        e.to_string().starts_with(&d.file().display().to_string()),
        "{e}"
    );
}

#[test]
fn error_syntax() {
    let d = Dir::new();
    let e = d.err("[agent]\nid = \"x\"\nid = \"y\"\n");
    let ConfigError::Syntax { line, .. } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(*line, Some(3));
    assert!(
        e.to_string()
            .starts_with(&format!("{}:3:", d.file().display())),
        "{e}"
    );
}

#[test]
fn error_unknown_key() {
    let d = Dir::new();
    let e = d.err(&d.minimal("colour = \"red\"", ""));
    assert!(
        matches!(&e, ConfigError::UnknownKey { line: Some(14), .. }),
        "{e:?}"
    );
    d.names(&e, "camera[0].colour");
    assert!(e.to_string().contains("`purpose`"), "{e}");

    let e = d.err(&d.minimal("", "colour = \"red\""));
    d.names(&e, "camera[0].source.colour");
    let e = d.err(&d.minimal(
        "masks = [{ x = 0, y = 0, width = 2, height = 2, z = 1 }]",
        "",
    ));
    d.names(&e, "camera[0].masks[0].z");
    let e = d.err(
        &d.minimal("", "")
            .replace("[seal]", "[seal]\nrecipient = \"x\""),
    );
    d.names(&e, "seal.recipient");
    let e = d.err(&format!("{}\n[mqtt]\nhost = \"x\"\n", d.minimal("", "")));
    d.names(&e, "mqtt");
}

#[test]
fn error_missing_key() {
    let d = Dir::new();
    let e = d.err(&d.minimal("", "").replace("id = \"gw-test\"", ""));
    assert!(matches!(e, ConfigError::MissingKey { .. }), "{e:?}");
    d.names(&e, "agent.id");
    let e = d.err(&d.minimal("", "").replace("class = \"cctv\"", ""));
    d.names(&e, "camera[0].class");
    let e = d.err(
        &d.minimal("", "")
            .replace("type = \"test\"", "type = \"rtsp\""),
    );
    assert!(matches!(e, ConfigError::MissingKey { .. }), "{e:?}");
    d.names(&e, "camera[0].source.url");
}

#[test]
fn error_unknown_purpose_lists_the_valid_ones() {
    let d = Dir::new();
    let text = d
        .minimal("", "")
        .replace("\"property-protection\"", "\"x\"");
    let e = d.err(&text);
    assert_eq!(
        e.to_string(),
        format!(
            "{}: camera[0].purpose: unknown purpose \"x\"; the policy defines \"property-protection\", \
             \"public-order\", \"public-order-threats\", \"administrative-offences\"",
            d.file().display()
        )
    );
    let e = d.err(&d.minimal("", "").replace("\"cctv\"", "\"forever\""));
    d.names(&e, "camera[0].class");
    assert!(
        e.to_string().contains("\"cctv\", \"municipal-police\""),
        "{e}"
    );
    let text = d
        .minimal("", "")
        .replace("\"property-protection\"", "\"public-order-threats\"");
    let e = d.err(&text);
    d.names(&e, "camera[0].class");
    assert!(
        e.to_string()
            .contains("may not use retention class \"cctv\""),
        "{e}"
    );
}

#[test]
fn error_recipients_name_the_index() {
    let d = Dir::new();
    let text = d.minimal("", "").replace(
        &format!("[\"{}\"]", d.recipient),
        &format!("[\"{}\", \"age1qqqq\"]", d.recipient),
    );
    let e = d.err(&text);
    assert!(matches!(e, ConfigError::Invalid { .. }), "{e:?}");
    d.names(&e, "seal.recipients[1]");
    let text = d.minimal("", "").replace(
        &format!("[\"{}\"]", d.recipient),
        &format!("[\"{0}\", \"{0}\"]", d.recipient),
    );
    d.names(&d.err(&text), "seal.recipients[1]");
    let text = d
        .minimal("", "")
        .replace(&format!("[\"{}\"]", d.recipient), "[]");
    d.names(&d.err(&text), "seal.recipients");
}

#[test]
fn error_wrong_types_and_enum_names() {
    let d = Dir::new();
    let text = d
        .minimal("", "")
        .replace("[seal]", "segment_seconds = \"sixty\"\n[seal]");
    let e = d.err(&text);
    assert!(matches!(e, ConfigError::Invalid { .. }), "{e:?}");
    d.names(&e, "agent.segment_seconds");
    let e = d.err(&d.minimal("", "").replace("\"stationary\"", "\"drone\""));
    d.names(&e, "camera[0].kind");
    assert!(e.to_string().contains("body"), "{e}");
    let e = d.err(&d.minimal("", "width = -2"));
    d.names(&e, "camera[0].source.width");
}

#[test]
fn error_camera_rules() {
    let d = Dir::new();
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "segment_seconds = 1",
            "",
            "camera[0].segment_seconds",
            "2 to 600",
        ),
        ("", "width = 1279", "camera[0].source.width", "even"),
        ("", "height = 8", "camera[0].source.height", "16 to 4320"),
        ("", "fps = 0", "camera[0].source.fps", "1..=120"),
        (
            "",
            "bitrate_kbps = 60000",
            "camera[0].source.bitrate_kbps",
            "100..=50000",
        ),
        (
            "",
            "pattern = \"plaid\"",
            "camera[0].source.pattern",
            "\"ball\"",
        ),
        (
            "",
            "url = \"rtsp://x/\"",
            "camera[0].source.url",
            "type = \"rtsp\"",
        ),
        (
            "masks = [{ x = 0, y = 0, width = 0, height = 5 }]",
            "",
            "camera[0].masks[0]",
            "greater than 0",
        ),
        (
            "masks = [{ x = 1000, y = 0, width = 281, height = 5 }]",
            "",
            "camera[0].masks[0]",
            "outside the 1280x720",
        ),
        ("id = \"../etc\"", "", "camera[0].id", "'/'"),
    ];
    for (cam, src, key, reason) in cases {
        let text = d.minimal(cam, src);
        let text = if cam.starts_with("id =") {
            text.replacen("id = \"cam-a\"\n", "", 1)
        } else {
            text
        };
        let e = d.err(&text);
        assert!(
            matches!(e, ConfigError::Invalid { .. }),
            "{cam} {src}: {e:?}"
        );
        d.names(&e, key);
        assert!(e.to_string().contains(reason), "{e}");
    }
}

#[test]
fn error_masks_on_passthrough_rtsp() {
    let d = Dir::new();
    let text = d
        .minimal(
            "masks = [{ x = 0, y = 0, width = 16, height = 16 }]",
            "url = \"rtsp://cam/x\"",
        )
        .replace("type = \"test\"", "type = \"rtsp\"");
    let e = d.err(&text);
    d.names(&e, "camera[0].masks");
    assert!(e.to_string().contains("set `transcode = true`"), "{e}");

    // Transcoding with masks needs the frame size stated.
    let e = d.err(&text.replace("url =", "transcode = true\nheight = 360\nurl ="));
    d.names(&e, "camera[0].source.width");
    assert!(e.to_string().contains("required when masks are set"), "{e}");
    let ok = text.replace(
        "url =",
        "transcode = true\nwidth = 640\nheight = 360\nurl =",
    );
    let c = d.load(&ok).expect("valid");
    assert_eq!(c.cameras[0].masks.len(), 1);
    // Encoder settings on a passthrough stream are refused.
    let e = d.err(
        &text
            .replace("masks = [{ x = 0, y = 0, width = 16, height = 16 }]", "")
            .replace("url =", "fps = 10\nurl ="),
    );
    d.names(&e, "camera[0].source.fps");
}

#[test]
fn error_rtsp_url_hides_password() {
    let d = Dir::new();
    let text = d
        .minimal("", "url = \"http://admin:hunter2@cam/x\"")
        .replace("type = \"test\"", "type = \"rtsp\"");
    let e = d.err(&text);
    d.names(&e, "camera[0].source.url");
    assert!(!e.to_string().contains("hunter2"), "{e}");
    assert!(e.to_string().contains("rtsp://"), "{e}");
}

#[test]
fn error_cameras_and_supervision() {
    let d = Dir::new();
    let base = d.minimal("", "");
    let none = base.split("[[camera]]").next().expect("head");
    d.names(&d.err(none), "camera");
    let second = format!("{base}\n[[camera]]\nid = \"cam-a\"\nkind = \"body\"\npurpose = \"public-order\"\nclass = \"cctv\"\nenabled = false\n[camera.source]\ntype = \"test\"\n");
    let e = d.err(&second);
    d.names(&e, "camera[1].id");
    assert!(e.to_string().contains("already used by camera[0]"), "{e}");
    let sup = format!("{base}\n[supervision]\nbackoff_initial_ms = 5000\nbackoff_max_ms = 1000\n");
    d.names(&d.err(&sup), "supervision.backoff_max_ms");
    let sup = format!("{base}\n[supervision]\nbackoff_initial_ms = 10\n");
    d.names(&d.err(&sup), "supervision.backoff_initial_ms");
}

#[test]
fn policy_errors_name_the_policy_file() {
    let d = Dir::new();
    let policy = d.dir.path().join("policy/lv-jekabpils-2022.toml");
    std::fs::write(
        &policy,
        PRESET.replace("keep = \"30 days\"", "keep = \"0 days\""),
    )
    .expect("write");
    let e = d.err(&d.minimal("", ""));
    assert_eq!(e.file(), Some(policy.as_path()));
    assert_eq!(e.key(), Some("retention_class[0].keep"));
    assert!(
        e.to_string().starts_with(&policy.display().to_string()),
        "{e}"
    );
    std::fs::remove_file(&policy).expect("rm");
    let e = d.err(&d.minimal("", ""));
    assert!(
        matches!(&e, ConfigError::Read { file, .. } if file == &policy),
        "{e:?}"
    );
}

#[test]
fn several_errors_are_reported_together() {
    let d = Dir::new();
    let text = d
        .minimal("segment_seconds = 9999", "fps = 500")
        .replace("id = \"gw-test\"", "id = \"gw test\"");
    let e = d.err(&text);
    let ConfigError::Many(all) = &e else {
        panic!("{e:?}")
    };
    let keys: Vec<_> = all.iter().filter_map(ConfigError::key).collect();
    assert_eq!(
        keys,
        [
            "agent.id",
            "camera[0].segment_seconds",
            "camera[0].source.fps"
        ]
    );
    let msg = e.to_string();
    assert!(msg.starts_with("3 problems:"), "{msg}");
    assert_eq!(msg.lines().count(), 4, "{msg}");
}

#[test]
fn keys_in_later_array_elements_are_located() {
    let d = Dir::new();
    let base = d.minimal("", "");
    let second = |cam: &str, src: &str| {
        format!(
            "{base}\n[[camera]]\nid = \"cam-b\"\nkind = \"body\"\npurpose = \"public-order\"\n{cam}\n\
             [camera.source]\ntype = \"test\"\n{src}\n"
        )
    };
    let e = d.err(&second("", ""));
    assert!(matches!(e, ConfigError::MissingKey { .. }), "{e:?}");
    d.names(&e, "camera[1].class");
    let e = d.err(&second("class = \"cctv\"", "fps = \"25\""));
    d.names(&e, "camera[1].source.fps");
    let e = d.err(&second("class = \"cctv\"", "bogus = 1"));
    assert!(
        matches!(e, ConfigError::UnknownKey { line: Some(26), .. }),
        "{e:?}"
    );
    d.names(&e, "camera[1].source.bogus");
    let e = d.err(&second(
        "class = \"cctv\"\nmasks = [{ x = 0, y = 0, width = 4, height = 4 }, { x = 0 }]",
        "",
    ));
    d.names(&e, "camera[1].masks[1].y");
    let e = d.err(&second("class = \"cctv\"", "").replace("kind = \"body\"", "kind = 3"));
    d.names(&e, "camera[1].kind");
}

#[test]
fn error_hq_protocol_and_keep_alive() {
    let d = Dir::new();
    let key = "GfEhY8n0lXVDn5pXZq4FHOmLYyXkIkMGe9JdcjcD1Ms=";
    let hq = |extra: &str| {
        format!(
            "{}\n[hq]\nbroker = \"mqtt://127.0.0.1:1883\"\ncommand_keys = [\"{key}\"]\n{extra}",
            d.minimal("", "")
        )
    };
    let ok = d.load(&hq("")).expect("default link");
    let link = ok.link.expect("link");
    assert_eq!(link.protocol, MqttVersion::Auto);
    for (text, want) in [("5", MqttVersion::V5), ("3.1.1", MqttVersion::V311)] {
        let c = d
            .load(&hq(&format!("protocol = \"{text}\"\n")))
            .expect("protocol");
        assert_eq!(c.link.expect("link").protocol, want);
    }
    let e = d.err(&hq("protocol = \"4\"\n"));
    d.names(&e, "hq.protocol");
    assert!(
        e.to_string().contains("\"auto\", \"5\" or \"3.1.1\""),
        "{e}"
    );
    let e = d.err(&hq("keep_alive_s = 2\n"));
    d.names(&e, "hq.keep_alive_s");
    assert!(e.to_string().contains("5..=3600"), "{e}");
}

#[test]
fn the_clock_settling_period_defaults_to_the_sweep_interval_and_at_least_a_minute() {
    let d = Dir::new();
    let with = |retention: &str| format!("{}\n[retention]\n{retention}\n", d.minimal("", ""));
    let settle = |retention: &str| {
        d.load(&with(retention))
            .expect("valid")
            .retention
            .clock_settle
    };
    assert_eq!(settle("sweep_interval_s = 1"), Duration::from_secs(60));
    assert_eq!(settle("sweep_interval_s = 600"), Duration::from_secs(600));
    assert_eq!(settle("clock_settle_s = 5"), Duration::from_secs(5));
    for bad in ["clock_settle_s = 0", "clock_settle_s = 86401"] {
        let e = d.err(&with(bad));
        d.names(&e, "retention.clock_settle_s");
        assert!(e.to_string().contains("out of range 1..=86400"), "{e}");
    }
}
