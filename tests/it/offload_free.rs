//! `[offload] local = "free"`: a segment's local media goes only after its
//! object is verified in the store, with a signed, chained receipt of reason
//! `offloaded` that names that object; the chain still verifies, and the
//! receipts follow into the store byte for byte.

use sargs_core::retention::receipt::{Reason, Receipt};
use sargs_core::seal::manifest::{self, Manifest};
use sargs_core::seal::sign::Envelope;

use crate::harness::*;
use crate::offload::{index, offloaded, offloaded_count, offloading_camera, site, Reader};

/// Receipts in the data directory, in chain order.
fn receipts(home: &Home) -> Vec<Receipt> {
    let key = home.device_key();
    let dir = home.path().join("data/receipts");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|x| x == "json"));
    files.sort();
    files
        .iter()
        .map(|p| {
            let bytes = std::fs::read(p).expect("receipt");
            let env = Envelope::open(&bytes, Some(&key)).expect("signed by the device key");
            serde_json::from_str(&env.payload).expect("receipt payload")
        })
        .collect()
}

#[test]
fn freed_media_has_a_receipt_naming_its_verified_object_and_the_chain_verifies() {
    let (g, key, home, table) = site();
    let config = home.config(
        2,
        &(offloading_camera("cam-r") + &table + "local = \"free\"\n"),
    );
    let reader = Reader::new(&g, &key);
    // Every receipt written follows its record into the store.
    let stored = |n: usize| {
        let keys = reader.list();
        (1..=n).all(|seq| keys.contains(&format!("test-gw/receipts/{seq:010}.json")))
    };
    record_until(
        &config,
        RECORDING,
        "2 segments freed after offload, their receipts in the store",
        || {
            let n = receipts(&home).len();
            n >= 2 && stored(n)
        },
    );
    assert!(offloaded_count(&home) >= 2);
    let local = home.path().join("data/receipts");
    for seq in 1..=receipts(&home).len() {
        let name = format!("{seq:010}.json");
        let key = format!("test-gw/receipts/{name}");
        if reader.list().contains(&key) {
            let file = std::fs::read(local.join(&name)).expect("receipt file");
            assert_eq!(
                reader.get(&key),
                file,
                "{key} is the agent's signed receipt, byte for byte"
            );
        }
    }
    assert!(stored(2), "receipts 1 and 2 in the store");
    let dir = home.camera_dir("cam-r");
    let device = home.device_key();
    let rows = offloaded(&home);
    let idx = index(&home);
    let freed = receipts(&home);
    for r in &freed {
        assert_eq!(r.reason, Reason::Offloaded, "{r:?}");
        let (_, seq) = r.segment_id.rsplit_once('/').expect("segment id");
        let seq: u64 = seq.parse().expect("sequence");
        // The receipt names the object the index counts as verified ...
        let (_, _, o) = rows
            .iter()
            .find(|(c, s, _)| c == "cam-r" && *s == seq)
            .expect("only an offloaded record is freed");
        let (media_key, sha) = o.media.as_ref().expect("a segment's media");
        let named = r.offloaded.as_ref().expect("the receipt names the object");
        assert_eq!(&named.key, media_key);
        assert_eq!(named.store, o.store);
        assert_eq!(named.sha256, manifest::hex(sha));
        // ... which is the sealed media its signed manifest describes, in
        // the store; the local copy is gone, its manifest stays.
        let name = format!("{seq:010}");
        assert!(!dir.join(format!("{name}.mp4.age")).exists());
        let env = Envelope::open(
            &std::fs::read(dir.join(format!("{name}.json"))).expect("manifest stays"),
            Some(&device),
        )
        .expect("manifest");
        let m: Manifest = serde_json::from_str(&env.payload).expect("manifest");
        let media = m.media.expect("segment");
        assert_eq!(named.sha256, media.ciphertext_sha256);
        assert_eq!(r.ciphertext_sha256, media.ciphertext_sha256);
        let object = reader.get(media_key);
        assert_eq!(manifest::sha256_hex(&object), named.sha256);
        assert!(object.starts_with(b"age-encryption.org/v1\n"));
        // The index says it is deleted, with this receipt's reason.
        let row = idx.record("cam-r", seq).expect("read").expect("row");
        assert_eq!(row.deleted.map(|d| d.reason), Some("offloaded".to_owned()));
    }
    // Chains, receipts and index agree.
    let cfg = home.config_path();
    let (ok, out, err) = sargs(&["verify", "--config", cfg.to_str().expect("utf-8")]);
    assert!(ok, "sargs verify accepts the freed records: {out}{err}");
}
