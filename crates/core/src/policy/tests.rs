use std::path::Path;

use super::*;
use crate::config::ConfigError;

const PRESET: &str = include_str!("../../../../deploy/policy/lv-jekabpils-2022.toml");
const FILE: &str = "/etc/sargs/policy/lv-jekabpils-2022.toml";

fn preset() -> Policy {
    Policy::from_str(PRESET, Path::new(FILE)).expect("shipped preset is valid")
}

fn load_err(text: &str) -> ConfigError {
    Policy::from_str(text, Path::new(FILE)).expect_err("policy should be rejected")
}

/// Asserts the message names the policy file and the key.
fn names(e: &ConfigError, key: &str) {
    let msg = e.to_string();
    assert!(
        msg.starts_with(FILE),
        "message does not start with the file: {msg}"
    );
    assert!(msg.contains(key), "message does not name {key}: {msg}");
}

#[test]
fn shipped_preset_is_faithful() {
    let p = preset();
    assert_eq!(p.id, "lv-jekabpils-2022");
    assert!(p.reference.contains("Nr. 150"));
    let c = &p.controller;
    assert_eq!(c.name, "Jēkabpils novada pašvaldība");
    assert_eq!(c.registration_no, "90000024205");
    assert_eq!(
        c.address,
        "Brīvības iela 120, Jēkabpils, Jēkabpils novads, LV-5201"
    );
    assert_eq!(c.phone, "65236777");
    assert_eq!(c.email, "pasts@jekabpils.lv");
    assert_eq!(c.dpo_email, "datu.aizsardziba@jekabpils.lv");
    assert_eq!(c.url, "https://www.jekabpils.lv/lv/datu-aizsardziba");
    assert_eq!(c.notice_version, "2022-02-24");
    assert_eq!(p.supervisory_authority.name, "Datu valsts inspekcija");
    assert_eq!(p.supervisory_authority.email, "info@dvi.gov.lv");

    let ids: Vec<_> = p.purpose_ids().collect();
    assert_eq!(
        ids,
        [
            "property-protection",
            "public-order",
            "public-order-threats",
            "administrative-offences"
        ]
    );
    assert!(p
        .purposes
        .iter()
        .all(|p| p.legal_basis == LegalBasis::PublicTask));
    let a = p.purpose("property-protection").expect("purpose A");
    assert!(a.reference.starts_with("J-A1 17.1"));
    assert!(a.text.starts_with("Noziedzīgu nodarījumu novēršana"));
    let b = p.purpose("public-order").expect("purpose B");
    assert!(b.reference.starts_with("J-A1 17.2"));
    assert!(b.allows_class("cctv") && b.allows_class("municipal-police"));
    assert!(!p
        .purpose("public-order-threats")
        .expect("J 17.3")
        .allows_class("cctv"));

    let cctv = p.class("cctv").expect("cctv");
    assert_eq!(cctv.keep.to_string(), "30 days");
    assert_eq!(cctv.hold_cap, None);
    assert_eq!(cctv.reference, "J-A1 28");
    let police = p.class("municipal-police").expect("police");
    assert_eq!(police.keep.to_string(), "3 months");
    assert_eq!(
        police.hold_cap.map(|c| c.to_string()).as_deref(),
        Some("3 years")
    );
    assert_eq!(police.reference, "J-A1 29");
    assert!(p.purpose("nope").is_none() && p.class("nope").is_none());
}

#[test]
fn preset_loads_from_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("p.toml");
    std::fs::write(&file, PRESET).expect("write");
    assert_eq!(Policy::load(&file).expect("loads").id, "lv-jekabpils-2022");
    let missing = Policy::load(&dir.path().join("absent.toml")).expect_err("absent");
    assert!(matches!(missing, ConfigError::Read { .. }));
    assert!(missing.to_string().contains("absent.toml"), "{missing}");
}

#[test]
fn notice_follows_the_annex_template() {
    let p = preset();
    let a = p.purpose("property-protection").expect("purpose A");
    assert_eq!(
        p.render_notice(a),
        "Mērķis: Noziedzīgu nodarījumu novēršana vai atklāšana saistībā ar īpašuma aizsardzību \
         un personu vitāli svarīgu interešu aizsardzību, t.sk. dzīvības un veselības aizsardzību, \
         veicot videonovērošanu Jēkabpils novada pašvaldības iestādēs un struktūrvienībās\n\
         Pārzinis: Jēkabpils novada pašvaldība\n\
         Kontaktinformācija: Brīvības iela 120, Jēkabpils, Jēkabpils novads, LV-5201, tālrunis \
         65236777; elektroniskā pasta adrese: pasts@jekabpils.lv\n\
         Papildus informācija: https://www.jekabpils.lv/lv/datu-aizsardziba"
    );
    let b = p.purpose("public-order").expect("purpose B");
    assert!(p
        .render_notice(b)
        .starts_with("Mērķis: Sabiedriskās kārtības nodrošināšana"));
}

#[test]
fn manifest_serialization() {
    let p = preset();
    let notice = serde_json::to_value(&p.controller).expect("json");
    assert_eq!(notice["registration_no"], "90000024205");
    assert_eq!(notice.as_object().map(|o| o.len()), Some(8));
    let purpose = serde_json::to_value(p.purpose("public-order").expect("B")).expect("json");
    assert_eq!(purpose["legal_basis"], "public-task");
    assert!(purpose.get("allowed_classes").is_none());
    let class = serde_json::to_value(p.class("cctv").expect("cctv")).expect("json");
    assert_eq!(class["keep"], "30 days");
    assert!(class["hold_cap"].is_null());
}

#[test]
fn deadlines_use_calendar_months() {
    use chrono::TimeZone;
    let p = preset();
    let t = chrono::Utc
        .with_ymd_and_hms(2024, 11, 30, 8, 0, 0)
        .single()
        .expect("date");
    let police = p.class("municipal-police").expect("police");
    let end = chrono::Utc
        .with_ymd_and_hms(2025, 2, 28, 8, 0, 0)
        .single()
        .expect("date");
    assert_eq!(police.delete_after(t), Some(end));
    let cap = chrono::Utc
        .with_ymd_and_hms(2027, 11, 30, 8, 0, 0)
        .single()
        .expect("date");
    assert_eq!(police.hold_limit(t), Some(cap));
    assert_eq!(p.class("cctv").expect("cctv").hold_limit(t), None);
}

#[test]
fn error_unknown_key() {
    let text = PRESET.replace("dpo_email =", "dpo_mail =");
    let e = load_err(&text);
    let ConfigError::UnknownKey {
        key,
        line,
        expected,
        ..
    } = &e
    else {
        panic!("wrong kind: {e:?}")
    };
    assert_eq!(key, "controller.dpo_mail");
    assert!(line.is_some());
    assert!(expected.contains("dpo_email"), "{expected}");
    names(&e, "controller.dpo_mail");
}

#[test]
fn error_missing_key() {
    let text = PRESET.replace("notice_version = \"2022-02-24\"", "");
    let e = load_err(&text);
    assert!(
        matches!(&e, ConfigError::MissingKey { key, .. } if key == "controller.notice_version"),
        "{e:?}"
    );
    names(&e, "controller.notice_version");
}

#[test]
fn error_syntax() {
    let e = load_err("[policy\nid = 1");
    assert!(
        matches!(&e, ConfigError::Syntax { line: Some(1), .. }),
        "{e:?}"
    );
    assert!(e.to_string().starts_with(&format!("{FILE}:1:")), "{e}");
}

#[test]
fn error_bad_period_and_basis() {
    let e = load_err(&PRESET.replace("keep = \"30 days\"", "keep = \"3 fortnights\""));
    assert!(
        matches!(&e, ConfigError::Invalid { key, .. } if key == "retention_class[0].keep"),
        "{e:?}"
    );
    names(&e, "fortnights");
    let e =
        load_err(&PRESET.replacen("legal_basis = \"public-task\"", "legal_basis = \"whim\"", 1));
    assert!(
        matches!(&e, ConfigError::Invalid { key, .. } if key == "purpose[0].legal_basis"),
        "{e:?}"
    );
    names(&e, "legal-obligation");
}

#[test]
fn error_invalid_values_are_all_reported() {
    let text = PRESET
        .replace("pasts@jekabpils.lv", "pasts.jekabpils.lv")
        .replace("hold_cap = \"3 years\"", "hold_cap = \"2 months\"")
        .replace("id = \"public-order\"", "id = \"property-protection\"")
        .replace("classes = [\"municipal-police\"]", "classes = [\"police\"]")
        .replace("phone = \"67223131\"", "phone = \"\"");
    let e = load_err(&text);
    let ConfigError::Many(all) = &e else {
        panic!("expected several: {e:?}")
    };
    let keys: Vec<_> = all.iter().filter_map(ConfigError::key).collect();
    assert_eq!(
        keys,
        [
            "controller.email",
            "supervisory_authority.phone",
            "purpose[1].id",
            "purpose[2].classes[0]",
            "purpose[3].classes[0]",
            "retention_class[1].hold_cap",
        ]
    );
    for one in all {
        assert!(matches!(one, ConfigError::Invalid { .. }));
        assert!(one.to_string().starts_with(FILE), "{one}");
    }
    let msg = e.to_string();
    assert!(
        msg.contains("\"2 months\" is shorter than keep = \"3 months\""),
        "{msg}"
    );
    assert!(
        msg.contains(
            "unknown retention class \"police\"; the policy defines \"cctv\", \"municipal-police\""
        ),
        "{msg}"
    );
}

#[test]
fn error_empty_policy_sections() {
    let head = PRESET.split("# ----").next().expect("head");
    let e = load_err(head);
    let keys: Vec<_> = e
        .flatten()
        .into_iter()
        .filter_map(ConfigError::key)
        .collect();
    assert_eq!(keys, ["purpose", "retention_class"]);
}
