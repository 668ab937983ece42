//! Storage of apps added to a running sandbox pod (see
//! `kvmpod_api::addapp`): the apps share, mounted at boot; an added app's
//! root, an overlay of its layers from that share, and its own volumes at
//! `/mnt/<volume>` as boot mounts the pod's; and all of that taken down
//! again when the app is removed.

use std::fs;
use std::path::PathBuf;

use kvmpod_api::layout;
use kvmpod_api::manifest::{PodManifest, VolumeKind};
use kvmpod_api::mountapi::remove_empty_dirs;
use nix::mount::{mount, MsFlags};

use super::approot::{mount_overlay, upper_dir};
use super::host::mount_9p;
use super::mounts::unmount_under;
use super::{empty, StorageError};
use crate::error::Context;

/// Mounts the apps share at [`layout::APPS_SHARE_DIR`]. It is writable (an
/// added app's host volumes are in it) and changes while the pod runs, so
/// it is not cached beyond what `mmap` needs.
pub fn mount_apps_share(msize: u32) -> Result<(), StorageError> {
    let dir = layout::APPS_SHARE_DIR;
    fs::create_dir_all(dir).context(|| format!("creating {dir}"))?;
    let opts = format!("trans=virtio,version=9p2000.L,cache=mmap,msize={msize}");
    mount_9p(layout::APPS_SHARE_TAG, dir, MsFlags::empty(), &opts).context(|| {
        format!(
            "mounting the apps share (9p tag {:?}) at {dir}",
            layout::APPS_SHARE_TAG
        )
    })?;
    Ok(())
}

/// In the apps share, the guest path of `relative`.
fn in_apps_share(relative: PathBuf) -> PathBuf {
    PathBuf::from(layout::APPS_SHARE_DIR).join(relative)
}

/// Mounts added app `added`'s root (its `layers` layers, top first) and
/// the volumes it brings. What was mounted is taken down again when a
/// step fails.
pub fn mount_added(added: &PodManifest, layers: usize) -> Result<(), StorageError> {
    let Some(app) = added.apps.first() else {
        return Ok(());
    };
    let result = mount_parts(added, &app.name, layers);
    if result.is_err() {
        unmount_added(added);
    }
    result
}

fn mount_parts(added: &PodManifest, app: &str, layers: usize) -> Result<(), StorageError> {
    let lowers: Vec<PathBuf> = (0..layers)
        .map(|n| in_apps_share(layout::added_app_layer(app, n)))
        .collect();
    mount_overlay(app, &lowers)?;
    for v in &added.volumes {
        let dir = layout::volume_dir(&v.name);
        fs::create_dir_all(&dir).context(|| format!("creating {}", dir.display()))?;
        match v.kind {
            VolumeKind::Host => {
                let source = in_apps_share(layout::added_app_volume(app, &v.name));
                mount(
                    Some(source.as_path()),
                    &dir,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .context(|| format!("binding {} at {}", source.display(), dir.display()))?;
                if added.exported_read_only(v) {
                    let ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
                    mount(None::<&str>, &dir, None::<&str>, ro, None::<&str>)
                        .context(|| format!("making {} read-only", dir.display()))?;
                }
            }
            VolumeKind::Empty => empty::mount_volume(v, &dir)?,
        }
    }
    Ok(())
}

/// Takes down what [`mount_added`] mounted, and what assembling the
/// app's root mounted in it; frees its writable layer. Best effort: what
/// cannot be unmounted is detached.
pub fn unmount_added(added: &PodManifest) {
    let Some(app) = added.apps.first() else {
        return;
    };
    let app_dir = PathBuf::from(layout::STAGE2_DIR).join(&app.name);
    let mut prefixes = vec![app_dir.display().to_string()];
    prefixes.extend(
        added
            .volumes
            .iter()
            .map(|v| layout::volume_dir(&v.name).display().to_string()),
    );
    let refs: Vec<&str> = prefixes.iter().map(String::as_str).collect();
    let failures = unmount_under(&refs);
    for e in &failures {
        log::warn!("removing app {}: {e}", app.name);
    }
    // The writable layer is the guest's own tmpfs: freed only once nothing
    // is mounted from it. The rest is removed with rmdir only, so nothing
    // still mounted (a host volume) is ever deleted through.
    if failures.is_empty() {
        let upper = upper_dir(&app.name);
        if let Err(e) = fs::remove_dir_all(&upper) {
            log::warn!("removing app {}: {}: {e}", app.name, upper.display());
        }
    }
    remove_empty_dirs(&app_dir);
    for v in &added.volumes {
        let _ = fs::remove_dir(layout::volume_dir(&v.name));
    }
}
