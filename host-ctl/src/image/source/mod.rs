//! Reading an image source: an OCI image layout (a directory, or a tar of
//! one) or a docker-archive (`docker save`, `podman save`). Tars are first
//! unpacked into the store's `tmp/`; both formats then read as directories.

mod docker;
mod oci;
pub mod unpack;

use std::fs;
use std::path::{Path, PathBuf};

use super::digest;
use super::error::{ImageError, IoContext};

/// The names an image comes with, before `--name` and normalisation.
#[derive(Debug, Default, Clone)]
pub struct NameHint {
    /// Full references (`busybox:latest`, `quay.io/x/y:1`).
    pub full: Vec<String>,
    /// A tag alone (an OCI `ref.name` such as `latest`).
    pub tag: Option<String>,
}

/// A layer blob in the source.
#[derive(Debug, Clone)]
pub struct SourceLayer {
    pub path: PathBuf,
    /// The digest the blob must have, when the source names one.
    pub digest: Option<String>,
    /// How errors name the layer.
    pub label: String,
}

/// One image of a source, blobs checked against their digests where the
/// source gives them.
#[derive(Debug, Clone)]
pub struct SourceImage {
    pub names: NameHint,
    /// The OCI manifest's bytes; None for docker-archive (the store builds one).
    pub manifest: Option<Vec<u8>>,
    pub config: Vec<u8>,
    pub layers: Vec<SourceLayer>,
}

/// Reads the images of an unpacked source directory.
pub fn read_dir(dir: &Path, shown: &Path) -> Result<Vec<SourceImage>, ImageError> {
    if dir.join("oci-layout").is_file() && dir.join("index.json").is_file() {
        oci::read(dir)
    } else if dir.join("manifest.json").is_file() {
        docker::read(dir)
    } else {
        Err(ImageError::Invalid(format!(
            "{} is neither an OCI image layout (oci-layout, index.json) nor a docker-archive (manifest.json)",
            shown.display()
        )))
    }
}

/// A file of the source, read whole (manifests and configs are small).
fn read_small(path: &Path) -> Result<Vec<u8>, ImageError> {
    let meta = fs::metadata(path).ctx("reading", path)?;
    if meta.len() > 16 << 20 {
        return Err(ImageError::Invalid(format!(
            "{} is {} bytes: too large for image metadata",
            path.display(),
            meta.len()
        )));
    }
    fs::read(path).ctx("reading", path)
}

/// Reads a blob and checks that its content has `expected` as digest.
fn read_verified(path: &Path, expected: &str, what: &str) -> Result<Vec<u8>, ImageError> {
    let bytes = read_small(path)?;
    let actual = digest::of_bytes(&bytes);
    if actual != expected {
        return Err(ImageError::DigestMismatch {
            what: format!("{what} {}", path.display()),
            expected: expected.to_string(),
            actual,
        });
    }
    Ok(bytes)
}
