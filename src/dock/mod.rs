//! Body-camera dock ingest: take the recordings off a docked camera, seal
//! them like any segment, and free the camera only when nothing can be lost.
//!
//! # Invariant
//!
//! **A file is removed from the camera only after its sealed copy, its
//! manifest and its index row are durable and the sealed copy, read back
//! from the disk, has the hash that was written** — and only if the path
//! still names the very file that was read (same device, inode, size and
//! modification time). Until then the camera keeps it; with
//! `dock.keep_originals` it keeps it for good. Each original is sealed at
//! most once per camera chain: one already sealed (same SHA-256 of the
//! original bytes, under any name) is recognised and not sealed again.
//!
//! The order for one file (see [`ingest`]):
//! 1. the original is read once, in 1 MiB blocks; one thread hashes it
//!    (SHA-256 of the original), another seals the same bytes through the
//!    store's age writer into `N.mp4.age.ingest` (the original bytes exactly:
//!    no remux, no re-encode; no plaintext byte is written anywhere), with a
//!    CRC-32 of the ciphertext; a third reads the sealed copy back from the
//!    disk behind the writer ([`readback`]);
//! 2. the sealed file is finished and fsynced, and the rest of it read back:
//!    the SHA-256 the manifest signs is that of the bytes read back, given
//!    only if their length and CRC-32 are those written; the original must
//!    still have the size and time it had when opened;
//! 3. an original already in the index (same hash) ends here: the new copy
//!    is removed, the original counts as sealed;
//! 4. (the read-back of step 2 is what proves the sealed copy intact);
//! 5. the container is probed (GStreamer discoverer: start, duration,
//!    codec); a file that does not parse is sealed all the same and flagged;
//! 6. the signed manifest is committed in the store's durability order
//!    (manifest, rename to `N.mp4.age`, `HEAD`) and indexed at once
//!    (waiting for the retention engine, never skipped);
//! 7. the original is removed from the camera (unless kept by config).
//!
//! An interruption anywhere — the camera pulled out mid-copy, `kill -9`,
//! power loss, a full disk — loses nothing and duplicates nothing: before 6
//! the `.ingest` file is removed (at once, or by recovery at the next start)
//! and the original is still on the camera; after 6 the record exists and the
//! next dock recognises the original by name, size and hash and only removes
//! it. A file whose copy fails stays on the camera for the next dock.
//!
//! # Time
//!
//! A body camera records only when its officer starts it, and its files
//! reach the gateway when it is docked, in path order. Its chain therefore
//! follows the ingests, not the wall clock: each record states its own
//! recording interval and no gap record tiles the time between recordings
//! (`docs/format.md`, "Body cameras"; `sargs verify` checks these records
//! for sane intervals and for originals sealed twice instead).
//!
//! # Dock mode
//!
//! `sargs run` with `[dock] paths` watches those directories ([`watch`]);
//! each subdirectory is a docked camera's storage, named by its serial.
//! `sargs ingest --from DIR --camera ID` runs one session by hand.
//! Several docked cameras are ingested at once, up to `dock.workers` (the
//! cores by default), at a lower scheduling priority than live recording.
//! Directories are polled rather than watched with inotify: a camera's file
//! system is mounted over a directory, which inotify on the dock path does
//! not report, and a listing of a few directories every few seconds costs
//! nothing.

pub mod copy;
pub mod direct;
pub mod ingest;
pub mod manual;
pub mod probe;
pub mod readback;
pub mod scan;
pub mod watch;

pub use ingest::{Quiet, Session, Watch};

use crate::events::Finished;

/// The gateway's host name, for the manifest's `dock.gateway`.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into our buffer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

impl Session<'_> {
    /// One whole session on the camera docked at `dir`: its clock, its
    /// recordings, each ingested. A dock that cannot be listed ends the
    /// session at once (reported like any interruption).
    pub fn ingest_dir(&self, log: &mut crate::store::CameraLog, dir: &std::path::Path) -> Finished {
        let offset = match scan::clock_offset(dir, self.settings, crate::clock::now()) {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(camera = %self.body.camera.id, error = %e,
                    "the camera's clock file is unreadable; its clock offset is not recorded");
                None
            }
        };
        match scan::recordings(dir, self.settings) {
            Ok(files) => self.run(log, dir, &files, offset),
            Err(e) => self.unreadable(format!("cannot list {}: {e}", dir.display())),
        }
    }
}
