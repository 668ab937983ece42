//! Where each app's root comes from: read-only layers (an app's root
//! directory, or an image's layers) that the pod's share carries, each
//! once however many apps use it. The agent stacks an app's layers with
//! overlayfs under a writable layer of its own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kvmpod_api::manifest::PodManifest;

use super::{defaults, LaunchError};
use crate::image::{ImageError, ImageStore};

/// The pod's read-only layers, numbered as the share's `roots/<n>`, and
/// each app's stack of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RootsPlan {
    /// Host directories, by their number in the share.
    pub layers: Vec<PathBuf>,
    /// Each app's layers, top first (overlayfs's `lowerdir` order).
    pub apps: BTreeMap<String, Vec<usize>>,
}

impl RootsPlan {
    /// Adds an app whose root is `layers` (bottom first, as images list
    /// them); a layer another app already uses is shared.
    pub fn add_app(&mut self, app: &str, layers: &[PathBuf]) {
        let mut stack: Vec<usize> = layers
            .iter()
            .map(|l| match self.layers.iter().position(|x| x == l) {
                Some(n) => n,
                None => {
                    self.layers.push(l.clone());
                    self.layers.len() - 1
                }
            })
            .collect();
        stack.reverse();
        self.apps.insert(app.to_string(), stack);
    }
}

/// Whether planning may write to the image store (`run`), or only read
/// it (`host-ctl args`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    Write,
    ReadOnly,
}

/// The roots of a pod: each app's root directory, root archive (imported
/// into the image store once) or image, whose configuration fills in what
/// the app leaves out. Returns the plan and the image digests the pod
/// uses (its lease).
pub fn plan(
    pod: &mut PodManifest,
    state_dir: &Path,
    store: Store,
) -> Result<(RootsPlan, Vec<String>), LaunchError> {
    let mut roots = RootsPlan::default();
    let mut digests = Vec::new();
    for app in &mut pod.apps {
        if let Some(reference) = app.image.clone() {
            let image = images(state_dir, store)?
                .ok_or_else(|| not_imported(&app.name, &reference))?
                .resolve(&reference)
                .map_err(|e| match e {
                    ImageError::NotFound { .. } => not_imported(&app.name, &reference),
                    e => LaunchError::Image(e),
                })?;
            defaults::apply(app, &image.config)?;
            roots.add_app(&app.name, &image.layers);
            digests.push(image.digest);
        } else if app.rootfs.is_dir() {
            roots.add_app(&app.name, std::slice::from_ref(&app.rootfs));
        } else if store == Store::ReadOnly {
            // `args` shows the layer an archive would become.
            let shown = PathBuf::from(format!("<{} unpacked>", app.rootfs.display()));
            roots.add_app(&app.name, &[shown]);
        } else {
            let image = images(state_dir, store)?
                .ok_or_else(|| LaunchError::Host("the image store cannot be opened".into()))?
                .import_root_archive(&app.rootfs)
                .map_err(|e| LaunchError::RootArchive {
                    app: app.name.clone(),
                    path: app.rootfs.clone(),
                    source: Box::new(e),
                })?;
            roots.add_app(&app.name, &image.layers);
            digests.push(image.digest);
        }
    }
    Ok((roots, digests))
}

/// The image store, opened (and created) when planning may write.
fn images(state_dir: &Path, store: Store) -> Result<Option<ImageStore>, LaunchError> {
    match store {
        Store::Write => Ok(Some(ImageStore::open(state_dir)?)),
        Store::ReadOnly => Ok(ImageStore::existing(state_dir)),
    }
}

fn not_imported(app: &str, reference: &str) -> LaunchError {
    LaunchError::Host(format!(
        "app {app:?}: no image {reference:?} in the image store; import it first \
         (`host-ctl image import FILE|DIR`, from `docker save`, `podman save` or an OCI layout)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_are_shared_and_stacked_top_first() {
        let mut r = RootsPlan::default();
        r.add_app("a", &["/base".into(), "/a".into()]);
        r.add_app("b", &["/base".into(), "/b".into(), "/b2".into()]);
        assert_eq!(r.layers, ["/base", "/a", "/b", "/b2"].map(PathBuf::from));
        assert_eq!(r.apps["a"], [1, 0]);
        assert_eq!(r.apps["b"], [3, 2, 0]);
    }
}
