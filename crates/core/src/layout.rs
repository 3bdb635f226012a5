//! The data directory's names that both sides read: the agent writes them,
//! HQ's `sargsctl verify` and `export` read a copy of the directory.
//!
//! ```text
//! DATA_DIR/
//!   index.sqlite                      INDEX_FILE (the retention index)
//!   cameras/CAMERA/0000000042.mp4.age MEDIA_EXT  (a sealed segment)
//!   cameras/CAMERA/0000000043.mp4.age.partial    PARTIAL_EXT (being sealed)
//! ```
//!
//! The full layout and who owns each part is in `docs/format.md`.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// The retention index, at the top of the data directory.
pub const INDEX_FILE: &str = "index.sqlite";

/// A sealed segment's file extension.
pub const MEDIA_EXT: &str = "mp4.age";

/// A segment being sealed (renamed to [`MEDIA_EXT`] once durable); one left
/// by a crash is salvaged or removed at start-up.
pub const PARTIAL_EXT: &str = "mp4.age.partial";

/// How far apart (ms) one record's end and the next one's start may be and
/// still count as contiguous; a larger hole is a gap, a larger overlap an
/// error in the chain.
pub const CONTIGUITY_TOLERANCE_MS: i64 = 2_000;

/// SHA-256 of a file's bytes, read in 64 KiB blocks.
pub fn sha256_file(path: &Path) -> io::Result<[u8; 32]> {
    let mut f = File::open(path)?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    Ok(out)
}
