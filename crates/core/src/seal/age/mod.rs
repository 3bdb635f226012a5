//! Streaming age v1 encryption (age-encryption.org/v1, X25519 recipients) on `ring`.
//!
//! # Format
//!
//! ```text
//! age-encryption.org/v1
//! -> X25519 <base64 ephemeral share>
//! <base64 wrapped file key>
//! --- <base64 header MAC>
//! <16-byte payload nonce><STREAM chunks…>
//! ```
//!
//! * A random 16-byte *file key* is wrapped once per recipient: a fresh ephemeral
//!   X25519 key agrees with the recipient's public key; the wrap key is
//!   HKDF-SHA256(ikm = shared secret, salt = ephemeral share ‖ recipient key,
//!   info = `age-encryption.org/v1/X25519`), and the stanza body is the file key
//!   sealed with ChaCha20-Poly1305 under that key and an all-zero nonce.
//! * Base64 is standard, unpadded; stanza bodies are wrapped at 64 columns and the
//!   last body line is always shorter than 64 (possibly empty).
//! * The header MAC is HMAC-SHA256 with key HKDF(ikm = file key, salt = empty,
//!   info = `header`) over the header up to and including `---` (not the space after).
//! * The payload key is HKDF(ikm = file key, salt = payload nonce, info = `payload`).
//!   The plaintext is cut into [`CHUNK_SIZE`] chunks, each sealed with
//!   ChaCha20-Poly1305 under nonce = 11-byte big-endian chunk counter ‖ last-chunk
//!   flag (`0x01` on the final chunk only). Only an empty payload has an empty final
//!   chunk; a payload that ends on a chunk boundary ends with a full, flagged chunk.
//!
//! # Invariant (crash salvage)
//!
//! A chunk is sealed and handed to the inner writer as soon as it is full *and* at
//! least one more plaintext byte has arrived (only then is it known not to be the
//! last), so every complete 64 KiB of video reaches the disk without waiting for
//! [`AgeWriter::finish`]. At most one chunk (≤ 64 KiB) of plaintext is ever held in
//! memory, and no plaintext byte is ever written to the inner writer. A writer
//! dropped without `finish` leaves a stream that is truncated before its final
//! chunk: every whole chunk in it still authenticates on its own, so HQ can salvage
//! the recording up to the last whole chunk. This is intended; there is no `Drop`
//! that tries to finish.
//!
//! The SHA-256 of every byte written to the inner writer (header included) is
//! computed on the way and returned in the [`SealSummary`] — or, for a writer
//! made with [`Check::Crc32`], only a CRC-32 of those bytes: its caller takes
//! the SHA-256 from the bytes read back from the disk instead (dock ingest,
//! which reads every sealed copy back anyway), and the CRC tells whether
//! those are the bytes that were written. Such a writer only gives an
//! [`Unhashed`] summary, which becomes a [`SealSummary`] only with a digest.
//!
//! # Invariant (secrets in memory)
//!
//! Every secret byte held in this module's own memory is in a
//! [`Zeroizing`] buffer, wiped when it goes out of scope on every path: a
//! normal return, an early return through `?`, and unwinding from a panic.
//! Those buffers are the file key, the stanza body while it still holds the
//! file key in clear, and every HKDF output (the wrap key, the header MAC key,
//! the payload key), which is expanded into our buffer before ring's key
//! object is made from it. The X25519 shared secret is never copied into our
//! memory: ring lends it to the HKDF extract and keeps it in its own buffer.
//! What lives inside ring's own types (the ephemeral X25519 scalar, the HKDF
//! PRK, the `hmac::Key` and the payload `LessSafeKey` the writer keeps for the
//! whole stream) is ring's; ring does not wipe it on drop and sargs cannot.
//! With `panic = "abort"` nothing is dropped, so nothing is wiped on a panic.
//!
//! # `ring` only
//!
//! Sealing uses only `ring` (X25519, HKDF-SHA256, HMAC-SHA256,
//! ChaCha20-Poly1305, SHA-256 and the system random generator); no other
//! crypto crate is on the sealing path. The `age` crate is used by sargs only
//! for decryption at HQ, in tests (this writer's output is checked against it
//! and against the `age` CLI), and for making HQ's identity in `crate::keys`
//! (feature `keygen`; the agent calls it only for `sargs demo`). Its
//! encryptor is not used: it pulls in a second crypto backend (RustCrypto),
//! and on the edge we want one audited provider and streaming with the
//! chunk-level durability above.

use std::io::{self, Write};

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine as _;
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use ring::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey, X25519};
use ring::digest::{self, SHA256};
use ring::hkdf::{self, HKDF_SHA256};
use ring::hmac::{self, HMAC_SHA256};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use super::recipient::Recipient;

/// Plaintext bytes per STREAM chunk (the last chunk may be shorter).
pub const CHUNK_SIZE: usize = 64 * 1024;

const TAG_LEN: usize = 16;
const FILE_KEY_LEN: usize = 16;
const PAYLOAD_NONCE_LEN: usize = 16;
const VERSION_LINE: &str = "age-encryption.org/v1";
const X25519_INFO: &[u8] = b"age-encryption.org/v1/X25519";
const BODY_COLUMNS: usize = 64;
/// HKDF-SHA256 output length: a ChaCha20-Poly1305 or HMAC-SHA256 key.
const KEY_LEN: usize = 32;

/// Why sealing failed.
#[derive(Debug, thiserror::Error)]
pub enum AgeError {
    #[error("I/O error while writing the sealed stream: {0}")]
    Io(#[from] io::Error),
    #[error("no recipients: a stream must be sealed to at least one key")]
    NoRecipients,
    #[error("crypto failure: {0}")]
    Crypto(&'static str),
    /// Every call after a failed one: the stream has a hole. Names the first
    /// failure (a full disk stays a full disk in the message and its kind).
    #[error(
        "an earlier write failed ({cause}); the sealed stream is truncated and cannot be finished"
    )]
    Poisoned { kind: io::ErrorKind, cause: String },
}

/// What was written, known once the stream is finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealSummary {
    /// Plaintext bytes sealed.
    pub plaintext_len: u64,
    /// Bytes handed to the inner writer, header included.
    pub ciphertext_len: u64,
    /// SHA-256 of those bytes.
    pub ciphertext_sha256: [u8; 32],
    /// STREAM chunks written (at least 1).
    pub chunks: u64,
}

/// What a writer computes over the bytes it hands to its inner writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// SHA-256 (the digest a manifest signs).
    Sha256,
    /// CRC-32 only, for a caller that hashes the bytes read back from the disk.
    Crc32,
}

enum Hasher {
    Sha256(Box<digest::Context>),
    Crc32(crc32fast::Hasher),
}

/// What a [`Check::Crc32`] writer wrote: everything of a [`SealSummary`] but
/// the SHA-256, which only the bytes read back can supply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unhashed {
    pub plaintext_len: u64,
    pub ciphertext_len: u64,
    /// CRC-32 (IEEE) of every byte handed to the inner writer.
    pub ciphertext_crc32: u32,
    pub chunks: u64,
}

impl Unhashed {
    /// The summary of the stream whose bytes have this SHA-256.
    pub fn with_sha256(&self, ciphertext_sha256: [u8; 32]) -> SealSummary {
        SealSummary {
            plaintext_len: self.plaintext_len,
            ciphertext_len: self.ciphertext_len,
            ciphertext_sha256,
            chunks: self.chunks,
        }
    }
}

/// An age v1 encryptor that seals everything written to it into `inner`.
///
/// Call [`finish`](Self::finish) to write the final chunk; see the module docs for
/// what a writer dropped without it leaves behind.
pub struct AgeWriter<W: Write> {
    inner: W,
    key: LessSafeKey,
    /// Plaintext of the current chunk in `[..filled]`, room for the tag after it.
    buf: Box<[u8]>,
    filled: usize,
    /// Index of the next chunk to seal.
    counter: u64,
    hasher: Hasher,
    plaintext_len: u64,
    ciphertext_len: u64,
    /// The first failure, once one happened: every later call repeats it.
    failed: Option<(io::ErrorKind, String)>,
}

impl<W: Write> AgeWriter<W> {
    /// Writes the header (one stanza per recipient, each with a fresh ephemeral key)
    /// and the payload nonce to `inner`, ready for plaintext.
    pub fn new(inner: W, recipients: &[Recipient]) -> Result<Self, AgeError> {
        Self::with_check(inner, recipients, Check::Sha256)
    }

    /// As [`new`](Self::new), computing `check` over the written bytes.
    pub fn with_check(inner: W, recipients: &[Recipient], check: Check) -> Result<Self, AgeError> {
        if recipients.is_empty() {
            return Err(AgeError::NoRecipients);
        }
        let rng = SystemRandom::new();
        let mut file_key = Zeroizing::new([0u8; FILE_KEY_LEN]);
        rng.fill(&mut file_key[..])
            .map_err(|_| AgeError::Crypto("random file key"))?;

        let mut header = String::with_capacity(64 + 160 * recipients.len());
        header.push_str(VERSION_LINE);
        header.push('\n');
        for recipient in recipients {
            write_x25519_stanza(&mut header, &rng, &file_key, recipient)?;
        }
        header.push_str("---");
        let mac_key = hkdf_key(&[], &file_key[..], b"header", "HKDF header key")?;
        let mac = hmac::sign(
            &hmac::Key::new(HMAC_SHA256, &mac_key[..]),
            header.as_bytes(),
        );
        header.push(' ');
        STANDARD_NO_PAD.encode_string(mac.as_ref(), &mut header);
        header.push('\n');

        let mut nonce = [0u8; PAYLOAD_NONCE_LEN];
        rng.fill(&mut nonce)
            .map_err(|_| AgeError::Crypto("random payload nonce"))?;
        let payload_key = hkdf_key(&nonce, &file_key[..], b"payload", "HKDF payload key")?;
        let payload_key = UnboundKey::new(&CHACHA20_POLY1305, &payload_key[..])
            .map_err(|_| AgeError::Crypto("payload key"))?;

        let mut writer = AgeWriter {
            inner,
            key: LessSafeKey::new(payload_key),
            buf: vec![0u8; CHUNK_SIZE + TAG_LEN].into_boxed_slice(),
            filled: 0,
            counter: 0,
            hasher: match check {
                Check::Sha256 => Hasher::Sha256(Box::new(digest::Context::new(&SHA256))),
                Check::Crc32 => Hasher::Crc32(crc32fast::Hasher::new()),
            },
            plaintext_len: 0,
            ciphertext_len: 0,
            failed: None,
        };
        let mut head = header.into_bytes();
        head.extend_from_slice(&nonce);
        writer.emit(&head)?;
        Ok(writer)
    }

    /// Ciphertext bytes handed to the inner writer so far (header included).
    pub fn ciphertext_len(&self) -> u64 {
        self.ciphertext_len
    }

    /// Plaintext bytes accepted so far (sealed or still buffered).
    pub fn plaintext_len(&self) -> u64 {
        self.plaintext_len
    }

    /// Seals the buffered tail as the last chunk, flushes, and returns the inner
    /// writer with the summary of what was written.
    ///
    /// A [`Check::Crc32`] writer has no SHA-256 to give: use
    /// [`finish_unhashed`](Self::finish_unhashed).
    pub fn finish(self) -> Result<(W, SealSummary), AgeError> {
        let (inner, unhashed, hasher) = self.finish_stream()?;
        let Hasher::Sha256(ctx) = hasher else {
            return Err(AgeError::Crypto("the stream was not hashed (Check::Crc32)"));
        };
        let sha = (*ctx)
            .finish()
            .as_ref()
            .try_into()
            .map_err(|_| AgeError::Crypto("SHA-256 length"))?;
        Ok((inner, unhashed.with_sha256(sha)))
    }

    /// As [`finish`](Self::finish) for a [`Check::Crc32`] writer.
    pub fn finish_unhashed(self) -> Result<(W, Unhashed), AgeError> {
        let (inner, unhashed, hasher) = self.finish_stream()?;
        match hasher {
            Hasher::Crc32(_) => Ok((inner, unhashed)),
            Hasher::Sha256(_) => Err(AgeError::Crypto("the stream was hashed (Check::Sha256)")),
        }
    }

    fn finish_stream(mut self) -> Result<(W, Unhashed, Hasher), AgeError> {
        if let Some(e) = self.poisoned() {
            return Err(e);
        }
        self.seal_chunk(true)?;
        self.inner.flush()?;
        let crc = match &self.hasher {
            Hasher::Crc32(h) => h.clone().finalize(),
            Hasher::Sha256(_) => 0,
        };
        let unhashed = Unhashed {
            plaintext_len: self.plaintext_len,
            ciphertext_len: self.ciphertext_len,
            ciphertext_crc32: crc,
            chunks: self.counter,
        };
        Ok((self.inner, unhashed, self.hasher))
    }

    /// The inner writer.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// The inner writer. Writing to it directly corrupts the sealed stream.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// Seals `buf[..filled]` as chunk `counter` and writes it with its tag.
    fn seal_chunk(&mut self, last: bool) -> Result<(), AgeError> {
        let mut nonce = [0u8; aead::NONCE_LEN];
        nonce[3..11].copy_from_slice(&self.counter.to_be_bytes());
        nonce[11] = u8::from(last);
        let n = self.filled;
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::empty(),
                &mut self.buf[..n],
            )
            .map_err(|_| {
                let e = AgeError::Crypto("ChaCha20-Poly1305 seal");
                self.failed = Some((io::ErrorKind::Other, e.to_string()));
                e
            })?;
        self.buf[n..n + TAG_LEN].copy_from_slice(tag.as_ref());
        self.filled = 0;
        self.counter += 1;
        // Take the buffer out to write it through `&mut self` (no allocation).
        let buf = std::mem::take(&mut self.buf);
        let written = self.emit(&buf[..n + TAG_LEN]);
        self.buf = buf;
        written
    }

    /// The error every call gives once a write has failed.
    fn poisoned(&self) -> Option<AgeError> {
        self.failed
            .as_ref()
            .map(|(kind, cause)| AgeError::Poisoned {
                kind: *kind,
                cause: cause.clone(),
            })
    }

    /// Writes ciphertext to `inner`, hashing and counting it. Any failure poisons
    /// the writer: a failed `write_all` leaves an unknown number of bytes behind.
    fn emit(&mut self, bytes: &[u8]) -> Result<(), AgeError> {
        if let Err(e) = self.inner.write_all(bytes) {
            self.failed = Some((e.kind(), e.to_string()));
            return Err(e.into());
        }
        match &mut self.hasher {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Crc32(h) => h.update(bytes),
        }
        self.ciphertext_len += bytes.len() as u64;
        Ok(())
    }
}

/// Appends `-> X25519 <share>\n<wrapped file key>\n` for one recipient.
fn write_x25519_stanza(
    header: &mut String,
    rng: &SystemRandom,
    file_key: &[u8; FILE_KEY_LEN],
    recipient: &Recipient,
) -> Result<(), AgeError> {
    let ephemeral = EphemeralPrivateKey::generate(&X25519, rng)
        .map_err(|_| AgeError::Crypto("X25519 ephemeral key"))?;
    let share = ephemeral
        .compute_public_key()
        .map_err(|_| AgeError::Crypto("X25519 ephemeral share"))?;
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(share.as_ref());
    salt[32..].copy_from_slice(recipient.public_key());
    let peer = UnparsedPublicKey::new(&X25519, recipient.public_key());
    // ring rejects an all-zero shared secret (small-order peer), as age requires.
    // The shared secret stays in ring's buffer: it is only read by the extract.
    let wrap_key = agreement::agree_ephemeral(ephemeral, &peer, |shared| {
        hkdf_key(&salt, shared, X25519_INFO, "HKDF wrap key")
    })
    .map_err(|_| AgeError::Crypto("X25519 agreement"))??;
    let wrap_key = UnboundKey::new(&CHACHA20_POLY1305, &wrap_key[..])
        .map_err(|_| AgeError::Crypto("wrap key"))?;

    // Holds the file key in clear until it is sealed in place.
    let mut body = Zeroizing::new([0u8; FILE_KEY_LEN + TAG_LEN]);
    body[..FILE_KEY_LEN].copy_from_slice(file_key);
    let tag = LessSafeKey::new(wrap_key)
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key([0; aead::NONCE_LEN]),
            Aad::empty(),
            &mut body[..FILE_KEY_LEN],
        )
        .map_err(|_| AgeError::Crypto("wrap file key"))?;
    body[FILE_KEY_LEN..].copy_from_slice(tag.as_ref());

    header.push_str("-> X25519 ");
    STANDARD_NO_PAD.encode_string(share.as_ref(), header);
    header.push('\n');
    push_wrapped_body(header, &STANDARD_NO_PAD.encode(&body[..]));
    Ok(())
}

/// HKDF-SHA256 (`salt`, `ikm`, `info`) expanded to [`KEY_LEN`] bytes, in a
/// buffer wiped on drop; `what` names the step if ring refuses.
fn hkdf_key(
    salt: &[u8],
    ikm: &[u8],
    info: &[u8],
    what: &'static str,
) -> Result<Zeroizing<[u8; KEY_LEN]>, AgeError> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    hkdf::Salt::new(HKDF_SHA256, salt)
        .extract(ikm)
        .expand(&[info], HKDF_SHA256)
        .and_then(|okm| okm.fill(&mut key[..]))
        .map_err(|_| AgeError::Crypto(what))?;
    Ok(key)
}

/// Appends a stanza body wrapped at 64 columns; the last line is always shorter
/// than 64, so a body of an exact multiple of 64 gets a final empty line.
fn push_wrapped_body(header: &mut String, b64: &str) {
    let mut rest = b64;
    loop {
        let (line, tail) = rest.split_at(rest.len().min(BODY_COLUMNS));
        header.push_str(line);
        header.push('\n');
        if line.len() < BODY_COLUMNS {
            break;
        }
        rest = tail;
    }
}

impl<W: Write> Write for AgeWriter<W> {
    /// Accepts the whole of `data`, sealing every chunk that fills and is followed
    /// by more data.
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if let Some(e) = self.poisoned() {
            let kind = self.failed.as_ref().map_or(io::ErrorKind::Other, |f| f.0);
            return Err(io::Error::new(kind, e));
        }
        let mut consumed = 0;
        while consumed < data.len() {
            if self.filled == CHUNK_SIZE {
                if let Err(e) = self.seal_chunk(false) {
                    // Report the bytes taken so far; the error recurs on the next call.
                    return match (consumed, e) {
                        (0, AgeError::Io(e)) => Err(e),
                        (0, e) => Err(io::Error::other(e)),
                        (n, _) => Ok(n),
                    };
                }
            }
            let take = (CHUNK_SIZE - self.filled).min(data.len() - consumed);
            self.buf[self.filled..self.filled + take]
                .copy_from_slice(&data[consumed..consumed + take]);
            self.filled += take;
            self.plaintext_len += take as u64;
            consumed += take;
        }
        Ok(consumed)
    }

    /// Flushes the inner writer; a partial chunk stays buffered (see module docs).
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write + std::fmt::Debug> std::fmt::Debug for AgeWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgeWriter")
            .field("inner", &self.inner)
            .field("plaintext_len", &self.plaintext_len)
            .field("ciphertext_len", &self.ciphertext_len)
            .field("chunks_sealed", &self.counter)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
