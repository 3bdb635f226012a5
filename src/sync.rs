//! The agent's one rule for a lock whose holder panicked: take the lock and
//! go on.
//!
//! Every mutex in the agent guards state that is whole between critical
//! sections: the retention engine's changes are SQLite transactions (a
//! panic rolls them back), an outbox's queue and a camera's open-segment
//! slot are replaced in single assignments, counters and flags are plain
//! values. A panicking thread therefore leaves the value as it was before or
//! after one whole step, never between, and refusing to use it would only
//! stop recording or reporting — the one thing a panic elsewhere must not
//! do. Production code never panics while holding a lock by design (no
//! `unwrap` on outside input); this rule is for the panic nobody foresaw.
//!
//! One exception keeps its own rule: the sealing writer of an open segment
//! (`capture::segment`) fails the segment instead, because a panic inside
//! the age writer could leave a chunk half written, and a segment is sealed
//! whole or salvaged by HQ, never continued.

use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};

/// Locks `m`, waiting for it; a poisoned lock is taken as it is.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Locks `m` if it is free; `None` if another thread holds it. A poisoned
/// lock is taken as it is.
pub fn try_lock<T>(m: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    match m.try_lock() {
        Ok(g) => Some(g),
        Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
}
