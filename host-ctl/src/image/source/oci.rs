//! OCI image layouts: `index.json` lists manifests (or indexes, for
//! multi-arch images, of which we take linux/amd64); blobs live under
//! `blobs/sha256/<hex>` and are checked against their digests.

use std::path::{Path, PathBuf};

use oci_spec::image::{Arch, Descriptor, ImageIndex, ImageManifest, MediaType, Os};

use super::{read_small, read_verified, NameHint, SourceImage, SourceLayer};
use crate::image::digest;
use crate::image::error::ImageError;
use crate::image::reference;

const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Docker and containerd put the full name here and a bare tag in REF_NAME.
const CONTAINERD_NAME: &str = "io.containerd.image.name";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

pub fn read(dir: &Path) -> Result<Vec<SourceImage>, ImageError> {
    let index_path = dir.join("index.json");
    let index = parse_index(&read_small(&index_path)?, &index_path)?;
    let mut images = Vec::new();
    for desc in index.manifests() {
        let names = names_of(desc);
        let manifest_desc = match kind(desc.media_type()) {
            Kind::Index => pick_platform(dir, desc)?,
            Kind::Manifest => desc.clone(),
            Kind::Other(t) => {
                return Err(ImageError::Invalid(format!(
                    "{}: entry {} has media type {t}, not an image manifest or index",
                    index_path.display(),
                    desc.digest()
                )))
            }
        };
        images.push(image(dir, &manifest_desc, names)?);
    }
    if images.is_empty() {
        return Err(ImageError::Invalid(format!(
            "{} lists no images",
            index_path.display()
        )));
    }
    Ok(images)
}

enum Kind {
    Manifest,
    Index,
    Other(String),
}

fn kind(t: &MediaType) -> Kind {
    match t {
        MediaType::ImageManifest => Kind::Manifest,
        MediaType::ImageIndex => Kind::Index,
        MediaType::Other(s) if s == DOCKER_MANIFEST => Kind::Manifest,
        MediaType::Other(s) if s == DOCKER_LIST => Kind::Index,
        other => Kind::Other(other.to_string()),
    }
}

fn parse_index(bytes: &[u8], path: &Path) -> Result<ImageIndex, ImageError> {
    ImageIndex::from_reader(bytes)
        .map_err(|e| ImageError::Invalid(format!("parsing {}: {e}", path.display())))
}

fn names_of(desc: &Descriptor) -> NameHint {
    let mut hint = NameHint::default();
    let Some(annotations) = desc.annotations() else {
        return hint;
    };
    if let Some(full) = annotations.get(CONTAINERD_NAME) {
        hint.full.push(full.clone());
    }
    if let Some(name) = annotations.get(REF_NAME) {
        if reference::is_bare_tag(name) {
            hint.tag = Some(name.clone());
        } else if hint.full.is_empty() {
            hint.full.push(name.clone());
        }
    }
    hint
}

/// A blob's path from its descriptor's digest (checked to be sha256 hex,
/// so it cannot point elsewhere).
fn blob_path(dir: &Path, desc: &Descriptor, whose: &str) -> Result<PathBuf, ImageError> {
    let digest = desc.digest().to_string();
    let hex = digest::require_hex(&digest, whose)?;
    Ok(dir.join("blobs/sha256").join(hex))
}

/// The linux/amd64 manifest of a multi-arch index.
fn pick_platform(dir: &Path, desc: &Descriptor) -> Result<Descriptor, ImageError> {
    let path = blob_path(dir, desc, "image index")?;
    let bytes = read_verified(&path, desc.digest().as_ref(), "image index")?;
    let index = parse_index(&bytes, &path)?;
    index
        .manifests()
        .iter()
        .find(|m| {
            m.platform()
                .as_ref()
                .is_some_and(|p| *p.os() == Os::Linux && *p.architecture() == Arch::Amd64)
        })
        .cloned()
        .ok_or_else(|| {
            ImageError::Invalid(format!(
                "image index {} has no linux/amd64 image",
                desc.digest()
            ))
        })
}

fn image(dir: &Path, desc: &Descriptor, names: NameHint) -> Result<SourceImage, ImageError> {
    let path = blob_path(dir, desc, "manifest")?;
    let manifest_bytes = read_verified(&path, desc.digest().as_ref(), "manifest")?;
    let manifest = ImageManifest::from_reader(&manifest_bytes[..])
        .map_err(|e| ImageError::Invalid(format!("parsing manifest {}: {e}", desc.digest())))?;
    let config_desc = manifest.config();
    let config_path = blob_path(dir, config_desc, "config")?;
    let config = read_verified(&config_path, config_desc.digest().as_ref(), "config")?;
    let mut layers = Vec::new();
    for (i, layer) in manifest.layers().iter().enumerate() {
        let digest = layer.digest().to_string();
        layers.push(SourceLayer {
            path: blob_path(dir, layer, &format!("layer {i}"))?,
            label: format!("{i} ({digest})"),
            digest: Some(digest),
        });
    }
    Ok(SourceImage {
        names,
        manifest: Some(manifest_bytes),
        config,
        layers,
    })
}
