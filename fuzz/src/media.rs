//! Targets for media: a sealed segment opened at HQ (the age header, then
//! the stream, whole or salvaged when cut short), and a file a body camera
//! left on its storage, probed by the dock.
//!
//! Invariant: any bytes, whatever their length, give an opened stream or an
//! error naming why; never a panic, and never a wait on the input.

use std::path::PathBuf;

use sargs_core::seal::open::{self, Identities};

use crate::fixture;
use crate::Harness;

/// A sealed segment opened with HQ's identity, as `sargsctl decrypt` does
/// without and with `--salvage`.
pub struct AgeTarget {
    ids: Identities,
}

impl AgeTarget {
    pub fn make() -> Result<Box<dyn Harness>, String> {
        Ok(Box::new(AgeTarget {
            ids: fixture::identities()?,
        }))
    }
}

impl Harness for AgeTarget {
    fn run(&self, data: &[u8]) {
        for salvage in [false, true] {
            let _ = open::decrypt_to(data, &self.ids, &mut std::io::sink(), salvage);
        }
    }
}

/// A docked file: the bytes written to a file in the scratch directory
/// (one file, reused), and the dock's probe run on it.
pub struct DockProbe {
    _dir: tempfile::TempDir,
    file: PathBuf,
}

impl DockProbe {
    pub fn make() -> Result<Box<dyn Harness>, String> {
        let dir = fixture::scratch("dock_probe")?;
        Ok(Box::new(DockProbe {
            file: dir.path().join("VID_0001.MP4"),
            _dir: dir,
        }))
    }
}

impl Harness for DockProbe {
    fn run(&self, data: &[u8]) {
        // GStreamer is started in the process that probes (once; after the
        // fuzzer's fork, as its threads do not survive one), as the agent
        // starts it before its dock runs.
        if let Err(e) = sargs::capture::init() {
            panic!("{e}");
        }
        if std::fs::write(&self.file, data).is_ok() {
            let _ = sargs::dock::probe::probe(&self.file);
        }
    }
}
