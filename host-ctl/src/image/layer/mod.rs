//! Applying one layer tar into a snapshot directory, with OCI semantics,
//! in the form overlayfs reads as a lower layer (see `whiteout`). The tar
//! is streamed: decompressed, hashed (its diff ID) and written as it is
//! read. Entries that could write outside the directory are refused.

mod meta;
mod node;
pub mod path;
mod pipe;
pub mod whiteout;

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::compress;
use super::digest::HashReader;
use super::error::ImageError;

/// Reads into `buf` until it is full or the stream ends; how much it read.
/// Both sides of the layer pipe move data in whole buffers.
fn read_full(from: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match from.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// A layer's uncompressed digest and size, once checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub diff_id: String,
    pub size: u64,
}

/// Decompresses and hashes a layer without writing it (its snapshot exists).
pub fn verify(reader: impl Read, layer: &str, diff_id: &str) -> Result<Verified, ImageError> {
    let read_err = |e| ImageError::io("reading layer", Path::new(layer), e);
    let mut hashing = HashReader::new(compress::decompress(reader).map_err(read_err)?);
    io::copy(&mut hashing, &mut io::sink()).map_err(read_err)?;
    check(&hashing.digest(), hashing.count(), layer, diff_id)
}

fn check(actual: &str, size: u64, layer: &str, diff_id: &str) -> Result<Verified, ImageError> {
    if actual != diff_id {
        return Err(ImageError::DiffIdMismatch {
            layer: layer.to_string(),
            expected: diff_id.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok(Verified {
        diff_id: actual.to_string(),
        size,
    })
}

/// Applies the layer in `reader` (any compression) to the empty directory
/// `root`, whose chain's lower snapshots are `lowers` (bottom first), and
/// checks its diff ID. `layer` names it in errors. The stream is read,
/// decompressed and hashed on a thread of its own (see `pipe`).
pub fn apply(
    reader: impl Read + Send,
    root: &Path,
    lowers: &[PathBuf],
    layer: &str,
    diff_id: &str,
) -> Result<Verified, ImageError> {
    let read_err = |e| ImageError::io("reading layer", Path::new(layer), e);
    let (tx, chunks) = pipe::channel();
    std::thread::scope(|s| {
        let reading = s.spawn(move || pipe::read_into(reader, tx));
        let applied = apply_entries(chunks, root, lowers, layer);
        let read = reading
            .join()
            .map_err(|_| read_err(io::Error::other("the layer's reader panicked")))?;
        // An applier error says which entry; a read error, why it stopped.
        applied?;
        let (actual, size) = read.map_err(read_err)?;
        check(&actual, size, layer, diff_id)
    })
}

/// Applies the tar stream in `chunks`, then reads it to its end (the tar
/// ends before the stream does: padding, the compressor's trailer).
fn apply_entries(
    chunks: pipe::Chunks,
    root: &Path,
    lowers: &[PathBuf],
    layer: &str,
) -> Result<(), ImageError> {
    let read_err = |e| ImageError::io("reading layer", Path::new(layer), e);
    let mut archive = tar::Archive::new(chunks);
    let mut state = node::Applier::new(root, lowers, layer);
    for entry in archive.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        state.entry(&mut entry)?;
    }
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(read_err)?;
    state.finish()
}
