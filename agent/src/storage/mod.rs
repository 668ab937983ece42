//! Storage: everything the pod's files live on.
//!
//! It owns the pod's share (its settings and the app roots' read-only
//! layers, over 9p); the pod's volumes at `/mnt/<volume>` (one handler per
//! kind: a 9p share of a host directory, or an empty tmpfs), mounted before
//! any app starts (rkt ordered its 9p mount units `Before=` every app
//! service); each app's root, an overlay of its layers under a writable
//! tmpfs layer, assembled once before its first start; and resolution of
//! paths inside an app's root that never leaves it, because an app image is
//! untrusted; and `host-ctl cp`'s archives of an app's files, and their
//! extraction into it, by the same rules. It also takes every mount down again at shutdown, so each
//! write reaches the host before power-off.
//!
//! It uses only the shared system call error: nothing above it.

mod added;
mod approot;
mod copy;
mod empty;
mod error;
mod host;
mod mounts;
mod resolve;
mod tar;

use std::fs;

use kvmpod_api::config::AgentConfig;
use kvmpod_api::layout;
use kvmpod_api::manifest::{PodManifest, VolumeKind};

use crate::error::Context;

pub use added::{mount_added, mount_apps_share, unmount_added};
pub use approot::{assemble, mount_app_roots, write_pod_files};
pub use copy::{copy_in, copy_out};
pub use error::StorageError;
pub use host::mount_pod_share;
#[cfg(test)]
pub(crate) use mounts::private_mount_namespace;
pub use mounts::unmount_under;
pub use resolve::{fd_path, open_in_root, open_root};

/// Mounts every app's root, a sandbox pod's apps share, then every volume
/// of the pod, each by the handler of its kind.
pub fn mount_all(pod: &PodManifest, config: &AgentConfig) -> Result<(), StorageError> {
    mount_app_roots(&config.app_roots)?;
    if pod.sandbox {
        mount_apps_share(config.ninep_msize)?;
    }
    let host_volumes = pod.volumes.iter().any(|v| v.kind == VolumeKind::Host);
    if config.volumes_share && host_volumes {
        host::mount_volumes_share(config.ninep_msize)?;
    }
    for v in &pod.volumes {
        let dir = layout::volume_dir(&v.name);
        fs::create_dir_all(&dir).context(|| format!("creating {}", dir.display()))?;
        match v.kind {
            VolumeKind::Host if config.volumes_share => {
                host::bind_volume(v, &dir, pod.exported_read_only(v))?;
            }
            VolumeKind::Host => {
                host::mount_volume(v, &dir, pod.exported_read_only(v), config.ninep_msize)?;
            }
            VolumeKind::Empty => empty::mount_volume(v, &dir)?,
        }
    }
    Ok(())
}
