//! `[hq]`: the MQTT link's settings, validated (URL, TLS files, intervals).

use std::path::Path;
use std::time::Duration;

use super::check::{self, Collector};
use super::fields::resolve;
use super::raw::RawHq;
use super::{LinkSettings, MqttVersion, TlsFiles};
use sargs_core::link::parse_url;

const DEFAULT_TELEMETRY_S: u64 = 60;
const DEFAULT_KEEP_ALIVE_S: u64 = 30;
const DEFAULT_OUTBOX_MAX: usize = 100_000;

pub(super) fn link(v: &mut Collector<'_>, raw: &RawHq, base: &Path) -> Option<LinkSettings> {
    let Some(url) = &raw.broker else {
        for (key, set) in [
            ("ca_file", raw.ca_file.is_some()),
            ("client_cert", raw.client_cert.is_some()),
            ("client_key", raw.client_key.is_some()),
            ("username", raw.username.is_some()),
            ("password_file", raw.password_file.is_some()),
        ] {
            if set {
                v.invalid(format!("hq.{key}"), "has no effect without hq.broker");
            }
        }
        return None;
    };
    let (tls, host, port) = v.ok("hq.broker", parse_url(url))?;
    let file = |v: &mut Collector<'_>, key: &str, value: &Option<String>| {
        let p = value.as_ref()?;
        let path = v.ok(format!("hq.{key}"), resolve(base, p))?;
        if !path.is_file() {
            v.invalid(
                format!("hq.{key}"),
                format!("{}: no such file", path.display()),
            );
        }
        Some(path)
    };
    let ca = file(v, "ca_file", &raw.ca_file);
    let client_cert = file(v, "client_cert", &raw.client_cert);
    let client_key = file(v, "client_key", &raw.client_key);
    if client_cert.is_some() != client_key.is_some() {
        v.invalid("hq.client_key", "client_cert and client_key go together");
    }
    let tls = match (tls, ca) {
        (true, Some(ca)) => Some(TlsFiles {
            ca,
            client_cert,
            client_key,
        }),
        (true, None) => {
            v.invalid(
                "hq.ca_file",
                "mqtts:// needs the CA that signs the broker's certificate",
            );
            None
        }
        (false, ca) => {
            if ca.is_some() || client_cert.is_some() {
                v.invalid(
                    "hq.broker",
                    "TLS files are set but the URL is mqtt:// (plain); use mqtts://",
                );
            }
            None
        }
    };
    let password = match &raw.password_file {
        Some(p) => {
            let path = v.ok("hq.password_file", resolve(base, p))?;
            match std::fs::read_to_string(&path) {
                Ok(s) => Some(s.trim_end_matches(['\n', '\r']).to_owned()),
                Err(e) => {
                    v.invalid("hq.password_file", format!("{}: {e}", path.display()));
                    None
                }
            }
        }
        None => None,
    };
    if password.is_some() && raw.username.is_none() {
        v.invalid("hq.username", "password_file is set without a username");
    }
    let prefix = raw.prefix.clone().unwrap_or_else(|| "sargs".into());
    v.check("hq.prefix", &prefix, check::id);
    let secs = |v: &mut Collector<'_>,
                key: &str,
                value: Option<u64>,
                default: u64,
                range: std::ops::RangeInclusive<u64>| {
        match value {
            None => Duration::from_secs(default),
            Some(s) if range.contains(&s) => Duration::from_secs(s),
            Some(s) => {
                v.invalid(
                    format!("hq.{key}"),
                    format!(
                        "{s} is out of range {}..={} (seconds)",
                        range.start(),
                        range.end()
                    ),
                );
                Duration::from_secs(default)
            }
        }
    };
    let telemetry_interval = secs(
        v,
        "telemetry_interval_s",
        raw.telemetry_interval_s,
        DEFAULT_TELEMETRY_S,
        1..=86_400,
    );
    let keep_alive = secs(
        v,
        "keep_alive_s",
        raw.keep_alive_s,
        DEFAULT_KEEP_ALIVE_S,
        // MQTT 5 clients (rumqttc) refuse less than 5 s.
        5..=3_600,
    );
    let outbox_max = raw.outbox_max.unwrap_or(DEFAULT_OUTBOX_MAX);
    if outbox_max < 100 {
        v.invalid("hq.outbox_max", format!("{outbox_max} is below 100"));
    }
    let protocol = match raw.protocol.as_deref() {
        None | Some("auto") => MqttVersion::Auto,
        Some("5") => MqttVersion::V5,
        Some("3.1.1") => MqttVersion::V311,
        Some(other) => {
            v.invalid(
                "hq.protocol",
                format!("{other:?} is not \"auto\", \"5\" or \"3.1.1\""),
            );
            MqttVersion::Auto
        }
    };
    Some(LinkSettings {
        host,
        port,
        tls,
        username: raw.username.clone(),
        password,
        prefix,
        telemetry_interval,
        keep_alive,
        outbox_max,
        protocol,
    })
}

#[cfg(test)]
mod tests {
    use super::parse_url;

    #[test]
    fn broker_urls() {
        assert_eq!(
            parse_url("mqtt://hq.example"),
            Ok((false, "hq.example".into(), 1883))
        );
        assert_eq!(
            parse_url("mqtts://hq.example"),
            Ok((true, "hq.example".into(), 8883))
        );
        assert_eq!(
            parse_url("mqtt://127.0.0.1:18830/"),
            Ok((false, "127.0.0.1".into(), 18830))
        );
        assert_eq!(
            parse_url("mqtts://[::1]:8883"),
            Ok((true, "::1".into(), 8883))
        );
        assert!(parse_url("tcp://x:1").is_err());
        assert!(parse_url("mqtt://user:pw@x:1").is_err());
        assert!(parse_url("mqtt://x:0").is_err());
        assert!(parse_url("mqtt://x:99999").is_err());
    }
}
