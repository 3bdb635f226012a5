//! Recovery: what a crash or a busy engine left half done is completed from
//! the files — deletions from their receipts, the index from the chains.

use chrono::Duration as D;

use super::*;
use sargs_core::retention::receipt::Reason;

#[test]
fn deletions_interrupted_after_their_receipts_are_completed_at_start() {
    let mut f = Fixture::new();
    let t = t0();
    let a = f.seal(0, t, 60);
    let b = f.seal(0, t + D::seconds(60), 60);
    // Write the receipts as a sweep would, then "crash" before unlinking.
    {
        let e = f.retention.lock();
        let rows = e
            .index
            .due(t + day(31), None, 10)
            .expect("due")
            .into_iter()
            .map(|(r, _)| r)
            .collect::<Vec<_>>();
        assert_eq!(rows.len(), 2);
        let mut receipts: Vec<_> = rows
            .iter()
            .map(|r| sargs_core::retention::receipt::Receipt {
                v: 1,
                record: "deletion".into(),
                sequence: 0,
                agent_id: AGENT.into(),
                segment_id: r.segment_id(AGENT),
                camera_id: r.camera.clone(),
                segment_start: r.start,
                segment_end: r.end,
                class: r.class.clone(),
                delete_after: r.delete_after,
                manifest_sha256: sargs_core::seal::manifest::hex(&r.manifest_sha256),
                ciphertext_sha256: String::new(),
                ciphertext_bytes: r.bytes,
                deleted_at: t + day(31),
                reason: Reason::RetentionExpired,
                command_id: None,
                offloaded: None,
                clock: SyncState::Synchronised,
                prev_receipt_sha256: String::new(),
            })
            .collect();
        let head = e.receipt_head.clone();
        e.receipts
            .append(&e.key, &head, &mut receipts)
            .expect("receipts");
    }
    assert!(f.media_exists(&a) && f.media_exists(&b));
    f.events.take();
    f.restart();
    assert!(
        !f.media_exists(&a) && !f.media_exists(&b),
        "completed from the receipts"
    );
    // The crash may have come before HQ's copy of the receipts was queued:
    // start-up queues them (again).
    let mut resent: Vec<String> = f
        .events
        .take_receipts()
        .into_iter()
        .map(|r| r.segment_id)
        .collect();
    resent.sort();
    let mut ids = vec![a.clone(), b.clone()];
    ids.sort();
    assert_eq!(
        resent, ids,
        "each completed receipt is handed to HQ's outbox"
    );
    f.audit_ok();
}

#[test]
fn reindex_rebuilds_the_same_state_from_files_alone() {
    let mut f = Fixture::new();
    let t = t0();
    let held = f.seal(0, t, 60);
    f.seal(0, t + D::seconds(60), 60);
    f.seal(1, t, 60);
    f.apply(
        Action::HoldPlace {
            hold: "H".into(),
            case: "c".into(),
            scope: Scope::Segments(vec![held.clone()]),
            until: None,
            offload: false,
        },
        t,
    );
    f.apply(
        Action::RequestOpen {
            request: "R".into(),
            scope: Fixture::range(1, t, t + day(1)),
            due: None,
        },
        t,
    );
    f.sweep(t + day(31));
    // reindex reports at the real time; compare at the real time.
    let before = f.retention.status(crate::clock::now()).expect("status");
    let Fixture {
        dir,
        config,
        key,
        events,
        capacity,
        ..
    } = f;
    // Lose the index entirely, then rebuild it from the files.
    let data = config.agent.data_dir.clone();
    for name in ["index.sqlite", "index.sqlite-wal", "index.sqlite-shm"] {
        let _ = std::fs::remove_file(data.join(name));
    }
    let setup = Setup {
        agent_id: AGENT.into(),
        data_dir: data.clone(),
        key: key.clone(),
        policy: config.policy.clone(),
        settings: config.retention,
        command_keys: config.command_keys.clone(),
        events: events.clone(),
        free_space: Box::new(|| Ok(u64::MAX)),
        offload_store: false,
    };
    let mut rebuilt = Retention::reindex(setup).expect("reindex");
    rebuilt.at = before.at;
    rebuilt.last_sweep = before.last_sweep.clone();
    assert_eq!(rebuilt.classes.len(), before.classes.len());
    for (a, b) in rebuilt.classes.iter().zip(&before.classes) {
        assert_eq!(
            (&a.class, a.segments, a.bytes),
            (&b.class, b.segments, b.bytes)
        );
    }
    assert_eq!(rebuilt.deleted, before.deleted);
    assert_eq!(rebuilt.holds, before.holds);
    assert_eq!(rebuilt.requests_open, before.requests_open);
    assert_eq!(rebuilt.receipts, before.receipts);
    let r = open(&config, &key, &events, &capacity, false);
    drop(r);
    let a = crate::retention::audit::audit(&data, AGENT, &key.public_key()).expect("audit");
    assert!(a.ok(), "{:?}", a.problems);
    drop(dir);
}

#[test]
fn a_record_sealed_while_the_engine_is_busy_is_indexed_behind_later_ones() {
    let mut f = Fixture::new();
    let t = t0();
    let retention = f.retention.clone();
    // Another camera's record (or a sweep) holds the engine: the first
    // record is left for the catch-up.
    let busy = retention.lock();
    f.seal(0, t, 60);
    drop(busy);
    // The next record comes while the engine is free.
    f.seal(0, t + D::seconds(60), 60);
    let e = retention.lock();
    let due = e.index.due(t + day(31), None, 10).expect("due");
    assert_eq!(due.len(), 2, "both records are indexed, so both fall due");
    assert_eq!(e.index.camera_head(CAMS[0]).expect("head"), 2);
}

/// `sargs verify` beside a writer (the agent, or `sargs apply`, deleting
/// while it reads): whatever instants its reads fall on, a deletion in
/// progress shows as the index behind its receipts, never as a deletion
/// or a missing file without a receipt.
#[test]
fn an_audit_beside_deletions_never_finds_a_deletion_without_its_receipt() {
    let mut f = Fixture::new();
    let t = t0();
    for i in 0..80 {
        f.seal(0, t + D::seconds(60 * i), 60);
    }
    let retention = f.retention.clone();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = done.clone();
    // One record per deletion, as fast as the disk allows, until the
    // audits below are done.
    let deleter = std::thread::spawn(move || {
        let mut deleted = 0;
        while !stop.load(Ordering::SeqCst) {
            let gone = retention.run(|e| {
                let rows: Vec<_> = e
                    .index
                    .due(t + day(60), None, 1)
                    .expect("due")
                    .into_iter()
                    .map(|(r, _)| r)
                    .collect();
                e.delete(&rows, Reason::RetentionExpired, None, t + day(60))
                    .expect("delete")
                    .len()
            });
            if gone == 0 {
                break;
            }
            deleted += gone;
        }
        deleted
    });
    let mut wrong = Vec::new();
    for _ in 0..20 {
        let a = crate::retention::audit::audit(&f.data_dir(), AGENT, &f.key.public_key())
            .expect("audit");
        // Receipts only grow: read after the audit, they name all it saw.
        let chain = sargs_core::retention::receipt::verify_chain(
            &f.data_dir().join("receipts"),
            &f.key.public_key(),
        )
        .expect("chain");
        let receipted = |line: &str| {
            chain
                .deleted
                .iter()
                .any(|id| line.contains(&format!("{id} ")))
        };
        let all = a
            .problems
            .iter()
            .chain(a.cameras.iter().flat_map(|(_, r)| r.problems.iter()));
        for p in all {
            // The one state a deletion passes through that an audit may
            // name: its receipt and unlink done, the index not yet marked.
            if !(p.contains("is indexed as present but") && receipted(p)) {
                wrong.push(p.clone());
            }
        }
    }
    done.store(true, Ordering::SeqCst);
    let deleted = deleter.join().expect("deleter");
    assert!(
        wrong.is_empty(),
        "{} wrong finding(s): {wrong:#?}",
        wrong.len()
    );
    assert!(deleted > 0, "nothing was deleted beside the audits");
    f.audit_ok();
}
