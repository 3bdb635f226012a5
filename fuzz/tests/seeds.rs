//! The seeds reach the end of their parsers: signed with the key the
//! targets trust, sealed to the identity they hold, timed around their
//! instant, accepted by HQ's ledger. A seed refused at its first check
//! would leave the fuzzer outside the code it is meant to explore.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::PathBuf;

use sargs_core::command::{self, Trust};
use sargs_core::seal::open;
use sargs_fuzz::fixture::{self, AGENT, KEY_B64};
use sargs_hq::service::db::{self, Db};
use sargs_hq::service::ingest::{self, Outcome, Rules};

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = sargs_fuzz::target(target).expect("target").corpus();
    sargs_fuzz::inputs(&[dir])
        .expect("corpus")
        .into_iter()
        .map(|p: PathBuf| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).expect("read"))
        })
        .collect()
}

#[test]
fn signed_commands_verify_with_the_trusted_test_key() {
    let dir = fixture::scratch("seeds-test").unwrap();
    let trust = Trust::new(vec![fixture::key(dir.path()).unwrap().public_key()]);
    let envelopes: Vec<_> = corpus("command_envelope")
        .into_iter()
        .filter(|(n, _)| n.ends_with(".env") && n != "expired.env")
        .collect();
    assert!(envelopes.len() >= 10, "{} signed commands", envelopes.len());
    for (name, bytes) in envelopes {
        command::verify(&bytes, &trust, AGENT, fixture::now())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn sealed_segments_open_with_the_test_identity() {
    let ids = fixture::identities().unwrap();
    let seeds = corpus("age");
    let get = |n: &str| &seeds.iter().find(|(name, _)| name == n).expect(n).1;
    let short = open::decrypt_to(&get("short.age")[..], &ids, &mut std::io::sink(), false)
        .expect("short.age opens");
    assert_eq!(short.bytes, 200);
    let cut = open::decrypt_to(&get("cut-short.age")[..], &ids, &mut std::io::sink(), true)
        .expect("cut-short.age is salvaged");
    assert_eq!(cut.bytes, 65_536);
    assert!(cut.cut_short.is_some());
}

#[tokio::test]
async fn hq_messages_are_kept_by_the_ledger() {
    let dir = fixture::scratch("seeds-test").unwrap();
    let db = Db::open(&format!("sqlite://{}", dir.path().join("hq.db").display()))
        .await
        .unwrap();
    sargs_hq::service::agents::add(&db.pool, AGENT, KEY_B64, "site", "test", "hq")
        .await
        .unwrap();
    let rules = Rules {
        prefix: fixture::PREFIX.into(),
        max_payload_bytes: 1 << 20,
        trust: Trust::new(vec![fixture::key_public()]),
    };
    let mut kept = 0;
    for (name, bytes) in corpus("hq_message") {
        // Single messages, signed (the target signs those with an empty `sig`).
        if bytes.contains(&0) || name.ends_with(".unsigned") {
            continue;
        }
        let i = bytes.iter().position(|&b| b == b'\n').unwrap();
        let topic = std::str::from_utf8(&bytes[..i]).unwrap();
        let mut tx = db::write(&db.pool).await.unwrap();
        let o = ingest::ingest(&mut tx, &rules, topic, &bytes[i + 1..], fixture::now())
            .await
            .unwrap();
        tx.rollback().await.unwrap();
        assert_eq!(o, Outcome::Kept, "{name}");
        kept += 1;
    }
    assert!(kept >= 10, "{kept} messages kept");
}
