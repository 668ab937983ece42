//! `ImageStore::import`: reads a source, checks every blob and layer
//! against its digest, builds the missing snapshots and then, last, adds
//! the images to the index. On any error, everything this import created
//! is removed again (`Undo`), so the store is left as it was.

use std::fs::{self, File};
use std::io::BufReader;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use oci_spec::image::ImageConfiguration;

use super::digest::{self, chain_ids};
use super::error::{ImageError, IoContext};
use super::fsutil::{remove_any, write_atomic};
use super::index::{ImageRecord, Index};
use super::layer::{self, Verified};
use super::reference;
use super::source::{self, unpack, SourceImage, SourceLayer};
use super::ImageStore;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// Paths this import created, removed again unless the import succeeds.
#[derive(Default)]
struct Undo {
    paths: Vec<PathBuf>,
    done: bool,
}

impl Drop for Undo {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        for path in self.paths.iter().rev() {
            let _ = remove_any(path);
        }
    }
}

/// How an import goes, for progress displays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportEvent {
    /// The archive, of `size` bytes, is being read and unpacked.
    Unpacking { size: u64 },
    /// `bytes` more of it were read.
    Read { bytes: u64 },
    /// Layer `index` (from 0) of `count`, of one of the images, is being
    /// checked and applied.
    Layer { index: usize, count: usize },
}

impl ImageStore {
    /// Imports every image of an OCI layout (directory or tar) or a
    /// docker-archive; `name` names the image (the source must hold one).
    pub fn import(
        &self,
        source: &Path,
        name: Option<&str>,
    ) -> Result<Vec<ImageRecord>, ImageError> {
        self.import_reporting(source, name, &|_| {})
    }

    /// [`ImageStore::import`], telling `progress` how it goes.
    pub fn import_reporting(
        &self,
        source: &Path,
        name: Option<&str>,
        progress: &dyn Fn(ImportEvent),
    ) -> Result<Vec<ImageRecord>, ImageError> {
        let _lock = self.lock()?;
        let mut undo = Undo::default();
        let meta = fs::metadata(source).ctx("reading", source)?;
        let images = if meta.is_dir() {
            source::read_dir(source, source)?
        } else {
            let work = self
                .root
                .join("tmp")
                .join(format!("import-{}", std::process::id()));
            remove_any(&work)?;
            undo.paths.push(work.clone());
            fs::DirBuilder::new()
                .mode(0o700)
                .create(&work)
                .ctx("creating", &work)?;
            progress(ImportEvent::Unpacking { size: meta.len() });
            unpack::unpack(source, &work, &|bytes| {
                progress(ImportEvent::Read { bytes })
            })?;
            source::read_dir(&work, source)?
        };
        let names = assign_names(&images, name, source)?;
        let mut records = Vec::new();
        for (image, names) in images.iter().zip(names) {
            records.push(self.import_one(image, names, &mut undo, progress)?);
        }
        let mut index = Index::load(&self.index_path())?;
        let records = merge(&mut index, records);
        index.save(&self.index_path())?;
        // The unpacked archive goes either way; what else was made stays.
        if let Some(work) = undo
            .paths
            .first()
            .filter(|p| p.starts_with(self.root.join("tmp")))
        {
            remove_any(work)?;
        }
        undo.done = true;
        Ok(records)
    }

    /// Imports one image whose blobs are files (as `image pull` fetched
    /// them, or an app's root archive, unnamed) under `names`, under the
    /// store's lock: the names move to it.
    pub(super) fn import_named(
        &self,
        image: &SourceImage,
        names: Vec<String>,
    ) -> Result<ImageRecord, ImageError> {
        let _lock = self.lock()?;
        let mut undo = Undo::default();
        let record = self.import_one(image, names, &mut undo, &|_| {})?;
        let mut index = Index::load(&self.index_path())?;
        let record = merge(&mut index, vec![record])
            .pop()
            .ok_or_else(|| ImageError::Invalid("the import added no image".into()))?;
        index.save(&self.index_path())?;
        undo.done = true;
        Ok(record)
    }

    fn import_one(
        &self,
        image: &SourceImage,
        names: Vec<String>,
        undo: &mut Undo,
        progress: &dyn Fn(ImportEvent),
    ) -> Result<ImageRecord, ImageError> {
        let config = ImageConfiguration::from_reader(&image.config[..])
            .map_err(|e| ImageError::Invalid(format!("parsing an image config: {e}")))?;
        let diff_ids = config.rootfs().diff_ids().clone();
        for d in &diff_ids {
            digest::require_hex(d, "image config rootfs.diff_ids")?;
        }
        if diff_ids.len() != image.layers.len() {
            return Err(ImageError::Invalid(format!(
                "the image has {} layers but its config lists {} diff IDs",
                image.layers.len(),
                diff_ids.len()
            )));
        }
        let chain = chain_ids(&diff_ids);
        let mut sizes = Vec::new();
        for (i, layer) in image.layers.iter().enumerate() {
            progress(ImportEvent::Layer {
                index: i,
                count: image.layers.len(),
            });
            sizes.push(
                self.ensure_snapshot(&chain[..=i], layer, &diff_ids[i], undo)?
                    .size,
            );
        }
        let config_digest = digest::of_bytes(&image.config);
        let manifest = match &image.manifest {
            Some(bytes) => bytes.clone(),
            None => docker_manifest(&config_digest, image.config.len(), &diff_ids, &sizes),
        };
        let manifest_digest = digest::of_bytes(&manifest);
        self.put_blob(&manifest, &manifest_digest, undo)?;
        self.put_blob(&image.config, &config_digest, undo)?;
        let created = config
            .created()
            .clone()
            .unwrap_or_else(|| humantime::format_rfc3339_seconds(SystemTime::now()).to_string());
        Ok(ImageRecord {
            digest: manifest_digest,
            config_digest,
            names,
            chain_ids: chain,
            size: sizes.iter().sum(),
            created,
        })
    }

    /// Makes sure the snapshot of the last chain ID exists (it is built in a
    /// `.partial-<pid>` directory and renamed in), after checking the
    /// layer's blob digest and diff ID.
    fn ensure_snapshot(
        &self,
        chain: &[String],
        layer: &SourceLayer,
        diff_id: &str,
        undo: &mut Undo,
    ) -> Result<Verified, ImageError> {
        if let Some(expected) = &layer.digest {
            let actual = digest::of_file(&layer.path)?;
            if &actual != expected {
                return Err(ImageError::DigestMismatch {
                    what: format!("layer {} blob {}", layer.label, layer.path.display()),
                    expected: expected.clone(),
                    actual,
                });
            }
        }
        let Some((chain_id, lower_ids)) = chain.split_last() else {
            return Err(ImageError::Invalid("an empty layer chain".into()));
        };
        let open = || {
            File::open(&layer.path)
                .map(BufReader::new)
                .ctx("opening layer", &layer.path)
        };
        let dir = self.snapshot_dir(chain_id);
        if dir.is_dir() {
            return layer::verify(open()?, &layer.label, diff_id);
        }
        let partial = dir.with_file_name(format!(
            "{}.partial-{}",
            dir.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id()
        ));
        remove_any(&partial)?;
        undo.paths.push(partial.clone());
        fs::DirBuilder::new()
            .mode(0o755)
            .create(&partial)
            .ctx("creating", &partial)?;
        let lowers: Vec<PathBuf> = lower_ids.iter().map(|c| self.snapshot_dir(c)).collect();
        let verified = layer::apply(open()?, &partial, &lowers, &layer.label, diff_id)?;
        fs::rename(&partial, &dir).ctx("renaming into place", &dir)?;
        undo.paths.push(dir);
        Ok(verified)
    }

    /// Stores a blob under its digest, unless it is there already.
    fn put_blob(&self, bytes: &[u8], digest: &str, undo: &mut Undo) -> Result<(), ImageError> {
        let path = self.blob_path(digest)?;
        if path.is_file() {
            return Ok(());
        }
        write_atomic(&path, bytes)?;
        undo.paths.push(path);
        Ok(())
    }
}

/// The names each image gets: `name` for the only image (taking the
/// source's bare tag when `name` has none), else the source's own names.
fn assign_names(
    images: &[SourceImage],
    name: Option<&str>,
    source: &Path,
) -> Result<Vec<Vec<String>>, ImageError> {
    if let Some(name) = name {
        let [image] = images else {
            return Err(ImageError::Invalid(format!(
                "{} holds {} images: a name can only be given to a source with one",
                source.display(),
                images.len()
            )));
        };
        let full = match &image.names.tag {
            Some(tag) if !reference::has_tag(name) => format!("{name}:{tag}"),
            _ => name.to_string(),
        };
        return Ok(vec![vec![reference::normalize(&full)?]]);
    }
    images
        .iter()
        .map(|image| {
            let mut names = Vec::new();
            for n in &image.names.full {
                let n = reference::normalize(n)?;
                if !names.contains(&n) {
                    names.push(n);
                }
            }
            Ok(names)
        })
        .collect()
}

/// Adds the imported images to the index: a name moves to the image that
/// now has it; an image already there gains the new names.
fn merge(index: &mut Index, records: Vec<ImageRecord>) -> Vec<ImageRecord> {
    let mut out: Vec<ImageRecord> = Vec::new();
    for record in records {
        for other in index
            .images
            .iter_mut()
            .filter(|o| o.digest != record.digest)
        {
            other.names.retain(|n| !record.names.contains(n));
        }
        let stored = match index.images.iter_mut().find(|o| o.digest == record.digest) {
            Some(existing) => {
                for n in &record.names {
                    if !existing.names.contains(n) {
                        existing.names.push(n.clone());
                    }
                }
                existing.clone()
            }
            None => {
                index.images.push(record.clone());
                record
            }
        };
        out.retain(|o: &ImageRecord| o.digest != stored.digest);
        out.push(stored);
    }
    out
}

/// The OCI manifest a docker-archive image would have: its config and its
/// uncompressed layers (which is what docker-archive's diff IDs name).
fn docker_manifest(
    config_digest: &str,
    config_size: usize,
    diff_ids: &[String],
    sizes: &[u64],
) -> Vec<u8> {
    let layers: Vec<serde_json::Value> = diff_ids
        .iter()
        .zip(sizes)
        .map(|(d, s)| serde_json::json!({"mediaType": OCI_LAYER_TAR, "digest": d, "size": s}))
        .collect();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config_size},
        "layers": layers,
    });
    manifest.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(d: &str, names: &[&str]) -> ImageRecord {
        ImageRecord {
            digest: d.into(),
            config_digest: String::new(),
            names: names.iter().map(|s| s.to_string()).collect(),
            chain_ids: vec![],
            size: 0,
            created: String::new(),
        }
    }

    #[test]
    fn names_move_to_the_newest_image() {
        let mut index = Index {
            images: vec![rec("a", &["x:latest", "y:1"]), rec("b", &["z:latest"])],
        };
        let out = merge(
            &mut index,
            vec![rec("c", &["x:latest"]), rec("b", &["w:2"])],
        );
        assert_eq!(index.images[0].names, vec!["y:1"]);
        assert_eq!(index.images[1].names, vec!["z:latest", "w:2"]);
        assert_eq!(index.images[2].names, vec!["x:latest"]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].names, vec!["z:latest", "w:2"]);
    }

    #[test]
    fn docker_manifests_are_deterministic() {
        let d = digest::of_bytes(b"layer");
        let a = docker_manifest("sha256:c", 3, std::slice::from_ref(&d), &[5]);
        assert_eq!(
            a,
            docker_manifest("sha256:c", 3, std::slice::from_ref(&d), &[5])
        );
        let v: serde_json::Value = serde_json::from_slice(&a).unwrap();
        assert_eq!(v["layers"][0]["digest"], d);
        assert_eq!(v["layers"][0]["mediaType"], OCI_LAYER_TAR);
        assert_eq!(v["config"]["size"], 3);
    }
}
