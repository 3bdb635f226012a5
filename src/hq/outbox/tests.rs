//! The outbox against a real directory: order, durability, overflow, and
//! batches the disk refuses.

use super::*;

fn entry(p: &str) -> Entry {
    Entry::new("t", p.to_owned())
}

fn drain(o: &Outbox) -> Vec<String> {
    let mut out = Vec::new();
    while let Some((pos, e)) = o.peek().expect("peek") {
        out.push(e.payload);
        o.ack(pos).expect("ack");
    }
    out
}

#[test]
fn entries_survive_reopen_leave_in_order_and_overflow_drops_the_oldest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = Outbox::open(dir.path(), 3).expect("open");
    for i in 1..=2 {
        o.push("t", &format!("m{i}")).expect("push");
    }
    drop(o);
    let o = Outbox::open(dir.path(), 3).expect("reopen");
    assert_eq!(o.depth(), 2);
    let (pos, e) = o.peek().expect("peek").expect("entry");
    assert_eq!((pos.file, e.payload.as_str()), (1, "m1"));
    o.ack(pos).expect("ack");
    assert_eq!(o.peek().expect("peek").expect("entry").1.payload, "m2");
    for i in 3..=5 {
        o.push("t", &format!("m{i}")).expect("push");
    }
    assert_eq!(o.depth(), 3);
    assert_eq!(o.dropped(), 1);
    assert_eq!(drain(&o), ["m3", "m4", "m5"]);
}

#[test]
fn a_batch_is_one_file_sent_in_order_and_resent_whole_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = Outbox::open(dir.path(), 10).expect("open");
    let mut response = entry("response");
    response.correlation = Some("Y29ycg==".into());
    o.push_batch(&[response.clone(), entry("event")])
        .expect("batch");
    o.push("t", "later").expect("push");
    assert_eq!(o.depth(), 2, "a batch is one file");
    assert_eq!(o.push_batch(&[]).expect("empty batch"), 0);
    assert_eq!(o.depth(), 2, "an empty batch writes nothing");

    // The first message is acknowledged, then the agent stops.
    let (pos, e) = o.peek().expect("peek").expect("entry");
    assert_eq!(e, response);
    o.ack(pos).expect("ack");
    assert_eq!(o.peek().expect("peek").expect("next").1.payload, "event");
    // A repeated acknowledgement changes nothing.
    o.ack(pos).expect("ack again");
    assert_eq!(o.peek().expect("peek").expect("next").1.payload, "event");
    drop(o);

    // At least once: the unfinished batch is sent again from its start.
    let o = Outbox::open(dir.path(), 10).expect("reopen");
    assert_eq!(drain(&o), ["response", "event", "later"]);
    assert_eq!(o.depth(), 0);
    let left = std::fs::read_dir(dir.path().join("outbox"))
        .expect("dir")
        .count();
    assert_eq!(left, 0, "acknowledged files are removed");
}

#[test]
fn a_file_of_the_earlier_single_message_format_is_sent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("outbox");
    fsutil::create_private_dir(&out).expect("dir");
    std::fs::write(
        out.join("000000000007.json"),
        br#"{"topic":"sargs/agents/gw/responses","payload":"{\"v\":1}"}"#,
    )
    .expect("old entry");
    std::fs::write(out.join("000000000008.json"), b"{torn").expect("torn entry");
    let o = Outbox::open(dir.path(), 10).expect("open");
    let (_, e) = o.peek().expect("peek").expect("old entry read");
    assert_eq!(e.topic, "sargs/agents/gw/responses");
    assert_eq!(drain(&o), ["{\"v\":1}"]);
    assert!(
        out.join("000000000008.corrupt").exists(),
        "an unreadable file is set aside, not deleted"
    );
}

#[test]
fn the_broker_acknowledged_numbers_are_kept_per_camera_and_for_receipts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = Outbox::open(dir.path(), 10).expect("open");
    let numbered = |n: Numbered| Entry {
        numbered: Some(n),
        ..entry("numbered")
    };
    let record = |camera: &str, sequence| Numbered::Record {
        camera: camera.into(),
        sequence,
    };
    o.push_batch(&[
        numbered(record("cam-a", 7)),
        numbered(Numbered::Receipt { sequence: 3 }),
    ])
    .expect("batch");
    o.push_batch(&[numbered(record("cam-a", 6)), numbered(record("cam-b", 2))])
        .expect("batch");
    // Queued and even sent is not acknowledged.
    let (first, _) = o.peek().expect("peek").expect("entry");
    assert_eq!(o.acknowledged(), Acknowledged::default());
    o.ack(first).expect("ack");
    assert_eq!(o.acknowledged().records["cam-a"], 7);
    drop(o);
    // The numbering survives in the files: after a restart the
    // acknowledgements of what was left still count.
    let o = Outbox::open(dir.path(), 10).expect("reopen");
    drain(&o);
    let a = o.acknowledged();
    assert_eq!(a.records["cam-a"], 7, "the highest, not the last");
    assert_eq!(a.records["cam-b"], 2);
    assert_eq!(a.receipts, Some(3));
    assert_eq!(
        serde_json::to_value(&a).expect("json"),
        serde_json::json!({"records": {"cam-a": 7, "cam-b": 2}, "receipts": 3})
    );
}

#[test]
fn a_batch_the_disk_refuses_is_sent_from_memory_and_written_once_the_disk_takes_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = Outbox::open(dir.path(), 10).expect("open");
    o.push("t", "before").expect("push");
    // The disk refuses the next file: a directory where its temporary
    // file would go (as EIO, ENOSPC or EROFS would refuse it).
    let blocked = dir.path().join("outbox/000000000002.json.tmp");
    std::fs::create_dir(&blocked).expect("block");
    o.push("t", "alarm").expect("kept in memory, not an error");
    assert!(!dir.path().join("outbox/000000000002.json").exists());
    assert_eq!(o.depth(), 2);
    // Sent in its place in the order.
    let (pos, e) = o.peek().expect("peek").expect("first");
    assert_eq!(e.payload, "before");
    o.ack(pos).expect("ack");
    assert_eq!(o.peek().expect("peek").expect("held").1.payload, "alarm");
    // The disk takes writes again: the next push writes the held batch too.
    std::fs::remove_dir(&blocked).expect("unblock");
    o.push("t", "after").expect("push");
    assert!(dir.path().join("outbox/000000000002.json").exists());
    drop(o);
    let o = Outbox::open(dir.path(), 10).expect("reopen");
    assert_eq!(drain(&o), ["alarm", "after"]);
}

#[test]
fn the_memory_lane_and_the_link_never_wait_on_a_push_the_disk_holds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = Outbox::open(dir.path(), 8).expect("open");
    o.push("t", "queued").expect("push");
    // A push whose write the disk holds keeps the files' lock.
    let held = o.lock();
    o.push_unblocked(vec![entry("stalled")]);
    assert!(
        o.try_peek().is_none(),
        "the link does not wait for the files"
    );
    assert!(o.try_counts().is_none(), "nor does telemetry");
    assert_eq!(o.lane().front().map(|e| e.payload), Some("stalled".into()));
    o.lane().ack();
    assert_eq!(o.lane().front(), None);
    drop(held);
    assert_eq!(drain(&o), ["queued"], "the files are untouched by the lane");
    assert!(
        !dir.path().join("outbox").read_dir().expect("dir").any(|e| {
            std::fs::read_to_string(e.expect("entry").path())
                .unwrap_or_default()
                .contains("stalled")
        })
    );
}
