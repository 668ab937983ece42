//! The OCI spec's `mounts`, as a kvmpod pod takes them: a bind mount of a
//! host directory becomes a host volume (shared into the guest over 9p)
//! mounted at its destination, read-only with `ro`; a tmpfs becomes one of
//! the app's tmpfs mounts. The kernel file systems every spec lists
//! (`/proc`, `/sys`, `/dev`, devpts, mqueue, cgroup) are the guest's own,
//! set up by the agent in the app's root, and so are the `/etc` files a
//! runtime binds in (the agent writes `/etc/hosts`, `/etc/hostname` and
//! `/etc/resolv.conf` for the pod). Anything else is refused by name
//! rather than dropped.

use std::path::PathBuf;

use kvmpod_api::manifest::{parse_mode, parse_size, MountPoint, TmpfsMount, Volume, VolumeKind};
use serde::Deserialize;

use crate::error::ShimError;

/// One entry of the spec's `mounts`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct OciMount {
    pub destination: String,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub source: Option<PathBuf>,
    #[serde(default)]
    pub options: Vec<String>,
}

/// File systems the agent gives every app itself.
const GUEST_OWN_TYPES: [&str; 6] = ["proc", "sysfs", "devpts", "mqueue", "cgroup", "cgroup2"];
/// Destinations the agent fills itself: a tmpfs `/dev`, and the `/etc`
/// files of the pod's name and network.
const GUEST_OWN_PATHS: [&str; 5] = [
    "/dev",
    "/dev/shm",
    "/etc/hosts",
    "/etc/hostname",
    "/etc/resolv.conf",
];

/// What the spec's mounts add to the pod: host volumes, and the app's
/// mount points and tmpfs mounts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mounts {
    pub volumes: Vec<Volume>,
    pub mount_points: Vec<MountPoint>,
    pub tmpfs: Vec<TmpfsMount>,
}

impl OciMount {
    fn is_bind(&self) -> bool {
        self.kind.as_deref() == Some("bind")
            || self.options.iter().any(|o| o == "bind" || o == "rbind")
    }

    fn option(&self, key: &str) -> Option<&str> {
        self.options
            .iter()
            .find_map(|o| o.strip_prefix(key)?.strip_prefix('='))
    }

    fn unsupported(&self, why: &str) -> ShimError {
        ShimError::Spec(format!(
            "mount at {:?} ({}): {why}",
            self.destination,
            self.kind.as_deref().unwrap_or("no type")
        ))
    }
}

/// Turns the spec's mounts into the pod's: see the module documentation.
pub fn convert(mounts: &[OciMount], prefix: &str) -> Result<Mounts, ShimError> {
    let mut out = Mounts::default();
    for m in mounts {
        let kind = m.kind.as_deref().unwrap_or_default();
        if GUEST_OWN_TYPES.contains(&kind) || GUEST_OWN_PATHS.contains(&m.destination.as_str()) {
            continue;
        }
        if m.is_bind() {
            bind(m, prefix, &mut out)?;
        } else if kind == "tmpfs" {
            out.tmpfs.push(tmpfs(m)?);
        } else {
            return Err(m.unsupported(
                "only bind mounts of host directories and tmpfs mounts are supported",
            ));
        }
    }
    Ok(out)
}

/// A bind mount of a host directory: a host volume of its own.
fn bind(m: &OciMount, prefix: &str, out: &mut Mounts) -> Result<(), ShimError> {
    let source = m
        .source
        .clone()
        .ok_or_else(|| m.unsupported("a bind mount needs a source"))?;
    if !source.is_dir() {
        return Err(m.unsupported(&format!(
            "{} is not a directory; kvmpod shares host directories into the VM, not single files",
            source.display()
        )));
    }
    let name = format!("{prefix}-{}", out.volumes.len());
    out.volumes.push(Volume {
        name: name.clone(),
        kind: VolumeKind::Host,
        source: Some(source),
        read_only: None,
        mode: None,
        uid: None,
        gid: None,
        size: None,
    });
    out.mount_points.push(MountPoint {
        volume: name,
        path: m.destination.clone(),
        read_only: m.options.iter().any(|o| o == "ro"),
    });
    Ok(())
}

/// A tmpfs with its `size=` and `mode=` options.
fn tmpfs(m: &OciMount) -> Result<TmpfsMount, ShimError> {
    let size = m
        .option("size")
        .map(parse_size)
        .transpose()
        .map_err(|e| m.unsupported(&e.to_string()))?;
    let mode = m
        .option("mode")
        .map(parse_mode)
        .transpose()
        .map_err(|e| m.unsupported(&e.to_string()))?;
    Ok(TmpfsMount {
        path: m.destination.clone(),
        size,
        mode,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mounts(json: &str) -> Vec<OciMount> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn kernel_file_systems_are_the_guests_own() {
        // What `ctr run` puts in every spec.
        let m = mounts(
            r#"[
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts"},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm"},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue"},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs"},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup"}
        ]"#,
        );
        assert_eq!(convert(&m, "mount").unwrap(), Mounts::default());
    }

    #[test]
    fn a_directory_bind_is_a_host_volume_and_a_tmpfs_is_a_tmpfs() {
        let dir = std::env::temp_dir();
        let m = vec![
            OciMount {
                destination: "/data".into(),
                kind: Some("bind".into()),
                source: Some(dir.clone()),
                options: vec!["rbind".into(), "ro".into()],
            },
            OciMount {
                destination: "/scratch".into(),
                kind: Some("tmpfs".into()),
                source: Some("tmpfs".into()),
                options: vec!["nosuid".into(), "size=64m".into(), "mode=755".into()],
            },
            OciMount {
                destination: "/rw".into(),
                kind: None,
                source: Some(dir.clone()),
                options: vec!["bind".into()],
            },
        ];
        let got = convert(&m, "mount").unwrap();
        assert_eq!(got.volumes.len(), 2);
        assert_eq!(got.volumes[0].name, "mount-0");
        assert_eq!(got.volumes[0].source.as_deref(), Some(dir.as_path()));
        assert_eq!(got.volumes[0].kind, VolumeKind::Host);
        assert_eq!(
            got.mount_points,
            [
                MountPoint {
                    volume: "mount-0".into(),
                    path: "/data".into(),
                    read_only: true
                },
                MountPoint {
                    volume: "mount-1".into(),
                    path: "/rw".into(),
                    read_only: false
                }
            ]
        );
        assert_eq!(
            got.tmpfs,
            [TmpfsMount {
                path: "/scratch".into(),
                size: Some(64 << 20),
                mode: Some(0o755)
            }]
        );
    }

    #[test]
    fn what_cannot_be_shared_is_refused_by_name() {
        let file = OciMount {
            destination: "/etc/app.conf".into(),
            kind: Some("bind".into()),
            source: Some("/etc/os-release".into()),
            options: vec!["rbind".into()],
        };
        let e = convert(&[file], "mount").unwrap_err().to_string();
        assert!(
            e.contains("/etc/app.conf") && e.contains("not a directory"),
            "{e}"
        );
        // The pod's own /etc files are the agent's.
        let hosts = OciMount {
            destination: "/etc/hosts".into(),
            kind: Some("bind".into()),
            source: Some("/etc/hosts".into()),
            options: vec!["rbind".into()],
        };
        assert_eq!(convert(&[hosts], "mount").unwrap(), Mounts::default());
        let block = OciMount {
            destination: "/disk".into(),
            kind: Some("ext4".into()),
            source: Some("/dev/vdb".into()),
            options: vec![],
        };
        let e = convert(&[block], "mount").unwrap_err().to_string();
        assert!(e.contains("/disk") && e.contains("ext4"), "{e}");
        let bad_size = OciMount {
            destination: "/t".into(),
            kind: Some("tmpfs".into()),
            source: None,
            options: vec!["size=lots".into()],
        };
        assert!(convert(&[bad_size], "mount").is_err());
    }
}
