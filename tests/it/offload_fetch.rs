//! HQ reads a gateway's evidence back from the store, without the gateway:
//! `sargsctl fetch` writes the agent's records, their sealed media (also
//! those freed on the gateway after offload) and its deletion receipts into
//! a folder laid out as its data directory, byte for byte, and `sargsctl
//! verify` checks the camera's chain there against the device key (a copy
//! lacking some records lists them instead of failing). A
//! folder in use is refused. Real Garage, the agent in process.

use std::path::Path;

use base64::Engine as _;

use crate::harness::*;
use crate::offload::{offloaded, offloading_camera, site, Reader};

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn hq_fetches_a_gateways_evidence_from_the_store_and_verifies_it() {
    let (g, key, home, table) = site();
    let config = home.config(
        2,
        &(offloading_camera("cam-f") + &table + "local = \"free\"\n"),
    );
    let reader = Reader::new(&g, &key);
    record_until(
        &config,
        RECORDING,
        "3 records offloaded, 2 receipts in the store",
        || {
            let keys = reader.list();
            offloaded(&home).len() >= 3 && keys.contains("test-gw/receipts/0000000002.json")
        },
    );
    let out = home.path().join("fetched");
    let endpoint = g.endpoint();
    let creds = home.path().join("offload.credentials");
    let fetch = |out: &Path| {
        sargsctl(&[
            "fetch",
            "--endpoint",
            &endpoint,
            "--region",
            "garage",
            "--bucket",
            "evidence",
            "--credentials",
            creds.to_str().expect("utf-8"),
            "--agent",
            "test-gw",
            "--out",
            out.to_str().expect("utf-8"),
        ])
    };
    let (ok, said, err) = fetch(&out);
    assert!(ok, "{said}{err}");
    assert!(
        said.contains("test-gw:") && said.contains("receipts"),
        "{said}"
    );

    // Every object, where the gateway keeps it, byte for byte.
    let data = home.path().join("data");
    let listed = reader.list();
    for k in &listed {
        let rest = k.strip_prefix("test-gw/").expect("the agent's prefix");
        let local = if let Some(r) = rest.strip_prefix("receipts/") {
            out.join("receipts").join(r)
        } else {
            out.join("cameras").join(rest)
        };
        assert_eq!(
            std::fs::read(&local).unwrap_or_default(),
            reader.get(k),
            "{k} fetched as {}",
            local.display()
        );
    }
    let fetched = files(&out.join("cameras/cam-f")).len() + files(&out.join("receipts")).len();
    assert_eq!(fetched, listed.len(), "one file per object");
    for r in files(&out.join("receipts")) {
        assert_eq!(
            std::fs::read(out.join("receipts").join(&r)).expect("fetched"),
            std::fs::read(data.join("receipts").join(&r)).expect("the gateway's"),
            "receipt {r}"
        );
    }
    // The gateway freed what it offloaded; the store still has it.
    let freed: Vec<String> = files(&out.join("cameras/cam-f"))
        .into_iter()
        .filter(|f| f.ends_with(".mp4.age") && !home.camera_dir("cam-f").join(f).exists())
        .collect();
    assert!(
        !freed.is_empty(),
        "some media freed on the gateway came from the store"
    );
    assert!(out.join("fetched.json").is_file());

    // The chain, as fetched, verifies against the device key.
    let device = base64::engine::general_purpose::STANDARD.encode(home.device_key());
    let cam = out.join("cameras/cam-f");
    let (ok, said, err) = sargsctl(&[
        "verify",
        cam.to_str().expect("utf-8"),
        "--device-key",
        &device,
    ]);
    assert!(ok && said.contains("verified"), "{said}{err}");

    // A store may hold only some records of a camera (those HQ asked for):
    // verify lists what a fetched copy lacks instead of failing on it.
    std::fs::remove_file(cam.join("0000000002.json")).expect("rm");
    let (ok, said, err) = sargsctl(&[
        "verify",
        cam.to_str().expect("utf-8"),
        "--device-key",
        &device,
    ]);
    assert!(
        ok && said.contains("not in this copy: records 2 to 2") && said.contains("verified"),
        "{said}{err}"
    );

    // A folder in use is refused, and left as it was.
    let (ok, said, err) = fetch(&out);
    assert!(!ok && err.contains("not empty"), "{said}{err}");
}
