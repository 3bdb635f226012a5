//! Power loss: what of the disk survives a power cut. The mounted view
//! behaves as a disk whose cache is never lost (it is the backing
//! directory); beside it this module keeps the *durable* state — what a
//! disk must still hold after the power fails — and at a cut
//! ([`Disk::cut`](super::Disk::cut), then
//! [`Disk::restore`](super::Disk::restore)) the backing directory is
//! rewritten to exactly that state.
//!
//! The model is what `fsync` promises, and no more — what a Linux file
//! system (ext4 `data=ordered` among them) is sure to keep:
//! - a regular file's durable content is its content (and length, and
//!   mode) at its last `fsync`/`fdatasync` — through any handle of the
//!   file, read-only ones too — or after each write through a handle
//!   opened `O_SYNC`/`O_DSYNC`; a file never synced is durable empty;
//! - a directory's durable entries (name → inode) are its entries at its
//!   last `fsync`: a create, rename, link or unlink not followed by an
//!   fsync of each directory it changed is undone (the created file is
//!   gone, the renamed file is back under its old name, the unlinked one
//!   reappears with its durable content); a directory never synced is
//!   durable empty (a `mkdir` is an entry of its parent like any other);
//! - what the disk held when it was mounted is durable.
//!
//! Inodes are the backing file system's (a number it gives anew moves the
//! durable state of its former inode aside, `Power::born`), so a file
//! keeps its durable content across renames and hard links; a durable
//! directory entry whose inode was never synced is an empty file (or
//! directory). A rename between two directories synced
//! separately may leave the file under both names (two links): a state an
//! fsync-based program must survive as well.
//!
//! Limits: the disk has no `link` (it answers EPERM), so two names of one
//! inode come only from such renames; `sync()`/`syncfs()` are not passed
//! to a FUSE file system and count for nothing here (a conservative reading); what an operation
//! makes durable that a real file system might keep by chance (ext4's
//! journal commits a rename with an fsync of the renamed file, in
//! practice) is not kept — a power cut here loses the most POSIX allows,
//! not what a given disk usually loses; partial writes inside a file
//! (torn pages) and reordered data within one synced range are not
//! modelled: a file is either as of its last sync or its current state
//! when synced. Memory-mapped writes reach the model only through a sync,
//! as other writes do.
//!
//! Invariant: after [`Power::restore`], the backing directory holds
//! exactly the durable tree reachable from its root — every other byte
//! and name is gone — and the tree held when mounted stays durable until
//! an fsync replaces part of it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirEntryExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// An inode's durable state.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Node {
    File {
        mode: u32,
        data: Arc<Vec<u8>>,
    },
    Dir {
        mode: u32,
        entries: BTreeMap<OsString, u64>,
    },
    Symlink {
        target: PathBuf,
    },
}

#[derive(Default)]
struct State {
    /// Set at the cut: nothing after it is durable.
    cut: bool,
    root: u64,
    nodes: HashMap<u64, Node>,
    file_syncs: u64,
    dir_syncs: u64,
    /// The next key for the durable node of an inode whose number the
    /// backing file system gave to a new one.
    next_dead: u64,
}

/// The durable state of one mounted disk.
#[derive(Default)]
pub(super) struct Power {
    state: Mutex<State>,
}

/// What a power cut took away, compared with the view before it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Lost {
    /// Files whose content went back to an older one (or to empty).
    pub files_reverted: usize,
    /// Names the view had that are gone (creates, renames' new names).
    pub names_gone: usize,
    /// Names that are back (unlinks, renames' old names).
    pub names_back: usize,
    /// File and directory fsyncs seen while mounted.
    pub file_syncs: u64,
    pub dir_syncs: u64,
}

/// The durable node of an inode never synced, from its metadata.
fn fresh(path: &Path, meta: &std::fs::Metadata) -> Node {
    let mode = meta.mode() & 0o7777;
    if meta.is_dir() {
        Node::Dir {
            mode,
            entries: BTreeMap::new(),
        }
    } else if meta.file_type().is_symlink() {
        Node::Symlink {
            target: std::fs::read_link(path).unwrap_or_default(),
        }
    } else {
        Node::File {
            mode,
            data: Arc::default(),
        }
    }
}

fn same_kind(a: &Node, b: &Node) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

impl Power {
    /// The model of `backing` as it is now, all of it durable.
    pub(super) fn snapshot(backing: &Path) -> std::io::Result<Power> {
        let mut state = State {
            root: std::fs::metadata(backing)?.ino(),
            ..State::default()
        };
        let mut todo = vec![backing.to_owned()];
        while let Some(path) = todo.pop() {
            let meta = std::fs::symlink_metadata(&path)?;
            let mut node = fresh(&path, &meta);
            match &mut node {
                Node::File { data, .. } => *data = Arc::new(std::fs::read(&path)?),
                Node::Dir { entries, .. } => {
                    for e in std::fs::read_dir(&path)? {
                        let e = e?;
                        entries.insert(e.file_name(), e.ino());
                        todo.push(e.path());
                    }
                }
                Node::Symlink { .. } => {}
            }
            state.nodes.insert(meta.ino(), node);
        }
        Ok(Power {
            state: Mutex::new(state),
        })
    }

    /// The state to record a sync in, unless the power was cut.
    fn live(&self) -> std::io::Result<Option<std::sync::MutexGuard<'_, State>>> {
        let s = self
            .state
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?;
        Ok((!s.cut).then_some(s))
    }

    /// An fsync of the open `file`: its content now is durable.
    pub(super) fn sync_file(&self, file: &File) -> std::io::Result<()> {
        // The handle may be write-only: the inode is read through /proc
        // (which reaches it even unlinked).
        // Read under the lock: two syncs of one file land in order.
        let Some(mut s) = self.live()? else {
            return Ok(());
        };
        let fd = format!("/proc/self/fd/{}", file.as_raw_fd());
        let meta = file.metadata()?;
        let data = std::fs::read(&fd)?;
        s.file_syncs += 1;
        s.nodes.insert(
            meta.ino(),
            Node::File {
                mode: meta.mode() & 0o7777,
                data: Arc::new(data),
            },
        );
        Ok(())
    }

    /// An fsync of the directory at `path`: its entries now are durable.
    pub(super) fn sync_dir(&self, path: &Path) -> std::io::Result<()> {
        let Some(mut s) = self.live()? else {
            return Ok(());
        };
        let meta = std::fs::metadata(path)?;
        let mut listed = Vec::new();
        for e in std::fs::read_dir(path)? {
            let e = e?;
            // Gone since it was listed: not an entry now.
            let Ok(child) = std::fs::symlink_metadata(e.path()) else {
                continue;
            };
            listed.push((e.file_name(), child.ino(), fresh(&e.path(), &child)));
        }
        s.dir_syncs += 1;
        let mut entries = BTreeMap::new();
        for (name, ino, node) in listed {
            // An inode never synced is durable empty.
            let known = s.nodes.get(&ino).is_some_and(|n| same_kind(n, &node));
            if !known {
                s.nodes.insert(ino, node);
            }
            entries.insert(name, ino);
        }
        s.nodes.insert(
            meta.ino(),
            Node::Dir {
                mode: meta.mode() & 0o7777,
                entries,
            },
        );
        Ok(())
    }

    /// Runs `make`, which creates a file or directory and returns its
    /// inode number. A number the backing file system reuses (ext4 does,
    /// tmpfs not) named an inode now unlinked from the view: its durable
    /// state moves to a key of its own, where its durable names find it.
    pub(super) fn born<T, E>(&self, make: impl FnOnce() -> Result<(T, u64), E>) -> Result<T, E> {
        let Ok(mut s) = self.state.lock() else {
            return make().map(|(t, _)| t);
        };
        let (t, ino) = make()?;
        if let Some(old) = s.nodes.remove(&ino) {
            s.next_dead += 1;
            let dead = (1 << 63) | s.next_dead;
            for node in s.nodes.values_mut() {
                if let Node::Dir { entries, .. } = node {
                    entries
                        .values_mut()
                        .filter(|i| **i == ino)
                        .for_each(|i| *i = dead);
                }
            }
            s.nodes.insert(dead, old);
        }
        Ok(t)
    }

    /// The power fails now: no later sync is durable.
    pub(super) fn cut(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.cut = true;
        }
    }

    /// Rewrites `backing` (unmounted) to the durable state: what the cut
    /// took away.
    pub(super) fn restore(&self, backing: &Path) -> std::io::Result<Lost> {
        let s = self
            .state
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?;
        let before = tree(backing)?;
        for e in std::fs::read_dir(backing)? {
            let p = e?.path();
            if std::fs::symlink_metadata(&p)?.is_dir() {
                std::fs::remove_dir_all(&p)?;
            } else {
                std::fs::remove_file(&p)?;
            }
        }
        let mut made: HashMap<u64, PathBuf> = HashMap::new();
        let mut dirs_seen = HashSet::from([s.root]);
        let mut todo = vec![(s.root, backing.to_owned())];
        while let Some((ino, dir)) = todo.pop() {
            let Some(Node::Dir { mode, entries }) = s.nodes.get(&ino) else {
                continue;
            };
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(*mode))?;
            for (name, child) in entries {
                let path = dir.join(name);
                match s.nodes.get(child) {
                    Some(Node::File { mode, data }) => {
                        if let Some(first) = made.get(child) {
                            std::fs::hard_link(first, &path)?;
                            continue;
                        }
                        std::fs::write(&path, &**data)?;
                        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode))?;
                        made.insert(*child, path);
                    }
                    // A directory under two names (a rename between two
                    // directories synced apart): the first name only.
                    Some(Node::Dir { .. }) if dirs_seen.insert(*child) => {
                        std::fs::create_dir(&path)?;
                        todo.push((*child, path));
                    }
                    Some(Node::Symlink { target }) => std::os::unix::fs::symlink(target, &path)?,
                    _ => {}
                }
            }
        }
        let after = tree(backing)?;
        let mut lost = Lost {
            file_syncs: s.file_syncs,
            dir_syncs: s.dir_syncs,
            ..Lost::default()
        };
        for (path, content) in &before {
            match after.get(path) {
                None => lost.names_gone += 1,
                Some(c) if c != content => lost.files_reverted += 1,
                Some(_) => {}
            }
        }
        lost.names_back = after.keys().filter(|p| !before.contains_key(*p)).count();
        Ok(lost)
    }
}

/// Every path under `root` with its content (`None` for a directory or a
/// symlink).
fn tree(root: &Path) -> std::io::Result<BTreeMap<PathBuf, Option<Vec<u8>>>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_owned()];
    while let Some(dir) = todo.pop() {
        for e in std::fs::read_dir(&dir)? {
            let e = e?;
            let rel = e.path().strip_prefix(root).map(Path::to_owned);
            let rel = rel.unwrap_or_else(|_| e.path());
            let ft = e.file_type()?;
            if ft.is_dir() {
                todo.push(e.path());
                out.insert(rel, None);
            } else if ft.is_symlink() {
                out.insert(rel, None);
            } else {
                out.insert(rel, Some(std::fs::read(e.path())?));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
#[path = "power_tests.rs"]
mod tests;
