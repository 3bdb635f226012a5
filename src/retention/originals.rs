//! Ingested recordings in the index: each record that sealed a docked
//! camera's file notes its original (SHA-256, name, size), so a dock
//! recognises a file it already sealed — by its hash, or cheaply by name and
//! size and then by its hash — and seals it only once. Like every row this is
//! derived from the chains (`sargs reindex` rebuilds it from the manifests'
//! `dock` objects).

use super::{Engine, Retention, RetentionError};
use sargs_core::retention::index;
use sargs_core::seal::manifest::{self, Manifest};

impl Retention {
    /// Indexes a sealed record now, waiting for the engine if it is busy:
    /// for a caller that may act only once the index row is durable (a dock
    /// removes a camera's original only after that).
    pub fn index_now(&self, manifest: &Manifest, payload: &str) -> Result<(), RetentionError> {
        let mut engine = self.lock();
        if !engine.index_manifest(manifest, payload)? {
            // Earlier records are not indexed yet: index the chains up to this one.
            engine.index_chains()?;
        }
        Ok(())
    }

    /// The record of `camera` that sealed an original with this SHA-256.
    pub fn sealed_original(
        &self,
        camera: &str,
        sha256: &[u8; 32],
    ) -> Result<Option<u64>, RetentionError> {
        let engine = self.lock();
        engine
            .index
            .original_by_hash(camera, sha256)
            .map_err(engine.db_err())
    }

    /// Records of `camera` that sealed an original of this name and size.
    pub fn sealed_originals_named(
        &self,
        camera: &str,
        name: &str,
        bytes: u64,
    ) -> Result<Vec<(u64, [u8; 32])>, RetentionError> {
        let engine = self.lock();
        engine
            .index
            .originals_named(camera, name, bytes)
            .map_err(engine.db_err())
    }
}

impl Engine {
    /// Indexes one record (and the original it sealed, for an ingest) in
    /// one committed transaction — only if it follows the camera's last
    /// indexed record: a record after a hole (one the indexer skipped while
    /// the engine was busy) is left to the catch-up, which indexes from the
    /// hole on, so that the index never has holes a catch-up cannot see.
    /// Returns whether it was indexed.
    pub(crate) fn index_manifest(
        &mut self,
        m: &Manifest,
        payload: &str,
    ) -> Result<bool, RetentionError> {
        let head = self
            .index
            .camera_head(&m.camera_id)
            .map_err(self.db_err())?;
        if m.sequence > head + 1 {
            return Ok(false);
        }
        let row = self.row_from_manifest(m, payload);
        let original = original_of(m);
        self.write(|w| w.insert_with(&row, original.as_ref()))?;
        Ok(true)
    }
}

/// The original an ingested record sealed, as the index keeps it.
pub(super) fn original_of(m: &Manifest) -> Option<index::Original> {
    let d = m.dock.as_ref()?;
    Some(index::Original {
        sha256: manifest::unhex32(&d.original_sha256)?,
        name: d.original_name.clone(),
        bytes: d.original_bytes,
    })
}
