//! Empty volumes: a fresh tmpfs each, in guest memory, shared by the apps
//! that mount it.

use std::path::Path;

use kvmpod_api::manifest::Volume;
use nix::mount::{mount, MsFlags};

use super::StorageError;
use crate::error::Context;

/// The tmpfs options of an empty volume.
fn tmpfs_options(v: &Volume) -> String {
    let mut opts = format!(
        "mode={:04o},uid={},gid={}",
        v.mode.unwrap_or(0o755),
        v.uid.unwrap_or(0),
        v.gid.unwrap_or(0)
    );
    if let Some(size) = v.size {
        opts.push_str(&format!(",size={size}"));
    }
    opts
}

/// Mounts empty volume `v` at `dir`.
pub(super) fn mount_volume(v: &Volume, dir: &Path) -> Result<(), StorageError> {
    mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(tmpfs_options(v).as_str()),
    )
    .context(|| format!("creating empty volume {:?} at {}", v.name, dir.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvmpod_api::manifest::VolumeKind;

    #[test]
    fn options_are_as_designed() {
        let mut v = Volume {
            name: "scratch".into(),
            kind: VolumeKind::Empty,
            source: None,
            read_only: None,
            mode: None,
            uid: None,
            gid: None,
            size: None,
        };
        assert_eq!(tmpfs_options(&v), "mode=0755,uid=0,gid=0");
        v.mode = Some(0o1777);
        v.uid = Some(1000);
        v.gid = Some(100);
        v.size = Some(64 << 20);
        assert_eq!(
            tmpfs_options(&v),
            "mode=1777,uid=1000,gid=100,size=67108864"
        );
    }
}
