//! The `[dock]` section: body cameras alone are a config, and each dock
//! error names the file, the key and the reason.

use std::path::PathBuf;

use super::*;

/// `minimal` without its `[[camera]]`, plus `dock`.
fn with_dock(d: &Dir, dock: &str) -> String {
    let base = d.minimal("", "");
    let cut = base.find("[[camera]]").expect("camera block");
    format!("{}{dock}", &base[..cut])
}

const BODY: &str = r#"[dock]
paths = ["/media/bodycam"]
purpose = "public-order-threats"

[[dock.camera]]
serial = "BC-0042"
id = "bodycam-42"
officer = "LV-POL-0315"
"#;

#[test]
fn body_cameras_alone_are_a_valid_config_with_police_defaults() {
    let d = Dir::new();
    let c = d.load(&with_dock(&d, BODY)).expect("valid");
    assert!(c.cameras.is_empty());
    let dock = c.dock.as_ref().expect("dock");
    assert_eq!(dock.paths, [PathBuf::from("/media/bodycam")]);
    assert!(!dock.keep_originals);
    assert_eq!(dock.scan_interval, Duration::from_secs(5));
    assert_eq!(dock.clock_file, "CLOCK.TXT");
    assert!(dock.extensions.iter().any(|e| e == "mp4"));
    // As many cameras at once as there are cores, unless capped.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!((dock.workers, dock.workers()), (None, cores));
    let capped = d
        .load(&with_dock(
            &d,
            &BODY.replace("[dock]\n", "[dock]\nworkers = 1\n"),
        ))
        .expect("valid");
    assert_eq!(capped.dock.as_ref().map(|d| d.workers()), Some(1));
    let b = c.body_camera("bodycam-42").expect("body camera");
    assert_eq!(
        (b.serial.as_str(), b.officer.as_str()),
        ("BC-0042", "LV-POL-0315")
    );
    assert_eq!(b.camera.kind, CameraKind::Body);
    assert_eq!(b.camera.class.id, "municipal-police");
    assert_eq!(b.camera.purpose.id, "public-order-threats");
    assert!(dock.by_serial("BC-0042").is_some());
    let e = d.err(&with_dock(&d, ""));
    assert!(
        e.to_string()
            .contains("no [[camera]] and no [[dock.camera]]"),
        "{e}"
    );
}

#[test]
fn dock_errors_name_file_key_and_reason() {
    let d = Dir::new();
    let e = d.err(&with_dock(&d, &format!("{BODY}colour = \"red\"\n")));
    d.names(&e, "dock.camera[0].colour");
    let e = d.err(&with_dock(&d, &BODY.replace("paths", "pahts")));
    d.names(&e, "dock.pahts");
    let twice = format!(
        "{BODY}\n[[dock.camera]]\nserial = \"BC-0042\"\nid = \"bodycam-43\"\nofficer = \"P-2\"\n"
    );
    let e = d.err(&with_dock(&d, &twice));
    d.names(&e, "dock.camera[1].serial");
    assert!(
        e.to_string().contains("already used by dock.camera[0]"),
        "{e}"
    );
    let clash = format!(
        "{}{}",
        d.minimal("", ""),
        BODY.replace("bodycam-42", "cam-a")
    );
    let e = d.err(&clash);
    d.names(&e, "dock.camera[0].id");
    assert!(e.to_string().contains("already used by camera[0]"), "{e}");
    let e = d.err(&with_dock(
        &d,
        &BODY.replace("purpose = \"public-order-threats\"\n", ""),
    ));
    d.names(&e, "dock.camera[0].purpose");
    let e = d.err(&with_dock(&d, &format!("{BODY}class = \"cctv\"\n")));
    d.names(&e, "dock.camera[0].class");
    assert!(e.to_string().contains("may not use retention class"), "{e}");
    let e = d.err(&with_dock(&d, &BODY.replace("BC-0042", "../x")));
    d.names(&e, "dock.camera[0].serial");
    let e = d.err(&with_dock(
        &d,
        &BODY.replace("[dock]\n", "[dock]\nscan_interval_s = 0\n"),
    ));
    d.names(&e, "dock.scan_interval_s");
}
