//! Digests in their `sha256:<hex>` text form, hashing while streaming, and
//! OCI chain IDs (which key the snapshots, so a layer is stored once per
//! parent chain).

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use sha2::{Digest as _, Sha256};

use super::error::{ImageError, IoContext};

pub const SHA256_PREFIX: &str = "sha256:";

/// `sha256:<hex>` of some bytes.
pub fn of_bytes(bytes: &[u8]) -> String {
    format!("{SHA256_PREFIX}{}", hex::encode(Sha256::digest(bytes)))
}

/// `sha256:<hex>` of a file's content, read in chunks.
pub fn of_file(path: &Path) -> Result<String, ImageError> {
    let file = File::open(path).ctx("opening", path)?;
    let mut reader = HashReader::new(file);
    io::copy(&mut reader, &mut io::sink()).ctx("reading", path)?;
    Ok(reader.digest())
}

/// The hex part of a valid `sha256:<64 hex>` digest, or None.
pub fn hex_of(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix(SHA256_PREFIX)?;
    is_sha256_hex(hex).then_some(hex)
}

/// 64 lowercase hex digits.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The hex of `digest`, or an error saying where the bad digest came from.
pub fn require_hex<'a>(digest: &'a str, whose: &str) -> Result<&'a str, ImageError> {
    hex_of(digest).ok_or_else(|| {
        ImageError::Invalid(format!(
            "{whose}: {digest:?} is not a sha256:<64 hex digits> digest"
        ))
    })
}

/// The chain IDs of a stack of layers given by their diff IDs, bottom
/// first: chainID(L0) = diffID0, chainID(Ln) = sha256(chainID(Ln-1) + " " + diffIDn).
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff in diff_ids {
        let next = match out.last() {
            None => diff.clone(),
            Some(parent) => of_bytes(format!("{parent} {diff}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// A reader that hashes and counts what passes through it.
pub struct HashReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashReader<R> {
    pub fn new(inner: R) -> Self {
        HashReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// The `sha256:<hex>` of everything read so far.
    pub fn digest(&self) -> String {
        format!(
            "{SHA256_PREFIX}{}",
            hex::encode(self.hasher.clone().finalize())
        )
    }

    /// Bytes read so far.
    pub fn count(&self) -> u64 {
        self.count
    }
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn empty_digest() {
        assert_eq!(of_bytes(b""), EMPTY);
        assert_eq!(hex_of(EMPTY), Some(&EMPTY[7..]));
        assert_eq!(hex_of("sha256:ABC"), None);
        assert_eq!(hex_of(&EMPTY[7..]), None);
    }

    #[test]
    fn chain_id_of_one_layer_is_its_diff_id() {
        let d = vec![EMPTY.to_string()];
        assert_eq!(chain_ids(&d), d);
    }

    #[test]
    fn chain_ids_hash_parent_space_diff() {
        let a = of_bytes(b"a");
        let b = of_bytes(b"b");
        let c = of_bytes(b"c");
        let ids = chain_ids(&[a.clone(), b.clone(), c.clone()]);
        let ab = of_bytes(format!("{a} {b}").as_bytes());
        let abc = of_bytes(format!("{ab} {c}").as_bytes());
        assert_eq!(ids, vec![a, ab, abc]);
        assert_eq!(chain_ids(&[]), Vec::<String>::new());
    }

    #[test]
    fn hash_reader_counts_and_hashes() {
        let mut r = HashReader::new(&b"hello"[..]);
        io::copy(&mut r, &mut io::sink()).unwrap();
        assert_eq!(r.count(), 5);
        assert_eq!(r.digest(), of_bytes(b"hello"));
    }
}
