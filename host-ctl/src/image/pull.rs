//! `ImageStore::pull`: fetches an image from an OCI registry (the
//! distribution protocol, through `oci-client`) and imports it through the
//! store's own path, so it is checked exactly as `image import` checks a
//! file: blob digests, diff IDs, hostile layer entries.
//!
//! The manifest is fetched first; an image the store already has (same
//! manifest digest) only gains the name, and no blob is downloaded. Else
//! the config and layers are downloaded into `tmp/pull-<pid>-<n>/`, each
//! checked against its descriptor, and imported. Whatever fails, or a
//! SIGINT/SIGTERM during the download, leaves the store as it was: the
//! download directory goes when its guard drops, and the import undoes
//! itself. The download runs without the store's lock (it can take long);
//! only the naming and the import take it.

mod blob;
mod registry;
mod target;

use std::fs;
use std::future::Future;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::{stream, StreamExt, TryStreamExt};

use super::error::{ImageError, IoContext};
use super::fsutil::remove_any;
use super::index::{ImageRecord, Index};
use super::source::{NameHint, SourceImage, SourceLayer};
use super::ImageStore;
use registry::Registry;
use target::Target;

/// Layers downloaded at once.
const PARALLEL_LAYERS: usize = 3;

/// How to pull.
pub struct PullOptions<'a> {
    /// Allow plain HTTP to a registry that is not on this host.
    pub insecure: bool,
    /// End the download cleanly on SIGINT and SIGTERM, removing what it
    /// wrote (the CLI wants this). Off for library callers: tokio's signal
    /// handlers, once installed, stay for the life of the process.
    pub stop_on_signals: bool,
    /// Told how the download goes.
    pub progress: &'a (dyn Fn(PullEvent<'_>) + Sync),
}

/// How a pull goes, for progress displays.
#[derive(Debug, Clone, Copy)]
pub enum PullEvent<'e> {
    /// A layer's download (`layer <n>`) of `size` bytes began.
    Started { what: &'e str, size: u64 },
    /// `bytes` more of it arrived (hashed and written).
    Advanced { what: &'e str, bytes: u64 },
    /// A blob (the config or a layer) was downloaded and checked.
    Fetched(&'e Fetched),
}

/// A blob downloaded and checked, for progress lines.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// `config` or `layer <n>`.
    pub what: String,
    pub digest: String,
    pub size: u64,
}

/// What a pull did.
#[derive(Debug, Clone)]
pub struct PullReport {
    pub record: ImageRecord,
    /// Blobs (config and layers) downloaded; 0 when the store already had
    /// the image. Manifests are always fetched: they say which image it is.
    pub blobs: usize,
    /// Their bytes, as downloaded.
    pub bytes: u64,
}

/// What the download phase ends with.
enum Outcome {
    /// The store has the image already (and it now has the name).
    Stored(ImageRecord),
    Downloaded(Downloaded),
}

struct Downloaded {
    image: SourceImage,
    /// Holds the layer files; removed when dropped.
    work: WorkDir,
    blobs: usize,
    bytes: u64,
}

impl ImageStore {
    /// Pulls `reference` (`host/repo:tag`, `host/repo@sha256:...`,
    /// `repo:tag` from Docker Hub, optionally `http://` or `https://` first)
    /// and names it by the normalised reference.
    pub fn pull(
        &self,
        reference: &str,
        options: &PullOptions<'_>,
    ) -> Result<PullReport, ImageError> {
        let target = Target::parse(reference, options.insecure)?;
        match on_own_runtime(&target, || self.fetch(&target, options))? {
            Outcome::Stored(record) => Ok(PullReport {
                record,
                blobs: 0,
                bytes: 0,
            }),
            Outcome::Downloaded(d) => {
                let names = target.name.iter().cloned().collect();
                let record = self.import_named(&d.image, names)?;
                d.work.remove()?;
                Ok(PullReport {
                    record,
                    blobs: d.blobs,
                    bytes: d.bytes,
                })
            }
        }
    }

    /// The download phase, ended early by a signal if asked to.
    async fn fetch(
        &self,
        target: &Target,
        options: &PullOptions<'_>,
    ) -> Result<Outcome, ImageError> {
        let download = self.download(target, options.progress);
        if !options.stop_on_signals {
            return download.await;
        }
        tokio::select! {
            biased;
            () = interrupted() => Err(ImageError::Pull {
                reference: target.shown.clone(),
                reason: "interrupted; nothing was added to the store".into(),
            }),
            outcome = download => outcome,
        }
    }

    /// Fetches the manifest, then the blobs unless the store has that
    /// image already (its digest says so).
    async fn download(
        &self,
        target: &Target,
        progress: &(dyn Fn(PullEvent<'_>) + Sync),
    ) -> Result<Outcome, ImageError> {
        let registry = Registry::new(target);
        let manifest = registry.manifest().await?;
        if let Some(record) = self.name_stored(&manifest.digest, target.name.as_deref())? {
            return Ok(Outcome::Stored(record));
        }
        let work = WorkDir::create(&self.root.join("tmp"))?;
        let config_desc = manifest.parsed.config();
        let config = blob::to_memory(&registry, config_desc).await?;
        progress(PullEvent::Fetched(&Fetched {
            what: "config".into(),
            digest: config_desc.digest().to_string(),
            size: config.len() as u64,
        }));
        let layers = fetch_layers(&registry, &manifest.parsed, &work.path, progress).await?;
        let bytes = config.len() as u64
            + manifest
                .parsed
                .layers()
                .iter()
                .map(|l| l.size())
                .sum::<u64>();
        Ok(Outcome::Downloaded(Downloaded {
            image: SourceImage {
                names: NameHint::default(),
                manifest: Some(manifest.bytes),
                config,
                layers,
            },
            work,
            blobs: 1 + manifest.parsed.layers().len(),
            bytes,
        }))
    }

    /// If the store has the image with manifest `digest`, gives it `name`
    /// (taken from any other image, as an import does) and returns it.
    fn name_stored(
        &self,
        digest: &str,
        name: Option<&str>,
    ) -> Result<Option<ImageRecord>, ImageError> {
        let _lock = self.lock()?;
        let mut index = Index::load(&self.index_path())?;
        if !index.images.iter().any(|r| r.digest == digest) {
            return Ok(None);
        }
        if let Some(name) = name {
            let mut changed = false;
            for r in &mut index.images {
                if r.digest == digest && !r.names.iter().any(|n| n == name) {
                    r.names.push(name.to_string());
                    changed = true;
                } else if r.digest != digest && r.names.iter().any(|n| n == name) {
                    r.names.retain(|n| n != name);
                    changed = true;
                }
            }
            if changed {
                index.save(&self.index_path())?;
            }
        }
        Ok(index.images.into_iter().find(|r| r.digest == digest))
    }
}

/// Downloads the layers into `dir`, a few at a time, in manifest order.
async fn fetch_layers(
    registry: &Registry<'_>,
    manifest: &oci_spec::image::ImageManifest,
    dir: &Path,
    progress: &(dyn Fn(PullEvent<'_>) + Sync),
) -> Result<Vec<SourceLayer>, ImageError> {
    let jobs = manifest
        .layers()
        .iter()
        .enumerate()
        .map(|(i, desc)| async move {
            let path = dir.join(format!("layer-{i}"));
            let what = format!("layer {i}");
            let w = what.as_str();
            progress(PullEvent::Started {
                what: w,
                size: desc.size(),
            });
            let advanced = |bytes| progress(PullEvent::Advanced { what: w, bytes });
            let size = blob::to_file(registry, desc, &path, &advanced).await?;
            let digest = desc.digest().to_string();
            progress(PullEvent::Fetched(&Fetched {
                what,
                digest: digest.clone(),
                size,
            }));
            Ok::<_, ImageError>(SourceLayer {
                path,
                label: format!("{i} ({digest})"),
                digest: Some(digest),
            })
        });
    stream::iter(jobs)
        .buffered(PARALLEL_LAYERS)
        .try_collect()
        .await
}

/// Runs the download on a current-thread runtime of its own, on a thread
/// of its own: `image pull` is called from inside host-ctl's runtime (whose
/// thread cannot block on another future) and from plain threads (tests).
fn on_own_runtime<T, F>(target: &Target, make: impl FnOnce() -> F + Send) -> Result<T, ImageError>
where
    T: Send,
    F: Future<Output = Result<T, ImageError>>,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| ImageError::Io {
                    context: format!("starting an async runtime to pull {}", target.shown),
                    source: e,
                })?;
            runtime.block_on(make())
        })
        .join()
        .unwrap_or_else(|_| {
            Err(ImageError::Pull {
                reference: target.shown.clone(),
                reason: "the download thread panicked".into(),
            })
        })
    })
}

/// Resolves when the process gets SIGINT or SIGTERM; never, if the
/// handlers cannot be installed.
async fn interrupted() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}

/// The directory a pull downloads into, removed with all it holds when
/// dropped (an error, a signal) or explicitly once imported.
struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    fn create(tmp: &Path) -> Result<WorkDir, ImageError> {
        // Several pulls may run in one process (tests do).
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = tmp.join(format!("pull-{}-{n}", std::process::id()));
        remove_any(&path)?;
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .ctx("creating", &path)?;
        Ok(WorkDir { path })
    }

    /// Removes the directory now, reporting a failure.
    fn remove(self) -> Result<(), ImageError> {
        remove_any(&self.path)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = remove_any(&self.path);
    }
}
