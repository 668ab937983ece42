//! Host volumes: a host directory shared over 9p (virtio), one channel per
//! volume, named by the volume's 9p tag; in a VM from the warm pool, a
//! directory of the one volumes share, named the same, bound in.

use std::path::Path;
use std::time::{Duration, Instant};

use kvmpod_api::layout;
use kvmpod_api::manifest::Volume;
use kvmpod_api::tag::nine_p_tag;
use nix::errno::Errno;
use nix::mount::{mount, MsFlags};

use super::StorageError;
use crate::error::Context;

/// How long a 9p device may take to appear after its driver loaded.
const TAG_WAIT: Duration = Duration::from_secs(5);

/// The mount options of a host volume. `cache=mmap` is what rkt settled on:
/// without a cache mode 9p refuses writable `mmap`, and `cache=loose` lost
/// data at pod stop.
fn ninep_options(msize: u32) -> String {
    format!("trans=virtio,version=9p2000.L,cache=mmap,msize={msize}")
}

/// Mounts host volume `v` at `dir`; read-only when the host exports it so
/// (which keeps the guest from even trying to write).
pub(super) fn mount_volume(
    v: &Volume,
    dir: &Path,
    read_only: bool,
    msize: u32,
) -> Result<(), StorageError> {
    let tag = nine_p_tag(&v.name);
    let flags = if read_only {
        MsFlags::MS_RDONLY
    } else {
        MsFlags::empty()
    };
    mount_9p(&tag, &dir.to_string_lossy(), flags, &ninep_options(msize)).context(|| {
        format!(
            "mounting host volume {:?} (9p tag {tag:?}) at {}",
            v.name,
            dir.display()
        )
    })?;
    Ok(())
}

/// Mounts the pooled VM's volumes share at [`layout::POOL_VOLUMES_DIR`],
/// writable (each volume's own read-only rule is applied to its bind).
pub(super) fn mount_volumes_share(msize: u32) -> Result<(), StorageError> {
    let dir = layout::POOL_VOLUMES_DIR;
    std::fs::create_dir_all(dir).context(|| format!("creating {dir}"))?;
    let tag = layout::POOL_VOLUMES_TAG;
    mount_9p(tag, dir, MsFlags::empty(), &ninep_options(msize))
        .context(|| format!("mounting the volumes share (9p tag {tag:?}) at {dir}"))?;
    Ok(())
}

/// Binds host volume `v` from the volumes share at `dir`, read-only when
/// the host exports it so.
pub(super) fn bind_volume(v: &Volume, dir: &Path, read_only: bool) -> Result<(), StorageError> {
    let source = Path::new(layout::POOL_VOLUMES_DIR).join(nine_p_tag(&v.name));
    let what = || {
        format!(
            "binding host volume {:?} from {} at {}",
            v.name,
            source.display(),
            dir.display()
        )
    };
    mount(
        Some(&source),
        dir,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .context(what)?;
    if read_only {
        super::mounts::make_read_only(dir).context(what)?;
    }
    Ok(())
}

/// Mounts the pod's share (its settings, manifest and the app roots'
/// read-only layers) at [`layout::POD_SHARE_DIR`], read-only. Nothing in it
/// changes while the pod runs (image layers are immutable, an app root
/// directory is the user's promise), so the guest may cache it: `loose`
/// keeps what apps read in the guest's page cache instead of asking the
/// host again.
pub fn mount_pod_share(msize: u32) -> Result<(), StorageError> {
    let dir = layout::POD_SHARE_DIR;
    std::fs::create_dir_all(dir).context(|| format!("creating {dir}"))?;
    let opts = format!("trans=virtio,version=9p2000.L,cache=loose,msize={msize}");
    mount_9p(layout::POD_SHARE_TAG, dir, MsFlags::MS_RDONLY, &opts).context(|| {
        format!(
            "mounting the pod's share (9p tag {:?}) at {dir}",
            layout::POD_SHARE_TAG
        )
    })?;
    Ok(())
}

/// Mounts a 9p tag, waiting briefly for the device to be probed: ENOENT
/// means no channel with that tag (yet).
pub(super) fn mount_9p(tag: &str, dir: &str, flags: MsFlags, opts: &str) -> Result<(), Errno> {
    let deadline = Instant::now() + TAG_WAIT;
    loop {
        match mount(Some(tag), dir, Some("9p"), flags, Some(opts)) {
            Err(Errno::ENOENT) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_as_designed() {
        assert_eq!(
            ninep_options(512_000),
            "trans=virtio,version=9p2000.L,cache=mmap,msize=512000"
        );
    }
}
