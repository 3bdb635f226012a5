//! The target for what HQ's service accepts from the broker: a topic and a
//! payload, prepared as the collector prepares them (topic, size, JSON, the
//! signed envelope of a record or receipt checked against the enrolled key)
//! and kept in a ledger (SQLite, in the scratch directory) by the same
//! ingest the collector runs, in a transaction rolled back after each input.
//!
//! An input is a batch of up to [`MAX_BATCH`] messages separated by NUL
//! bytes, each the topic, a newline, and the payload; the batch is kept in
//! one transaction, as the collector keeps what the broker handed over
//! together (so a record and its receipt, or a message and its redelivery,
//! meet). An event whose envelope has an empty `sig` is signed with the
//! test key (the key the ledger has enrolled for agent `gw-01`) before it
//! is handed over, so that what lies behind the signature check is fuzzed
//! too; every other message is handed over as it is.
//!
//! Invariant: the ledger is the same before every input (each transaction is
//! rolled back), so an input gives the same result whatever came before it.

use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::Value;

use sargs_core::command::Trust;
use sargs_core::seal::sign::DeviceKey;
use sargs_hq::service::db::{self, Db};
use sargs_hq::service::ingest::{Batch, Rules};
use sargs_hq::service::prepare::{Body, Prepared};

use crate::fixture::{self, AGENT, KEY_B64, PREFIX};
use crate::Harness;

/// The most messages one input holds.
pub const MAX_BATCH: usize = 16;

pub struct HqMessage {
    _dir: tempfile::TempDir,
    url: String,
    key: DeviceKey,
    rules: Rules,
    /// Made in the process that runs the inputs, at its first input (a
    /// fuzzer's fork server forks after the target is made, and threads do
    /// not survive a fork).
    live: OnceLock<Result<(tokio::runtime::Runtime, Db), String>>,
}

impl HqMessage {
    pub fn make() -> Result<Box<dyn Harness>, String> {
        let dir = fixture::scratch("hq_message")?;
        let key = fixture::key(dir.path())?;
        let file: PathBuf = dir.path().join("hq.db");
        let url = format!("sqlite://{}", file.display());
        Ok(Box::new(HqMessage {
            _dir: dir,
            url,
            key,
            rules: Rules {
                prefix: PREFIX.into(),
                max_payload_bytes: 1 << 20,
                trust: Trust::new(vec![fixture::key_public()]),
            },
            live: OnceLock::new(),
        }))
    }

    /// The payload, its envelope signed with the test key if its `sig` is
    /// empty.
    fn signed(&self, payload: &[u8]) -> Option<Vec<u8>> {
        let mut v: Value = serde_json::from_slice(payload).ok()?;
        let env = v.get_mut("envelope")?.as_object_mut()?;
        if env.get("sig").and_then(Value::as_str) != Some("") {
            return None;
        }
        let text = env.get("payload")?.as_str()?;
        let signed = serde_json::to_value(self.key.sign(text)).ok()?;
        *v.get_mut("envelope")? = signed;
        serde_json::to_vec(&v).ok()
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))
}

impl Harness for HqMessage {
    fn run(&self, data: &[u8]) {
        let prepared: Vec<Prepared> = data
            .split(|&b| b == 0)
            .take(MAX_BATCH)
            .map(|message| {
                let (topic, payload) = match message.iter().position(|&b| b == b'\n') {
                    Some(i) => (&message[..i], &message[i + 1..]),
                    None => (message, &[][..]),
                };
                // As the collector reads the topic of what the broker hands over.
                let topic = String::from_utf8_lossy(topic).into_owned();
                let resigned = self.signed(payload);
                Prepared::new(&self.rules, &topic, resigned.as_deref().unwrap_or(payload))
            })
            .collect();
        for p in &prepared {
            if let Body::Json {
                signed: Some(Ok(s)),
                ..
            } = &p.body
            {
                let _ = s.check(KEY_B64);
            }
        }

        // The ledger: made (migrated, the test agent enrolled) by the first
        // process, opened by the next ones.
        let live = self.live.get_or_init(|| {
            let rt = runtime()?;
            let db = rt.block_on(async {
                let db = Db::open(&self.url).await.map_err(|e| e.to_string())?;
                sargs_hq::service::agents::add(&db.pool, AGENT, KEY_B64, "site", "fuzzing", "hq")
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<Db, String>(db)
            })?;
            Ok((rt, db))
        });
        // A ledger that cannot be opened is the harness's failure, not the
        // input's: loud, so that a run never passes without reaching it.
        let (rt, db) = match live {
            Ok(live) => live,
            Err(e) => panic!("the test ledger: {e}"),
        };
        rt.block_on(async {
            let mut tx = match db::write(&db.pool).await {
                Ok(tx) => tx,
                Err(e) => panic!("the test ledger: begin: {e}"),
            };
            // As the collector commits a batch (collector.rs, `commit`); a
            // database error ends the batch, as it ends the collector's
            // transaction.
            let refs: Vec<&Prepared> = prepared.iter().collect();
            if let Ok(mut batch) = Batch::begin(&mut tx, &refs).await {
                let mut failed = false;
                for p in &refs {
                    if batch
                        .ingest(&mut tx, &self.rules, p, fixture::now())
                        .await
                        .is_err()
                    {
                        failed = true;
                        break;
                    }
                }
                if !failed {
                    let _ = batch.finish(&mut tx, fixture::now()).await;
                }
            }
            if let Err(e) = tx.rollback().await {
                panic!("the test ledger: rollback: {e}");
            }
        });
    }
}
