//! Applying one layer tar into a snapshot directory, with OCI semantics,
//! in the form overlayfs reads as a lower layer (see `whiteout`). The tar
//! is streamed: decompressed, hashed (its diff ID) and written as it is
//! read. Entries that could write outside the directory are refused.

mod meta;
mod node;
pub mod path;
pub mod whiteout;

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::compress;
use super::digest::HashReader;
use super::error::ImageError;

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
    check(&hashing, layer, diff_id)
}

fn check<R: Read>(h: &HashReader<R>, layer: &str, diff_id: &str) -> Result<Verified, ImageError> {
    let actual = h.digest();
    if actual != diff_id {
        return Err(ImageError::DiffIdMismatch {
            layer: layer.to_string(),
            expected: diff_id.to_string(),
            actual,
        });
    }
    Ok(Verified {
        diff_id: actual,
        size: h.count(),
    })
}

/// Applies the layer in `reader` (any compression) to the empty directory
/// `root`, whose chain's lower snapshots are `lowers` (bottom first), and
/// checks its diff ID. `layer` names it in errors.
pub fn apply(
    reader: impl Read,
    root: &Path,
    lowers: &[PathBuf],
    layer: &str,
    diff_id: &str,
) -> Result<Verified, ImageError> {
    let read_err = |e| ImageError::io("reading layer", Path::new(layer), e);
    let hashing = HashReader::new(compress::decompress(reader).map_err(read_err)?);
    let mut archive = tar::Archive::new(hashing);
    let mut state = node::Applier::new(root, lowers, layer);
    for entry in archive.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        state.entry(&mut entry)?;
    }
    // The tar ends before its stream does (padding, the compressor's
    // trailer): hash all of it.
    let mut hashing = archive.into_inner();
    io::copy(&mut hashing, &mut io::sink()).map_err(read_err)?;
    let verified = check(&hashing, layer, diff_id)?;
    state.finish()?;
    Ok(verified)
}
