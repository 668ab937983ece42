//! An app root given as a tar archive (a manifest's `rootfs`), kept as an
//! unnamed one-layer image: unpacked once, shared by every pod of the same
//! archive, protected by the pods' leases and removed by `image prune`
//! once no pod uses it.

use std::fs::File;
use std::io::{self, BufReader};
use std::path::Path;

use super::compress;
use super::digest::HashReader;
use super::error::{ImageError, IoContext};
use super::source::{NameHint, SourceImage, SourceLayer};
use super::{ImageStore, ResolvedImage};

impl ImageStore {
    /// The image of the root archive at `path`, imported the first time.
    pub fn import_root_archive(&self, path: &Path) -> Result<ResolvedImage, ImageError> {
        let diff_id = uncompressed_digest(path)?;
        let config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        });
        let image = SourceImage {
            names: NameHint::default(),
            manifest: None,
            config: serde_json::to_vec(&config).unwrap_or_default(),
            layers: vec![SourceLayer {
                path: path.to_path_buf(),
                digest: None,
                label: path.display().to_string(),
            }],
        };
        let record = self.import_named(&image, Vec::new())?;
        self.resolve(&record.digest)
    }
}

/// The sha256 of the archive's tar stream, whatever its compression.
fn uncompressed_digest(path: &Path) -> Result<String, ImageError> {
    let file = File::open(path).ctx("opening", path)?;
    let mut h = HashReader::new(compress::decompress(BufReader::new(file)).ctx("reading", path)?);
    io::copy(&mut h, &mut io::sink()).ctx("reading", path)?;
    Ok(h.digest())
}
