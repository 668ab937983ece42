//! docker-archive (`docker save`, `podman save`): `manifest.json` lists each
//! image's config file, tags and layer tars. There is no OCI manifest; the
//! store builds one. Files named by a digest are checked against it.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{read_small, read_verified, NameHint, SourceImage, SourceLayer};
use crate::image::digest;
use crate::image::error::ImageError;
use crate::image::layer::path::sanitize;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Entry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

pub fn read(dir: &Path) -> Result<Vec<SourceImage>, ImageError> {
    let manifest_path = dir.join("manifest.json");
    let entries: Vec<Entry> = serde_json::from_slice(&read_small(&manifest_path)?)
        .map_err(|e| ImageError::json("parsing", &manifest_path, e))?;
    if entries.is_empty() {
        return Err(ImageError::Invalid(format!(
            "{} lists no images",
            manifest_path.display()
        )));
    }
    entries.into_iter().map(|e| image(dir, e)).collect()
}

fn image(dir: &Path, entry: Entry) -> Result<SourceImage, ImageError> {
    let config_path = member(dir, &entry.config)?;
    let config = match named_digest(&entry.config) {
        Some(d) => read_verified(&config_path, &d, "config")?,
        None => read_small(&config_path)?,
    };
    let mut layers = Vec::new();
    for (i, name) in entry.layers.iter().enumerate() {
        layers.push(SourceLayer {
            path: member(dir, name)?,
            digest: named_digest(name),
            label: format!("{i} ({name})"),
        });
    }
    Ok(SourceImage {
        names: NameHint {
            full: entry.repo_tags.unwrap_or_default(),
            tag: None,
        },
        manifest: None,
        config,
        layers,
    })
}

/// A path from manifest.json, which must stay inside the archive.
fn member(dir: &Path, name: &str) -> Result<PathBuf, ImageError> {
    match sanitize(Path::new(name)) {
        Ok(rel) if !rel.as_os_str().is_empty() => Ok(dir.join(rel)),
        _ => Err(ImageError::Invalid(format!(
            "manifest.json names {name:?}, which is not a file inside the archive"
        ))),
    }
}

/// The digest a file's name gives: `blobs/sha256/<hex>` or `<hex>.json`.
fn named_digest(name: &str) -> Option<String> {
    let base = name.rsplit('/').next()?;
    let hex = base.strip_suffix(".json").unwrap_or(base);
    let in_blobs = name.contains("sha256/") || base.ends_with(".json");
    (in_blobs && digest::is_sha256_hex(hex)).then(|| format!("{}{hex}", digest::SHA256_PREFIX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_from_file_names() {
        let hex = "ab".repeat(32);
        let d = format!("sha256:{hex}");
        assert_eq!(
            named_digest(&format!("blobs/sha256/{hex}")),
            Some(d.clone())
        );
        assert_eq!(named_digest(&format!("{hex}.json")), Some(d));
        assert_eq!(named_digest(&format!("{hex}/layer.tar")), None);
        assert_eq!(named_digest("config.json"), None);
    }
}
