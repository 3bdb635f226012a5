//! The faults and what each answers to an operation on a path (the FUSE
//! file system in `fs` asks before it passes an operation through).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Condvar, Mutex};

use fuser::Errno;

/// One fault, on the files whose relative path contains `pattern`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    WriteEio { pattern: String },
    ReadEio { pattern: String },
    NoSpace { budget: u64 },
    Stall { pattern: String },
    ReadOnly,
}

#[derive(Default)]
pub(super) struct Control {
    pub(super) fault: Mutex<Option<Fault>>,
    pub(super) cleared: Condvar,
    /// Faulted operations: "op path" → count.
    pub(super) hits: Mutex<BTreeMap<String, u64>>,
}

impl Control {
    pub(super) fn hit(&self, op: &str, rel: &Path) {
        if let Ok(mut h) = self.hits.lock() {
            *h.entry(format!("{op} {}", rel.display())).or_default() += 1;
        }
    }

    pub(super) fn fault(&self) -> Option<Fault> {
        self.fault.lock().ok().and_then(|f| f.clone())
    }

    /// Whether a change (not a write of data) is refused: EROFS, or
    /// ENOSPC for a new file or directory once the budget is spent.
    pub(super) fn refuse_change(&self, op: &str, rel: &Path, creates: bool) -> Option<Errno> {
        match self.fault()? {
            Fault::ReadOnly => {
                self.hit(op, rel);
                Some(Errno::EROFS)
            }
            Fault::NoSpace { budget: 0 } if creates => {
                self.hit(op, rel);
                Some(Errno::ENOSPC)
            }
            _ => None,
        }
    }

    /// The answer to a write of `len` bytes: how many to write, or the error.
    pub(super) fn on_write(&self, rel: &Path, len: usize) -> Result<usize, Errno> {
        let matches = |p: &str| rel.to_string_lossy().contains(p);
        let Ok(mut f) = self.fault.lock() else {
            return Err(Errno::EIO);
        };
        match &mut *f {
            Some(Fault::WriteEio { pattern }) if matches(pattern) => {}
            Some(Fault::ReadOnly) => {
                drop(f);
                self.hit("write", rel);
                return Err(Errno::EROFS);
            }
            Some(Fault::NoSpace { budget }) => {
                if *budget == 0 {
                    drop(f);
                    self.hit("write", rel);
                    return Err(Errno::ENOSPC);
                }
                let n = len.min(*budget as usize);
                *budget -= n as u64;
                return Ok(n);
            }
            Some(Fault::Stall { pattern }) if matches(pattern) => {
                drop(f);
                self.hit("write", rel);
                self.wait_cleared();
                return Ok(len);
            }
            _ => return Ok(len),
        }
        drop(f);
        self.hit("write", rel);
        Err(Errno::EIO)
    }

    /// The answer to an fsync of `rel`.
    pub(super) fn on_sync(&self, rel: &Path) -> Result<(), Errno> {
        let matches = |p: &str| rel.to_string_lossy().contains(p);
        match self.fault() {
            Some(Fault::WriteEio { pattern }) if matches(&pattern) => {
                self.hit("fsync", rel);
                Err(Errno::EIO)
            }
            Some(Fault::ReadOnly) => {
                self.hit("fsync", rel);
                Err(Errno::EROFS)
            }
            Some(Fault::Stall { pattern }) if matches(&pattern) => {
                self.hit("fsync", rel);
                self.wait_cleared();
                Ok(())
            }
            _ => Ok(()),
        }
    }

    pub(super) fn on_read(&self, rel: &Path) -> Result<(), Errno> {
        match self.fault() {
            Some(Fault::ReadEio { pattern }) if rel.to_string_lossy().contains(&pattern) => {
                self.hit("read", rel);
                Err(Errno::EIO)
            }
            _ => Ok(()),
        }
    }

    /// Waits until no stall is set.
    pub(super) fn wait_cleared(&self) {
        let Ok(f) = self.fault.lock() else { return };
        let _released = self
            .cleared
            .wait_while(f, |f| matches!(f, Some(Fault::Stall { .. })));
    }
}
