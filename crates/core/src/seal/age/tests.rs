//! The age writer against the `age` crate and the `age` CLI: every output
//! decrypts, byte for byte, and a failed stream stays failed.

use super::*;
use std::io::Read;

fn identity() -> (age::x25519::Identity, Recipient) {
    let id = age::x25519::Identity::generate();
    let r = id.to_public().to_string().parse().expect("age recipient");
    (id, r)
}

/// Non-periodic test data, so a misplaced chunk cannot decrypt to the same bytes.
fn data(len: usize) -> Vec<u8> {
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Writes `plain` in irregular pieces; returns the writer, not finished.
fn fill(recipients: &[Recipient], plain: &[u8]) -> AgeWriter<Vec<u8>> {
    let mut w = AgeWriter::new(Vec::new(), recipients).expect("header");
    let sizes = [
        1,
        7,
        4096,
        CHUNK_SIZE - 1,
        3,
        CHUNK_SIZE + 1,
        100_000,
        CHUNK_SIZE,
    ];
    let (mut at, mut i) = (0, 0);
    while at < plain.len() {
        let end = plain.len().min(at + sizes[i % sizes.len()]);
        w.write_all(&plain[at..end]).expect("write");
        (at, i) = (end, i + 1);
    }
    w
}

fn decrypt(ct: &[u8], id: &age::x25519::Identity) -> Result<Vec<u8>, String> {
    let d = age::Decryptor::new(ct).map_err(|e| e.to_string())?;
    let mut r = d
        .decrypt(std::iter::once(id as &dyn age::Identity))
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    r.read_to_end(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// Length of the header text, up to and including the MAC line's newline.
fn header_len(ct: &[u8]) -> usize {
    let mac = ct.windows(4).position(|w| w == b"\n---").expect("MAC line");
    mac + 1 + ct[mac + 1..].iter().position(|&b| b == b'\n').expect("eol") + 1
}

#[test]
fn round_trips_with_the_age_crate() {
    let (id, r) = identity();
    for len in [
        0,
        1,
        CHUNK_SIZE - 1,
        CHUNK_SIZE,
        CHUNK_SIZE + 1,
        2 * CHUNK_SIZE,
    ]
    .into_iter()
    .chain([3 * CHUNK_SIZE + 17])
    {
        let plain = data(len);
        let (ct, s) = fill(std::slice::from_ref(&r), &plain)
            .finish()
            .expect("finish");
        assert_eq!(decrypt(&ct, &id).as_deref(), Ok(&plain[..]), "len {len}");
        let chunks = len.div_ceil(CHUNK_SIZE).max(1) as u64;
        assert_eq!((s.plaintext_len, s.chunks), (len as u64, chunks));
        assert_eq!(s.ciphertext_len, ct.len() as u64);
        let payload = (ct.len() - header_len(&ct) - PAYLOAD_NONCE_LEN) as u64;
        assert_eq!(payload, len as u64 + TAG_LEN as u64 * chunks, "len {len}");
    }
}

#[test]
fn every_recipient_can_decrypt() {
    let ((a, ra), (b, rb)) = (identity(), identity());
    let plain = data(2 * CHUNK_SIZE + 5);
    let (ct, _) = fill(&[ra, rb], &plain).finish().expect("finish");
    assert_eq!(
        ct.split(|&b| b == b'\n')
            .filter(|l| l.starts_with(b"-> X25519 "))
            .count(),
        2
    );
    assert_eq!(decrypt(&ct, &a).as_deref(), Ok(&plain[..]));
    assert_eq!(decrypt(&ct, &b).as_deref(), Ok(&plain[..]));
    assert!(
        decrypt(&ct, &identity().0).is_err(),
        "a stranger must not decrypt"
    );
}

#[test]
fn summary_hash_is_sha256_of_the_output() {
    let (_, r) = identity();
    let (ct, s) = fill(&[r], &data(CHUNK_SIZE + 99)).finish().expect("finish");
    assert_eq!(
        s.ciphertext_sha256[..],
        *digest::digest(&SHA256, &ct).as_ref()
    );
}

#[test]
fn a_crc_writer_gives_the_crc32_of_its_output_and_no_sha256_of_its_own() {
    let (id, r) = identity();
    let plain = data(3 * CHUNK_SIZE + 5);
    let mut w =
        AgeWriter::with_check(Vec::new(), std::slice::from_ref(&r), Check::Crc32).expect("header");
    w.write_all(&plain).expect("write");
    let (ct, u) = w.finish_unhashed().expect("finish");
    assert_eq!(u.ciphertext_crc32, crc32fast::hash(&ct));
    assert_eq!(
        (u.ciphertext_len, u.plaintext_len),
        (ct.len() as u64, plain.len() as u64)
    );
    assert_eq!(decrypt(&ct, &id).expect("decrypts"), plain);
    // Only a digest makes it a summary; `finish` refuses to invent one.
    let sha: [u8; 32] = digest::digest(&SHA256, &ct)
        .as_ref()
        .try_into()
        .expect("32");
    assert_eq!(u.with_sha256(sha).ciphertext_sha256, sha);
    let w =
        AgeWriter::with_check(Vec::new(), std::slice::from_ref(&r), Check::Crc32).expect("header");
    assert!(matches!(w.finish(), Err(AgeError::Crypto(_))));
    assert!(matches!(
        fill(&[r], &plain).finish_unhashed(),
        Err(AgeError::Crypto(_))
    ));
}

#[test]
fn dropped_writer_leaves_whole_chunks_salvageable() {
    let (id, r) = identity();
    let plain = data(3 * CHUNK_SIZE + 100);
    let mut w = fill(&[r], &plain[..2 * CHUNK_SIZE]);
    let header = w.ciphertext_len() - (CHUNK_SIZE + TAG_LEN) as u64;
    // A full chunk is held back until a byte after it proves it is not the last...
    assert_eq!(w.ciphertext_len(), header + (CHUNK_SIZE + TAG_LEN) as u64);
    w.write_all(&plain[2 * CHUNK_SIZE..2 * CHUNK_SIZE + 1])
        .expect("write");
    // ...and is on its way to disk as soon as that byte arrives.
    assert_eq!(
        w.ciphertext_len(),
        header + 2 * (CHUNK_SIZE + TAG_LEN) as u64
    );
    w.write_all(&plain[2 * CHUNK_SIZE + 1..]).expect("write");
    w.flush().expect("flush");
    let ct = w.get_ref().clone();
    drop(w); // crash: no final chunk
    assert_eq!(ct.len() as u64, header + 3 * (CHUNK_SIZE + TAG_LEN) as u64);

    let d = age::Decryptor::new(&ct[..]).expect("header");
    let mut rd = d
        .decrypt(std::iter::once(&id as &dyn age::Identity))
        .expect("key");
    let (mut got, mut buf) = (Vec::new(), [0u8; 10_000]);
    let err = loop {
        match rd.read(&mut buf) {
            Ok(0) => panic!("a truncated stream must not end cleanly"),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => break e,
        }
    };
    assert_eq!(
        got.len(),
        3 * CHUNK_SIZE,
        "all whole chunks come out ({err})"
    );
    assert_eq!(got, plain[..3 * CHUNK_SIZE]);
}

#[test]
fn any_flipped_byte_fails_decryption() {
    let (id, r) = identity();
    let (ct, _) = fill(&[r], &data(CHUNK_SIZE + 10)).finish().expect("finish");
    let h = header_len(&ct);
    // Ephemeral share, wrapped key, MAC, payload nonce, first chunk, last chunk, tag.
    let spots = [40, 90, h - 5, h + 3, h + 5000, ct.len() - 20, ct.len() - 1];
    for at in spots {
        let mut bad = ct.clone();
        bad[at] ^= 0x01;
        assert!(decrypt(&bad, &id).is_err(), "flip at {at} went unnoticed");
    }
}

#[test]
fn refuses_no_recipients_and_stays_failed_after_io_error() {
    assert!(matches!(
        AgeWriter::new(Vec::new(), &[]),
        Err(AgeError::NoRecipients)
    ));

    struct Full(usize);
    impl Write for Full {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            let n = b.len().min(self.0);
            self.0 -= n;
            if n == 0 {
                Err(io::ErrorKind::StorageFull.into())
            } else {
                Ok(n)
            }
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let (_, r) = identity();
    let mut w = AgeWriter::new(Full(1000), &[r]).expect("header fits");
    assert!(w.write_all(&data(CHUNK_SIZE + 1)).is_err());
    // Later calls name the first failure, and keep its kind.
    let again = w.write(b"x").expect_err("stays failed");
    assert_eq!(again.kind(), io::ErrorKind::StorageFull, "{again}");
    let full = io::Error::from(io::ErrorKind::StorageFull).to_string();
    assert!(again.to_string().contains(&full), "{again}");
    match w.finish() {
        Err(AgeError::Poisoned { kind, cause }) => {
            assert_eq!(kind, io::ErrorKind::StorageFull);
            assert_eq!(cause, full);
        }
        other => panic!("{:?}", other.map(|(_, s)| s)),
    }
}

#[test]
fn stanza_bodies_wrap_at_64_columns() {
    let wrap = |n: usize| {
        let mut s = String::new();
        push_wrapped_body(&mut s, &"A".repeat(n));
        s.lines().map(str::len).collect::<Vec<_>>()
    };
    assert_eq!(wrap(43), [43]);
    assert_eq!(wrap(64), [64, 0]);
    assert_eq!(wrap(130), [64, 64, 2]);
    assert_eq!(wrap(0), [0]);
}

#[test]
fn the_age_cli_decrypts_a_stream() {
    let cli = std::path::Path::new("/usr/bin/age");
    assert!(
        cli.exists(),
        "/usr/bin/age is missing: install the Debian package `age`"
    );
    let (id, r) = identity();
    let dir = tempfile::tempdir().expect("tempdir");
    let (key, enc) = (dir.path().join("key.txt"), dir.path().join("seg.age"));
    let secret = age::secrecy::ExposeSecret::expose_secret(&id.to_string()).to_string();
    std::fs::write(&key, secret + "\n").expect("write key");
    // 200 KB, plus the edge cases: empty, and a full flagged final chunk.
    for len in [200_000, 0, 2 * CHUNK_SIZE] {
        let plain = data(len);
        let (ct, _) = fill(std::slice::from_ref(&r), &plain)
            .finish()
            .expect("finish");
        std::fs::write(&enc, &ct).expect("write ciphertext");
        let out = std::process::Command::new(cli)
            .arg("-d")
            .arg("-i")
            .arg(&key)
            .arg(&enc)
            .output()
            .expect("run /usr/bin/age");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "age -d failed on {len} bytes: {err}");
        assert!(
            out.stdout == plain,
            "age -d returned {} bytes, not the {len} sealed",
            out.stdout.len()
        );
    }
}
