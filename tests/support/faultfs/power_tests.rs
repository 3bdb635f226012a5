//! The power-loss model on a real FUSE mount: each case does its
//! operations through the mount, cuts the power, and reads the backing
//! directory rewritten to what was durable.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::super::Disk;

/// A scratch directory with `backing/` (holding `old`, "durable", from
/// before the mount) and `mnt/`.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::tempdir().expect("scratch directory");
        std::fs::create_dir(dir.path().join("backing")).expect("backing");
        std::fs::write(dir.path().join("backing/old"), b"durable").expect("old");
        Scratch { dir }
    }

    fn backing(&self) -> PathBuf {
        self.dir.path().join("backing")
    }

    fn mount(&self) -> Disk {
        Disk::mount_power(&self.backing(), &self.dir.path().join("mnt"))
    }

    fn read(&self, rel: &str) -> Option<Vec<u8>> {
        std::fs::read(self.backing().join(rel)).ok()
    }
}

/// fsync of a file or directory, through a read-only handle.
fn sync(path: &Path) {
    File::open(path)
        .and_then(|f| f.sync_all())
        .unwrap_or_else(|e| panic!("fsync {}: {e}", path.display()));
}

fn append(path: &Path, bytes: &[u8]) {
    OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .unwrap_or_else(|e| panic!("append to {}: {e}", path.display()));
}

/// Writes "replaced" to `old` atomically (temp file synced, renamed over
/// it) without syncing the directory, and makes `sub/f` ("y"), synced with
/// `sub`, without syncing `sub`'s parent.
fn replace_old_and_make_sub(m: &Path) {
    std::fs::write(m.join("old.tmp"), b"replaced").expect("write");
    sync(&m.join("old.tmp"));
    std::fs::rename(m.join("old.tmp"), m.join("old")).expect("rename");
    std::fs::create_dir(m.join("sub")).expect("mkdir");
    std::fs::write(m.join("sub/f"), b"y").expect("write");
    sync(&m.join("sub/f"));
    sync(&m.join("sub"));
}

#[test]
fn file_contents_are_as_of_their_last_fsync() {
    let s = Scratch::new();
    let disk = s.mount();
    let m = disk.mount.clone();
    // Written, entry synced, data never synced: an empty file.
    std::fs::write(m.join("unsynced"), b"lost").expect("write");
    // Written and synced, then more written: the synced part only.
    std::fs::write(m.join("synced"), b"kept").expect("write");
    sync(&m.join("synced"));
    append(&m.join("synced"), b" and lost");
    sync(&m);
    // The file there at the mount, appended without a sync: as mounted.
    append(&m.join("old"), b" then lost");
    // A write through an O_DSYNC handle is synced by itself.
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DSYNC)
        .open(m.join("dsync"))
        .expect("open O_DSYNC");
    f.write_all(b"at once").expect("write");
    sync(&m);
    assert_eq!(
        std::fs::read(m.join("synced")).expect("view"),
        b"kept and lost"
    );
    disk.cut();
    // Nothing may hold the disk open when it is unmounted.
    drop(f);
    let lost = disk.restore().expect("restore");
    assert_eq!(s.read("unsynced").as_deref(), Some(&b""[..]));
    assert_eq!(s.read("synced").as_deref(), Some(&b"kept"[..]));
    assert_eq!(s.read("old").as_deref(), Some(&b"durable"[..]));
    assert_eq!(s.read("dsync").as_deref(), Some(&b"at once"[..]));
    assert_eq!(lost.files_reverted, 3, "{lost:?}");
    assert_eq!((lost.names_gone, lost.names_back), (0, 0), "{lost:?}");
}

#[test]
fn names_are_as_of_their_directory_s_last_fsync() {
    let s = Scratch::new();
    let disk = s.mount();
    let m = disk.mount.clone();
    // Created and synced, its directory not: gone.
    std::fs::write(m.join("new"), b"x").expect("write");
    sync(&m.join("new"));
    // The atomic replace without the directory's fsync: undone. A
    // directory made, a file synced in it and the directory synced, but not
    // its parent: all gone.
    replace_old_and_make_sub(&m);
    disk.cut();
    // After the cut nothing is durable.
    sync(&m);
    let lost = disk.restore().expect("restore");
    assert_eq!(s.read("new"), None);
    assert_eq!(s.read("old.tmp"), None);
    assert_eq!(s.read("old").as_deref(), Some(&b"durable"[..]));
    assert!(!s.backing().join("sub").exists());
    assert_eq!(lost.names_gone, 3, "new, sub, sub/f: {lost:?}");
    assert_eq!(lost.files_reverted, 1, "old: {lost:?}");
}

#[test]
fn synced_names_last_and_unlinks_need_their_directory_s_fsync() {
    let s = Scratch::new();
    let disk = s.mount();
    let m = disk.mount.clone();
    // The atomic replace, whole (the directory synced below): the new
    // content under the old name.
    replace_old_and_make_sub(&m);
    std::fs::write(m.join("gone"), b"z").expect("write");
    sync(&m);
    // Unlinked (and the data rewritten) after the syncs: back as synced.
    std::fs::write(m.join("sub/f"), b"changed").expect("write");
    std::fs::remove_file(m.join("sub/f")).expect("unlink");
    // Unlinked, the directory synced: gone for good.
    std::fs::remove_file(m.join("gone")).expect("unlink");
    sync(&m);
    disk.cut();
    let lost = disk.restore().expect("restore");
    assert_eq!(s.read("old").as_deref(), Some(&b"replaced"[..]));
    assert_eq!(s.read("old.tmp"), None);
    assert_eq!(s.read("sub/f").as_deref(), Some(&b"y"[..]));
    assert_eq!(s.read("gone"), None);
    assert_eq!(lost.names_back, 1, "sub/f: {lost:?}");
    assert_eq!((lost.names_gone, lost.files_reverted), (0, 0), "{lost:?}");
    // The restored tree is the durable state of the next mount.
    let disk = s.mount();
    std::fs::remove_file(disk.mount.join("old")).expect("unlink");
    disk.cut();
    disk.restore().expect("restore");
    assert_eq!(s.read("old").as_deref(), Some(&b"replaced"[..]));
}
