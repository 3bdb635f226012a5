//! Opening a sealed segment at HQ: the age v1 reader that `sargsctl decrypt`
//! and `sargsctl export` share (feature `open`).
//!
//! Reading is the `age` crate's: the agent only ever writes (with `ring`,
//! [`super::age`]) and holds no identity, so this module is compiled into
//! HQ's tools and never into the agent.
//!
//! Every chunk of an age stream is authenticated on its own. A segment cut
//! short by a power loss lacks its final chunk; with `salvage` the plaintext
//! of every whole chunk before the cut is returned and the cut is reported
//! in [`Opened::cut_short`], so nothing that can be proved is lost. Without
//! it, a stream that does not authenticate to its end is an error.

use std::io::{Read, Write};
use std::path::Path;

/// HQ's identities, as read from an identity file.
pub type Identities = Vec<Box<dyn age::Identity + Send + Sync>>;

/// Why a sealed segment could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// None of the identities is among the file's recipients.
    #[error("none of the identities is a recipient of this file")]
    NoKey,
    /// The age header is missing, malformed or does not authenticate
    /// (the reason names which).
    #[error("{0}")]
    Header(String),
    /// The stream stops authenticating (cut short, or altered) after
    /// `after` bytes of plaintext.
    #[error("{reason} after {after} bytes")]
    Stream { after: u64, reason: String },
    /// Writing the plaintext failed.
    #[error("{0}")]
    Output(#[source] std::io::Error),
}

/// What was opened.
#[derive(Debug)]
pub struct Opened {
    /// Plaintext bytes written.
    pub bytes: u64,
    /// SHA-256 of the plaintext written.
    pub sha256: [u8; 32],
    /// With `salvage`: why the stream ended before its final chunk, if it
    /// did; what was written is every whole chunk before that.
    pub cut_short: Option<String>,
}

/// Reads an age identity file (`age -i` format). An empty file is an error.
pub fn read_identities(path: &Path) -> Result<Identities, String> {
    let ids = age::IdentityFile::from_file(path.display().to_string())
        .map_err(|e| e.to_string())?
        .into_identities()
        .map_err(|e| e.to_string())?;
    if ids.is_empty() {
        return Err("holds no age identity".into());
    }
    Ok(ids)
}

/// Decrypts the age stream `input` into `out` with `ids`.
pub fn decrypt_to(
    input: impl Read,
    ids: &[Box<dyn age::Identity + Send + Sync>],
    out: &mut impl Write,
    salvage: bool,
) -> Result<Opened, OpenError> {
    let dec = age::Decryptor::new_buffered(std::io::BufReader::with_capacity(1 << 16, input))
        .map_err(|e| OpenError::Header(format!("age header: {e}")))?;
    let mut reader = dec
        .decrypt(ids.iter().map(|i| i.as_ref() as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => OpenError::NoKey,
            e => OpenError::Header(e.to_string()),
        })?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut bytes = 0u64;
    let mut cut_short = None;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                out.write_all(&buf[..n]).map_err(OpenError::Output)?;
                ctx.update(&buf[..n]);
                bytes += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if salvage => {
                cut_short = Some(e.to_string());
                break;
            }
            Err(e) => {
                return Err(OpenError::Stream {
                    after: bytes,
                    reason: e.to_string(),
                })
            }
        }
    }
    let mut sha256 = [0u8; 32];
    sha256.copy_from_slice(ctx.finish().as_ref());
    Ok(Opened {
        bytes,
        sha256,
        cut_short,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seal::age::AgeWriter;
    use crate::seal::Recipient;

    fn sealed(plain: &[u8]) -> (Vec<u8>, Identities) {
        let id = age::x25519::Identity::generate();
        let r: Recipient = id.to_public().to_string().parse().expect("recipient");
        let mut w = AgeWriter::new(Vec::new(), &[r]).expect("writer");
        w.write_all(plain).expect("write");
        let (ct, _) = w.finish().expect("finish");
        (ct, vec![Box::new(id)])
    }

    #[test]
    fn opens_what_the_writer_sealed_and_hashes_it() {
        let plain: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let (ct, ids) = sealed(&plain);
        let mut out = Vec::new();
        let o = decrypt_to(&ct[..], &ids, &mut out, false).expect("open");
        assert_eq!(out, plain);
        assert_eq!(o.bytes, plain.len() as u64);
        assert_eq!(
            &o.sha256[..],
            ring::digest::digest(&ring::digest::SHA256, &plain).as_ref()
        );
        assert!(o.cut_short.is_none());
    }

    #[test]
    fn a_stream_cut_short_fails_or_is_salvaged_to_its_last_whole_chunk() {
        let plain = vec![9u8; 3 * 65536 + 100];
        let (ct, ids) = sealed(&plain);
        let cut = &ct[..ct.len() - 5_000];
        let mut out = Vec::new();
        match decrypt_to(cut, &ids, &mut out, false) {
            Err(OpenError::Stream { after, .. }) => assert_eq!(after % 65536, 0),
            other => panic!("expected a stream error, got {other:?}"),
        }
        let mut out = Vec::new();
        let o = decrypt_to(cut, &ids, &mut out, true).expect("salvage");
        assert!(o.cut_short.is_some());
        assert_eq!(o.bytes % 65536, 0);
        assert!(o.bytes >= 2 * 65536, "{} bytes salvaged", o.bytes);
        assert_eq!(out, plain[..out.len()]);
    }

    #[test]
    fn another_identity_is_refused_as_no_key() {
        let (ct, _) = sealed(b"x");
        let other: Identities = vec![Box::new(age::x25519::Identity::generate())];
        let mut out = Vec::new();
        assert!(matches!(
            decrypt_to(&ct[..], &other, &mut out, false),
            Err(OpenError::NoKey)
        ));
    }
}
