//! The guest's own file systems, mounted before anything else runs.

use std::fs;

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};

use crate::error::{Context, SysError};

/// One file system to mount at boot.
struct BaseMount {
    source: &'static str,
    target: &'static str,
    fstype: &'static str,
    flags: MsFlags,
    data: Option<&'static str>,
}

const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// In mount order: `/dev/pts` and `/dev/shm` live on the devtmpfs.
const BASE_MOUNTS: &[BaseMount] = &[
    BaseMount {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
    },
    BaseMount {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
    },
    BaseMount {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        flags: MsFlags::MS_NOSUID,
        data: Some("mode=0755"),
    },
    BaseMount {
        source: "devpts",
        target: "/dev/pts",
        fstype: "devpts",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        data: Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    },
    BaseMount {
        source: "shm",
        target: "/dev/shm",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: Some("mode=1777"),
    },
    BaseMount {
        source: "run",
        target: "/run",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: Some("mode=0755"),
    },
    BaseMount {
        source: "tmp",
        target: "/tmp",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: Some("mode=1777"),
    },
];

/// Mounts `/proc`, `/sys`, `/dev` (devtmpfs), `/dev/pts`, `/dev/shm`, `/run`
/// and `/tmp`. A file system the kernel already mounted is fine.
pub(super) fn mount_base() -> Result<(), SysError> {
    for m in BASE_MOUNTS {
        fs::create_dir_all(m.target).context(|| format!("creating {}", m.target))?;
        match mount(Some(m.source), m.target, Some(m.fstype), m.flags, m.data) {
            Ok(()) | Err(Errno::EBUSY) => {}
            Err(errno) => {
                return Err(SysError {
                    context: format!("mounting {} at {}", m.fstype, m.target),
                    errno,
                })
            }
        }
    }
    Ok(())
}

/// Makes the agent the last process the kernel's OOM killer picks: without
/// PID 1 nothing reports or powers off (Kata #1111).
pub(super) fn protect_from_oom() {
    if let Err(e) = fs::write("/proc/self/oom_score_adj", "-1000") {
        log::warn!("cannot set the agent's oom_score_adj: {e}");
    }
}
