//! The image store: OCI images imported from files, kept by content under
//! `<state_dir>/images/`, for pods to run from.
//!
//! ```text
//! blobs/sha256/<hex>        manifests and configs, by digest
//! snapshots/<chainid-hex>/  one applied layer per OCI chain ID: a layer is
//!                           stored once per parent chain and shared
//! index.json                the images (ImageRecord), replaced atomically
//! lock                      flock'd by every writer
//! leases/<pod-id>           the image digests a pod uses
//! tmp/                      unpacked archives during an import
//! ```
//!
//! A snapshot is what Linux overlayfs in the guest reads, through 9p, as a
//! lower layer: whiteouts are char devices 0:0, and opaque directories are
//! spelled out as whiteouts (see `layer::whiteout`). An import either adds
//! whole images or leaves the store as it was.

mod compress;
mod digest;
mod error;
mod fsutil;
mod gc;
mod import;
mod index;
mod layer;
mod pull;
mod reference;
mod rootfs;
mod source;

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use oci_spec::image::ImageConfiguration;
use serde::Serialize;

pub use error::ImageError;
pub use gc::PruneReport;
pub use import::ImportEvent;
pub use index::ImageRecord;
pub use pull::{Fetched, PullEvent, PullOptions, PullReport};

use error::IoContext;
use index::{Index, StoreLock};
use reference::DigestRef;

/// The content-addressed image store under `<state_dir>/images`.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
}

/// An image ready to run: its layers' snapshot directories and the
/// defaults its config gives apps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedImage {
    pub digest: String,
    pub names: Vec<String>,
    /// Snapshot directories, bottom layer first.
    pub layers: Vec<PathBuf>,
    pub config: ImageDefaults,
}

/// What an image's config says about running it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageDefaults {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub stop_signal: Option<String>,
    /// Sorted (`80/tcp`, `53/udp`).
    pub exposed_ports: Vec<String>,
}

impl ImageDefaults {
    fn from_config(config: &ImageConfiguration) -> ImageDefaults {
        let Some(c) = config.config() else {
            return ImageDefaults::default();
        };
        let non_empty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
        let mut exposed_ports = c.exposed_ports().clone().unwrap_or_default();
        exposed_ports.sort();
        ImageDefaults {
            entrypoint: c.entrypoint().clone().unwrap_or_default(),
            cmd: c.cmd().clone().unwrap_or_default(),
            env: c.env().clone().unwrap_or_default(),
            working_dir: non_empty(c.working_dir()),
            user: non_empty(c.user()),
            stop_signal: non_empty(c.stop_signal()),
            exposed_ports,
        }
    }
}

impl ImageStore {
    /// Opens the store under `state_dir`, creating its directories.
    pub fn open(state_dir: &Path) -> Result<ImageStore, ImageError> {
        let store = ImageStore {
            root: state_dir.join("images"),
        };
        // Snapshots are shared with hypervisors, which may not run as root;
        // what is private to an import or a pod is not.
        for (dir, mode) in [
            ("blobs/sha256", 0o755),
            ("snapshots", 0o755),
            ("leases", 0o700),
            ("tmp", 0o700),
        ] {
            let path = store.root.join(dir);
            fs::DirBuilder::new()
                .recursive(true)
                .mode(mode)
                .create(&path)
                .ctx("creating", &path)?;
        }
        // The lock file exists from the start, so an import that fails
        // leaves the directory exactly as it found it.
        drop(store.lock()?);
        Ok(store)
    }

    /// The store under `state_dir` if it was ever created, without creating
    /// anything (for `host-ctl args` and cleanup).
    pub fn existing(state_dir: &Path) -> Option<ImageStore> {
        let root = state_dir.join("images");
        root.join("snapshots")
            .is_dir()
            .then_some(ImageStore { root })
    }

    /// The directory of the snapshot with this chain ID (`sha256:<hex>` or hex).
    pub fn snapshot_dir(&self, chain_id: &str) -> PathBuf {
        let hex = chain_id
            .strip_prefix(digest::SHA256_PREFIX)
            .unwrap_or(chain_id);
        self.root.join("snapshots").join(hex)
    }

    /// Every image, in import order.
    pub fn list(&self) -> Result<Vec<ImageRecord>, ImageError> {
        Ok(Index::load(&self.index_path())?.images)
    }

    /// Finds an image by name (`busybox` = `busybox:latest`), by manifest
    /// digest, or by a unique prefix of at least 4 hex digits of it.
    pub fn resolve(&self, reference: &str) -> Result<ResolvedImage, ImageError> {
        let index = Index::load(&self.index_path())?;
        let record = find(&index, reference)?;
        let config = self.config_of(record)?;
        Ok(ResolvedImage {
            digest: record.digest.clone(),
            names: record.names.clone(),
            layers: record
                .chain_ids
                .iter()
                .map(|c| self.snapshot_dir(c))
                .collect(),
            config: ImageDefaults::from_config(&config),
        })
    }

    fn config_of(&self, record: &ImageRecord) -> Result<ImageConfiguration, ImageError> {
        let path = self.blob_path(&record.config_digest)?;
        let bytes = fs::read(&path).ctx("reading image config", &path)?;
        ImageConfiguration::from_reader(&bytes[..]).map_err(|e| {
            ImageError::Invalid(format!("parsing image config {}: {e}", path.display()))
        })
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    fn lock(&self) -> Result<StoreLock, ImageError> {
        StoreLock::acquire(&self.root.join("lock"))
    }

    fn blob_path(&self, digest: &str) -> Result<PathBuf, ImageError> {
        let hex = digest::require_hex(digest, "blob")?;
        Ok(self.root.join("blobs/sha256").join(hex))
    }
}

/// The record a reference names: names first, then digests.
fn find<'a>(index: &'a Index, reference: &str) -> Result<&'a ImageRecord, ImageError> {
    if let Ok(name) = reference::normalize(reference) {
        if let Some(r) = index.images.iter().find(|r| r.names.contains(&name)) {
            return Ok(r);
        }
    }
    let not_found = || ImageError::NotFound {
        reference: reference.to_string(),
    };
    let hex_of = |r: &ImageRecord| {
        r.digest
            .strip_prefix(digest::SHA256_PREFIX)
            .unwrap_or_default()
            .to_string()
    };
    let matches: Vec<&ImageRecord> = match reference::as_digest(reference) {
        None => return Err(not_found()),
        Some(DigestRef::Full(hex)) => index.images.iter().filter(|r| hex_of(r) == hex).collect(),
        Some(DigestRef::Prefix(p)) => index
            .images
            .iter()
            .filter(|r| hex_of(r).starts_with(p))
            .collect(),
    };
    match matches.as_slice() {
        [] => Err(not_found()),
        [one] => Ok(one),
        many => Err(ImageError::Ambiguous {
            reference: reference.to_string(),
            matches: many.iter().map(|r| r.digest.clone()).collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(hex: &str, names: &[&str]) -> ImageRecord {
        ImageRecord {
            digest: format!("sha256:{hex}"),
            config_digest: String::new(),
            names: names.iter().map(|s| s.to_string()).collect(),
            chain_ids: vec![],
            size: 0,
            created: String::new(),
        }
    }

    #[test]
    fn references_find_images_by_name_digest_and_prefix() {
        let a = format!("abcd{}", "0".repeat(60));
        let b = format!("abce{}", "1".repeat(60));
        let index = Index {
            images: vec![
                record(&a, &["busybox:latest"]),
                record(&b, &["localhost:5000/x:1"]),
            ],
        };
        let digest_of = |r: &str| find(&index, r).map(|r| r.digest.clone());
        assert_eq!(digest_of("busybox").unwrap(), format!("sha256:{a}"));
        assert_eq!(digest_of("busybox:latest").unwrap(), format!("sha256:{a}"));
        assert_eq!(
            digest_of("docker.io/library/busybox").unwrap(),
            format!("sha256:{a}")
        );
        assert_eq!(
            digest_of("localhost:5000/x:1").unwrap(),
            format!("sha256:{b}")
        );
        assert_eq!(
            digest_of(&format!("sha256:{b}")).unwrap(),
            format!("sha256:{b}")
        );
        assert_eq!(digest_of("abce").unwrap(), format!("sha256:{b}"));
        assert!(matches!(
            find(&index, "abc"),
            Err(ImageError::NotFound { .. })
        ));
        assert!(find(&index, "abcd0").is_ok());
        assert!(matches!(
            find(&index, "sha256:abc"),
            Err(ImageError::NotFound { .. })
        ));
        match find(&index, "abc0").or(find(&index, "ab")) {
            Err(ImageError::NotFound { .. }) => {}
            other => panic!("{other:?}"),
        }
        assert!(matches!(find(&index, "abcd").map(|_| ()), Ok(())));
        let err = find(&index, "sha256:abc").unwrap_err().to_string();
        assert!(err.contains("host-ctl image import"), "{err}");
        let index2 = Index {
            images: vec![
                record(&a, &[]),
                record(&format!("abcd{}", "2".repeat(60)), &[]),
            ],
        };
        assert!(matches!(
            find(&index2, "abcd"),
            Err(ImageError::Ambiguous { .. })
        ));
    }
}
