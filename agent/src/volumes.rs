//! The pod's volumes at `/mnt/<volume>`: host volumes over 9p, empty volumes
//! on a tmpfs each. They are mounted before any app starts (rkt ordered its
//! 9p mount units `Before=` every app service).

use std::fs;
use std::time::{Duration, Instant};

use kvmpod_api::config::AgentConfig;
use kvmpod_api::layout;
use kvmpod_api::manifest::{PodManifest, Volume, VolumeKind};
use kvmpod_api::tag::nine_p_tag;
use nix::errno::Errno;
use nix::mount::{mount, MsFlags};

use crate::error::{Context, SysError};

/// How long a 9p device may take to appear after its driver loaded.
const TAG_WAIT: Duration = Duration::from_secs(5);

/// The mount options of a host volume. `cache=mmap` is what rkt settled on:
/// without a cache mode 9p refuses writable `mmap`, and `cache=loose` lost
/// data at pod stop.
pub fn ninep_options(msize: u32) -> String {
    format!("trans=virtio,version=9p2000.L,cache=mmap,msize={msize}")
}

/// The tmpfs options of an empty volume.
pub fn tmpfs_options(v: &Volume) -> String {
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

/// Mounts every volume of the pod.
pub fn mount_all(pod: &PodManifest, config: &AgentConfig) -> Result<(), SysError> {
    for v in &pod.volumes {
        let dir = layout::volume_dir(&v.name);
        fs::create_dir_all(&dir).context(|| format!("creating {}", dir.display()))?;
        match v.kind {
            VolumeKind::Host => {
                let tag = nine_p_tag(&v.name);
                let mut flags = MsFlags::empty();
                // Exported read-only by the host too; mounting it so keeps
                // the guest from even trying.
                if pod.exported_read_only(v) {
                    flags |= MsFlags::MS_RDONLY;
                }
                let opts = ninep_options(config.ninep_msize);
                mount_9p(&tag, &dir.to_string_lossy(), flags, &opts).context(|| {
                    format!(
                        "mounting host volume {:?} (9p tag {tag:?}) at {}",
                        v.name,
                        dir.display()
                    )
                })?;
            }
            VolumeKind::Empty => {
                mount(
                    Some("tmpfs"),
                    &dir,
                    Some("tmpfs"),
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                    Some(tmpfs_options(v).as_str()),
                )
                .context(|| format!("creating empty volume {:?} at {}", v.name, dir.display()))?;
            }
        }
    }
    Ok(())
}

/// Mounts a 9p tag, waiting briefly for the device to be probed: ENOENT
/// means no channel with that tag (yet).
fn mount_9p(tag: &str, dir: &str, flags: MsFlags, opts: &str) -> Result<(), Errno> {
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
