//! The container's root: containerd 1.6 hands a v2 shim the snapshot's
//! mounts (overlayfs, or a bind for the native snapshotter) and leaves
//! mounting them on `<bundle>/rootfs` to the shim. That directory is then
//! the app's root, shared read-only with the guest as any root directory
//! is (the app writes to a layer of its own in the guest).

use std::path::Path;

use containerd_shim::protos::api::Mount;
use nix::mount::{umount2, MntFlags};

use crate::error::ShimError;

/// Mounts `mounts` in order on `target`; whether anything was mounted.
/// A failure unmounts what was mounted before it.
pub async fn mount(mounts: &[Mount], target: &Path) -> Result<bool, ShimError> {
    for m in mounts {
        if let Err(e) = containerd_shim::util::mount_rootfs(m, target).await {
            let _ = unmount(target);
            return Err(ShimError::Mount {
                target: target.display().to_string(),
                why: format!("{} {}: {e}", m.type_, m.source),
            });
        }
    }
    Ok(!mounts.is_empty())
}

/// Unmounts whatever is mounted on `target` (nothing is fine).
pub fn unmount(target: &Path) -> Result<(), ShimError> {
    loop {
        match umount2(target, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => return Ok(()),
            Err(e) => {
                return Err(ShimError::Mount {
                    target: target.display().to_string(),
                    why: format!("unmounting: {e}"),
                })
            }
        }
    }
}
