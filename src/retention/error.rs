//! The engine's errors, each naming the file or database and the cause.
//!
//! SQLite reports every failed read, write or fsync of the index as "disk
//! I/O error", which does not tell a failing card (EIO) from a full disk
//! (ENOSPC) or a file system remounted read-only (EROFS). Invariant: an
//! index error that SQLite traces to the OS carries what the OS said and
//! the operation ([`OsNote`]): taken from the connection right after the
//! failure (`sqlite3_system_errno`, which SQLite sets only on such a
//! failure), or, when the index could not even be opened, from opening its
//! file the same way. So `sweep.failed` and every other report of the index
//! names the index's path, the operation and the OS error.

use std::path::{Path, PathBuf};

use rusqlite::{ffi, Connection, ErrorCode};

/// Retention engine errors: always name the file or database and the cause.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("index {path}: {source}{os}")]
    Index {
        path: PathBuf,
        source: rusqlite::Error,
        /// What the OS said, when SQLite's error came from it.
        os: OsNote,
    },
    #[error("{0}")]
    Corrupt(String),
}

impl RetentionError {
    /// An error of the index at `path` on `conn` (see the module's
    /// invariant); `conn` is `None` when the index could not be opened.
    pub(crate) fn index(path: &Path, conn: Option<&Connection>, source: rusqlite::Error) -> Self {
        let os = match conn {
            Some(c) if from_os(&source) => system_errno(c, &source),
            None if from_os(&source) => probe(path),
            _ => OsNote::default(),
        };
        RetentionError::Index {
            path: path.to_owned(),
            source,
            os,
        }
    }
}

/// The operation and OS error behind an index error, shown after it as
/// ` (write: Input/output error (os error 5))`; empty when there is none.
#[derive(Debug, Default)]
pub struct OsNote(Option<(&'static str, std::io::Error)>);

impl OsNote {
    /// The OS error, if there is one.
    pub fn error(&self) -> Option<&std::io::Error> {
        self.0.as_ref().map(|(_, e)| e)
    }
}

impl std::fmt::Display for OsNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some((op, e)) => write!(f, " ({op}: {e})"),
            None => Ok(()),
        }
    }
}

/// Whether SQLite's error can have come from a failed OS call.
fn from_os(e: &rusqlite::Error) -> bool {
    // SQLite keeps the errno of these two only (`sqlite3SystemError`); a
    // full disk or a read-only database says so in its own words.
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if matches!(f.code, ErrorCode::SystemIoFailure | ErrorCode::CannotOpen))
}

/// The errno SQLite kept of the failure that `e` reports, with the
/// operation its extended code names.
fn system_errno(conn: &Connection, e: &rusqlite::Error) -> OsNote {
    // SAFETY: the handle is valid while `conn` is borrowed, and
    // `sqlite3_system_errno` only reads the connection's last OS error.
    let errno = unsafe { ffi::sqlite3_system_errno(conn.handle()) };
    if errno == 0 {
        return OsNote::default();
    }
    let op = match e {
        rusqlite::Error::SqliteFailure(f, _) => operation(f.extended_code),
        _ => "I/O",
    };
    OsNote(Some((op, std::io::Error::from_raw_os_error(errno))))
}

/// What opening the index's file for reading and writing says (the index
/// could not be opened: SQLite kept no connection to ask).
fn probe(path: &Path) -> OsNote {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
    {
        Ok(_) => OsNote::default(),
        Err(e) => OsNote(Some(("open", e))),
    }
}

/// The operation an SQLite extended I/O error code names.
fn operation(extended: std::os::raw::c_int) -> &'static str {
    match extended {
        ffi::SQLITE_IOERR_READ | ffi::SQLITE_IOERR_SHORT_READ => "read",
        ffi::SQLITE_IOERR_WRITE => "write",
        ffi::SQLITE_IOERR_FSYNC => "fsync",
        ffi::SQLITE_IOERR_DIR_FSYNC => "directory fsync",
        ffi::SQLITE_IOERR_TRUNCATE => "truncate",
        ffi::SQLITE_IOERR_FSTAT => "fstat",
        ffi::SQLITE_IOERR_DELETE => "delete",
        ffi::SQLITE_IOERR_SHMOPEN | ffi::SQLITE_IOERR_SHMSIZE | ffi::SQLITE_IOERR_SHMMAP => {
            "shared memory"
        }
        ffi::SQLITE_CANTOPEN => "open",
        _ => "I/O",
    }
}
