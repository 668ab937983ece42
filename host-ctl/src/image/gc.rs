//! Leases, removal and pruning. A pod's lease keeps its images from being
//! removed under it. The index is saved before anything is deleted, so a
//! crash in between leaves unreferenced files (which `prune` collects),
//! never an image whose snapshots are gone.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;

use serde::Serialize;

use super::digest::SHA256_PREFIX;
use super::error::{ImageError, IoContext};
use super::fsutil::{remove_any, write_atomic, FreedBytes};
use super::index::{ImageRecord, Index};
use super::{find, ImageStore};

/// What `prune` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PruneReport {
    /// Digests of the unnamed, unleased images removed.
    pub images: Vec<String>,
    pub snapshots: usize,
    pub blobs: usize,
    /// Leftovers of interrupted imports.
    pub tmp: usize,
    pub bytes_freed: u64,
}

impl ImageStore {
    /// Records that pod `pod_id` uses these images (manifest digests), as
    /// well as those it already holds.
    pub fn lease(&self, pod_id: &str, digests: &[String]) -> Result<(), ImageError> {
        check_pod_id(pod_id)?;
        let _lock = self.lock()?;
        let index = Index::load(&self.index_path())?;
        for d in digests {
            if !index.images.iter().any(|r| &r.digest == d) {
                return Err(ImageError::NotFound {
                    reference: d.clone(),
                });
            }
        }
        // Apps added to a running pod add their images to its lease.
        let mut all: Vec<String> = fs::read(self.lease_path(pod_id))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        for d in digests {
            if !all.contains(d) {
                all.push(d.clone());
            }
        }
        let bytes = serde_json::to_vec(&all)
            .map_err(|e| ImageError::json("serialising lease", &self.lease_path(pod_id), e))?;
        write_atomic(&self.lease_path(pod_id), &bytes)
    }

    /// Drops pod `pod_id`'s lease, if it has one.
    pub fn release(&self, pod_id: &str) {
        if check_pod_id(pod_id).is_ok() {
            let _ = fs::remove_file(self.lease_path(pod_id));
        }
    }

    /// Removes an image and what no other image uses. Refused while a pod
    /// holds a lease on it, unless `force`.
    pub fn remove(&self, reference: &str, force: bool) -> Result<ImageRecord, ImageError> {
        let _lock = self.lock()?;
        let mut index = Index::load(&self.index_path())?;
        let record = find(&index, reference)?.clone();
        if !force {
            let pods: Vec<String> = self
                .leases()?
                .into_iter()
                .filter(|(_, digests)| digests.contains(&record.digest))
                .map(|(pod, _)| pod)
                .collect();
            if !pods.is_empty() {
                return Err(ImageError::InUse {
                    reference: reference.to_string(),
                    pods,
                });
            }
        }
        index.images.retain(|r| r.digest != record.digest);
        index.save(&self.index_path())?;
        let doomed = self.unreferenced(&index, Some(&record))?;
        for path in &doomed {
            remove_any(path)?;
        }
        Ok(record)
    }

    /// Removes unnamed images no pod leases, snapshots and blobs no image
    /// uses, and what interrupted imports left.
    pub fn prune(&self) -> Result<PruneReport, ImageError> {
        let _lock = self.lock()?;
        let mut index = Index::load(&self.index_path())?;
        let leased: BTreeSet<String> = self.leases()?.into_values().flatten().collect();
        let mut report = PruneReport::default();
        index.images.retain(|r| {
            let keep = !r.names.is_empty() || leased.contains(&r.digest);
            if !keep {
                report.images.push(r.digest.clone());
            }
            keep
        });
        if !report.images.is_empty() {
            index.save(&self.index_path())?;
        }
        let mut doomed = self.unreferenced(&index, None)?;
        let tmp = self.root.join("tmp");
        for entry in fs::read_dir(&tmp).ctx("listing", &tmp)? {
            doomed.push(entry.ctx("listing", &tmp)?.path());
            report.tmp += 1;
        }
        let mut freed = FreedBytes::default();
        for path in &doomed {
            freed.add(path)?;
            if path.starts_with(self.root.join("snapshots")) {
                report.snapshots += 1;
            } else if path.starts_with(self.root.join("blobs")) {
                report.blobs += 1;
            }
        }
        report.bytes_freed = freed.total();
        for path in &doomed {
            remove_any(path)?;
        }
        Ok(report)
    }

    /// Snapshots and blobs the index does not use: those of `only` (an
    /// image just removed), or all of them (partial snapshots included).
    fn unreferenced(
        &self,
        index: &Index,
        only: Option<&ImageRecord>,
    ) -> Result<Vec<PathBuf>, ImageError> {
        let hex = |d: &String| d.strip_prefix(SHA256_PREFIX).unwrap_or(d).to_string();
        let used_snapshots: BTreeSet<String> = index
            .images
            .iter()
            .flat_map(|r| r.chain_ids.iter().map(hex))
            .collect();
        let used_blobs: BTreeSet<String> = index
            .images
            .iter()
            .flat_map(|r| [hex(&r.digest), hex(&r.config_digest)])
            .collect();
        let (snapshots, blobs) = match only {
            Some(r) => (
                r.chain_ids.iter().map(hex).collect(),
                vec![hex(&r.digest), hex(&r.config_digest)],
            ),
            None => (self.names_in("snapshots")?, self.names_in("blobs/sha256")?),
        };
        let mut out: Vec<PathBuf> = snapshots
            .into_iter()
            .filter(|s| !used_snapshots.contains(s))
            .map(|s| self.root.join("snapshots").join(s))
            .collect();
        out.extend(
            blobs
                .into_iter()
                .filter(|b| !used_blobs.contains(b))
                .map(|b| self.root.join("blobs/sha256").join(b)),
        );
        out.retain(|p| p.symlink_metadata().is_ok());
        Ok(out)
    }

    fn names_in(&self, dir: &str) -> Result<Vec<String>, ImageError> {
        let dir = self.root.join(dir);
        let mut names = Vec::new();
        for entry in fs::read_dir(&dir).ctx("listing", &dir)? {
            names.push(
                entry
                    .ctx("listing", &dir)?
                    .file_name()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
        Ok(names)
    }

    fn lease_path(&self, pod_id: &str) -> PathBuf {
        self.root.join("leases").join(pod_id)
    }

    /// Every pod's leased digests.
    fn leases(&self) -> Result<BTreeMap<String, Vec<String>>, ImageError> {
        let dir = self.root.join("leases");
        let mut out = BTreeMap::new();
        for entry in fs::read_dir(&dir).ctx("listing", &dir)? {
            let entry = entry.ctx("listing", &dir)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            let bytes = fs::read(&path).ctx("reading lease", &path)?;
            let digests: Vec<String> = serde_json::from_slice(&bytes)
                .map_err(|e| ImageError::json("parsing lease", &path, e))?;
            out.insert(name, digests);
        }
        Ok(out)
    }
}

/// A pod ID is one path component.
fn check_pod_id(pod_id: &str) -> Result<(), ImageError> {
    let ok = !pod_id.is_empty()
        && pod_id.len() <= 255
        && !pod_id.starts_with('.')
        && !pod_id.contains(['/', '\0']);
    if ok {
        Ok(())
    } else {
        Err(ImageError::Invalid(format!(
            "{pod_id:?} is not a valid pod ID"
        )))
    }
}
