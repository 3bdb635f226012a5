//! Virtual-hosted addressing (`offload.addressing = "virtual-host"`): the
//! agent sends every request to `https://BUCKET.ENDPOINT/KEY`, as cloud
//! stores require, and its records reach the store verified. Garage
//! answers virtual-hosted requests under its `root_domain`
//! (`.s3.garage.localhost`); the agent runs in a mount namespace of its own
//! whose `/etc/hosts` names only the bucket's host, on 127.0.0.1 (the
//! suite runs as root, as it does for its FUSE disks), so that nothing of
//! the machine's own resolver is changed.

use std::process::Stdio;

use crate::harness::*;
use crate::offload::{
    offload_table, offloaded, offloaded_count, offloading_camera, Reader, BUCKET,
};
use crate::support::garage::Garage;

#[test]
fn records_reach_the_store_through_virtual_hosted_addressing() {
    let g = Garage::start();
    let key = g.bucket_with_key(BUCKET);
    let home = Home::new();
    let path_style = g.endpoint();
    let port = path_style.rsplit(':').next().expect("port");
    let host = format!("http://s3.garage.localhost:{port}");
    let table = offload_table(&home, &g, &key)
        .replace(&path_style, &host)
        .replace("[offload]\n", "[offload]\naddressing = \"virtual-host\"\n");
    home.config(2, &(offloading_camera("cam-v") + &table));
    // Only the bucket's own host name resolves: a path-style request (to
    // s3.garage.localhost) could not even connect.
    let hosts = home.path().join("hosts");
    std::fs::write(
        &hosts,
        format!("127.0.0.1 localhost {BUCKET}.s3.garage.localhost\n"),
    )
    .expect("hosts");

    // `sargs run`, as the harness starts it, inside `unshare --mount`.
    let inner = bin_command(env!("CARGO_BIN_EXE_sargs"));
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg("mount --bind \"$0\" /etc/hosts && exec \"$@\"")
        .arg(&hosts)
        .arg(inner.get_program())
        .args(inner.get_args())
        .args(["run", "--config"])
        .arg(home.config_path())
        .env("SARGS_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log_file(&home));
    let mut agent = Spawned(cmd.spawn().expect("unshare"));
    let went = wait_until(RECORDING, || offloaded_count(&home) >= 2);
    let _ = agent.0.kill();
    let _ = agent.0.wait();
    let log = std::fs::read_to_string(home.path().with_extension("log")).unwrap_or_default();
    assert!(went, "two records offloaded through {host}:\n{log}");
    // The objects are where the index says, read path-style by the test.
    let reader = Reader::new(&g, &key);
    let listed = reader.list();
    for (cam, seq, o) in offloaded(&home) {
        assert_eq!(o.store, format!("{host}/{BUCKET}"), "{cam}/{seq}");
        assert!(listed.contains(&o.manifest_key), "{}", o.manifest_key);
        let (media, _) = o.media.expect("a segment's media");
        assert!(reader.get(&media).starts_with(b"age-encryption.org/v1\n"));
    }
}
