//! `[offload]`: a store outside the allow-list and a credentials file others
//! may read are refused with an error naming the key; the secret never
//! appears in an error or in `Debug` output.

use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::config::offload::{Addressing, Allow};

const SECRET: &str = "s3cr3t-never-shown-0123456789abcdef";

/// Writes the credentials file `offload.credentials` with `mode`.
fn credentials(d: &Dir, text: &str, mode: u32) {
    let p = d.dir.path().join("offload.credentials");
    std::fs::write(&p, text).expect("write credentials");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn good_credentials(d: &Dir, mode: u32) {
    credentials(
        d,
        &format!("access_key_id = \"GK0123\"\nsecret_access_key = \"{SECRET}\"\n"),
        mode,
    );
}

/// `minimal` with `offload = "all"` on its camera and this `[offload]`.
fn with_offload(d: &Dir, endpoint: &str, region: &str, extra: &str) -> String {
    format!(
        "{}\n[offload]\nendpoint = \"{endpoint}\"\nregion = \"{region}\"\nbucket = \"evidence\"\n\
         credentials_file = \"offload.credentials\"\n\
         allow_endpoints = [\"http://127.0.0.1:3900\", \"https://s3.evidence.example.lv\"]\n\
         allow_regions = [\"garage\", \"lv-1\"]\n{extra}",
        d.minimal("offload = \"all\"\n", "")
    )
}

#[test]
fn an_allowed_store_loads_and_debug_output_hides_the_secret() {
    let d = Dir::new();
    good_credentials(&d, 0o600);
    let c = d
        .load(&with_offload(&d, "http://127.0.0.1:3900", "garage", ""))
        .expect("valid");
    let o = c.offload.as_ref().expect("offload");
    assert_eq!(o.endpoint.as_str(), "http://127.0.0.1:3900/");
    assert_eq!(
        (o.region.as_str(), o.bucket.as_str()),
        ("garage", "evidence")
    );
    assert_eq!(o.addressing, Addressing::Path);
    assert_eq!(o.part_size, 8 << 20);
    assert_eq!(o.credentials.access_key_id, "GK0123");
    assert_eq!(o.credentials.secret_access_key, SECRET);
    assert_eq!(c.cameras[0].offload, OffloadMode::All);
    let shown = format!("{c:?}");
    assert!(!shown.contains(SECRET), "secret in Debug output: {shown}");
    assert!(shown.contains("GK0123"));
    // 0400 is as private as 0600.
    good_credentials(&d, 0o400);
    d.load(&with_offload(&d, "http://127.0.0.1:3900", "garage", ""))
        .expect("0400 is accepted");
}

#[test]
fn an_endpoint_outside_the_allow_list_is_refused_naming_the_key() {
    let d = Dir::new();
    good_credentials(&d, 0o600);
    let e = d.err(&with_offload(
        &d,
        "http://s3.us-east-1.amazonaws.com",
        "lv-1",
        "",
    ));
    d.names(&e, "offload.endpoint");
    let msg = e.to_string();
    assert!(msg.contains("http://s3.us-east-1.amazonaws.com"), "{msg}");
    assert!(msg.contains("EU/EEA"), "{msg}");
    assert!(!msg.contains(SECRET), "{msg}");
    // Another port of an allowed host is another endpoint.
    let e = d.err(&with_offload(&d, "http://127.0.0.1:3901", "garage", ""));
    d.names(&e, "offload.endpoint");
}

#[test]
fn a_region_outside_the_allow_list_is_refused_naming_the_key() {
    let d = Dir::new();
    good_credentials(&d, 0o600);
    let e = d.err(&with_offload(&d, "http://127.0.0.1:3900", "us-east-1", ""));
    d.names(&e, "offload.region");
    assert!(e.to_string().contains("\"us-east-1\""), "{e}");
}

#[test]
fn an_empty_allow_list_is_refused() {
    let d = Dir::new();
    good_credentials(&d, 0o600);
    let text = with_offload(&d, "http://127.0.0.1:3900", "garage", "").replace(
        "allow_endpoints = [\"http://127.0.0.1:3900\", \"https://s3.evidence.example.lv\"]",
        "allow_endpoints = []",
    );
    let e = d.err(&text);
    d.names(&e, "offload.allow_endpoints");
}

#[test]
fn a_credentials_file_others_may_read_is_refused_and_never_quoted() {
    let d = Dir::new();
    good_credentials(&d, 0o644);
    let e = d.err(&with_offload(&d, "http://127.0.0.1:3900", "garage", ""));
    d.names(&e, "offload.credentials_file");
    let msg = e.to_string();
    assert!(msg.contains("0644"), "{msg}");
    assert!(msg.contains("offload.credentials"), "{msg}");
    assert!(!msg.contains(SECRET), "{msg}");
    // A file that does not parse is not quoted either (toml's own error
    // would show the line holding the secret).
    credentials(
        &d,
        &format!("access_key_id = \"GK0123\"\nsecret_access_key = {SECRET}\n"),
        0o600,
    );
    let e = d.err(&with_offload(&d, "http://127.0.0.1:3900", "garage", ""));
    d.names(&e, "offload.credentials_file");
    assert!(!e.to_string().contains(SECRET), "{e}");
}

#[test]
fn a_camera_that_offloads_needs_the_store() {
    let d = Dir::new();
    let e = d.err(&d.minimal("offload = \"all\"\n", ""));
    d.names(&e, "camera[0].offload");
    let e = d.err(&d.minimal("offload = \"some\"\n", ""));
    d.names(&e, "camera[0].offload");
}

#[test]
fn https_needs_a_ca_and_virtual_host_a_host_name() {
    let d = Dir::new();
    good_credentials(&d, 0o600);
    let e = d.err(&with_offload(
        &d,
        "https://s3.evidence.example.lv",
        "lv-1",
        "",
    ));
    d.names(&e, "offload.ca_file");
    let e = d.err(&with_offload(
        &d,
        "http://127.0.0.1:3900",
        "garage",
        "addressing = \"virtual-host\"\n",
    ));
    d.names(&e, "offload.addressing");
}

#[test]
fn a_bandwidth_cap_is_kib_per_second_and_zero_is_refused() {
    let d = Dir::new();
    good_credentials(&d, 0o600);
    let c = d
        .load(&with_offload(&d, "http://127.0.0.1:3900", "garage", ""))
        .expect("valid");
    assert_eq!(c.offload.as_ref().expect("offload").max_bytes_s, None);
    let c = d
        .load(&with_offload(
            &d,
            "http://127.0.0.1:3900",
            "garage",
            "max_kib_s = 512\n",
        ))
        .expect("valid");
    let cap = c.offload.as_ref().expect("offload").max_bytes_s;
    assert_eq!(cap, Some(512 << 10));
    for bad in ["max_kib_s = 0\n", "max_kib_s = 99999999999\n"] {
        let e = d.err(&with_offload(&d, "http://127.0.0.1:3900", "garage", bad));
        d.names(&e, "offload.max_kib_s");
    }
}

#[test]
fn upload_windows_and_interfaces_load_and_bad_ones_are_named() {
    let d = Dir::new();
    good_credentials(&d, 0o600);
    let c = d
        .load(&with_offload(
            &d,
            "http://127.0.0.1:3900",
            "garage",
            "schedule = [\"22:00-06:00\", \"12:00-13:00\"]\ninterfaces = [\"wlan0\"]\n",
        ))
        .expect("valid");
    let when = &c.offload.as_ref().expect("offload").when;
    let windows: Vec<String> = when.schedule.iter().map(ToString::to_string).collect();
    assert_eq!(windows, ["22:00-06:00", "12:00-13:00"]);
    assert_eq!(when.interfaces, ["wlan0"]);
    let none = d
        .load(&with_offload(&d, "http://127.0.0.1:3900", "garage", ""))
        .expect("valid");
    assert_eq!(none.offload.expect("offload").when, Default::default());
    for (bad, key) in [
        (
            "schedule = [\"22:00-06:00\", \"9-17\"]\n",
            "offload.schedule[1]",
        ),
        ("schedule = [\"08:00-08:00\"]\n", "offload.schedule[0]"),
        (
            "interfaces = [\"wlan0\", \"../eth0\"]\n",
            "offload.interfaces[1]",
        ),
    ] {
        let e = d.err(&with_offload(&d, "http://127.0.0.1:3900", "garage", bad));
        d.names(&e, key);
    }
}

#[test]
fn the_allow_list_is_asked_of_each_request_url() {
    let allow = Allow {
        endpoints: vec!["https://s3.evidence.example.lv".into()],
        regions: vec!["lv-1".into()],
    };
    let url = |u: &str| url::Url::parse(u).expect("url");
    let ok = |u: &str, region: &str| allow.check(&url(u), "evidence", region).is_ok();
    assert!(ok(
        "https://s3.evidence.example.lv/evidence/gw/cam/0000000001.json",
        "lv-1"
    ));
    // Virtual-host addressing: the bucket before an allowed host.
    assert!(ok(
        "https://evidence.s3.evidence.example.lv/gw/cam/1.json",
        "lv-1"
    ));
    assert!(!ok("https://other.s3.evidence.example.lv/x", "lv-1"));
    assert!(!ok("http://s3.evidence.example.lv/evidence/x", "lv-1"));
    assert!(!ok(
        "https://s3.evidence.example.lv.attacker.example/evidence/x",
        "lv-1"
    ));
    assert!(!ok(
        "https://s3.evidence.example.lv/evidence/x",
        "us-east-1"
    ));
}
