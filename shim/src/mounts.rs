//! The OCI spec's `mounts`, as a kvmpod pod takes them: a bind mount of a
//! host directory becomes a host volume (shared into the guest over 9p)
//! mounted at its destination, read-only with `ro`; a bind mount of a
//! single file (the kubelet's `/dev/termination-log`) is bound onto a file
//! in a directory of the shim's own in the bundle, which is shared, and the
//! app mounts that one file of it (`subPath`): 9p shares directories, and
//! sharing the file's own directory would show the guest its neighbours. A
//! tmpfs becomes one of the app's tmpfs mounts. The kernel file systems every spec lists
//! (`/proc`, `/sys`, `/dev`, devpts, mqueue, cgroup) are the guest's own,
//! set up by the agent in the app's root, and so are the `/etc` files a
//! runtime binds in (the agent writes `/etc/hosts`, `/etc/hostname` and
//! `/etc/resolv.conf` for the pod). Anything else is refused by name
//! rather than dropped.

use std::path::{Path, PathBuf};

use kvmpod_api::manifest::{parse_mode, parse_size, MountPoint, TmpfsMount, Volume, VolumeKind};
use kvmpod_api::mountapi::mount_points;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
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

/// The one file of a shared directory that a single-file bind shows.
const FILE_NAME: &str = "file";

/// A single host file to bind onto `<dir>/file` before the pod starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileBind {
    pub source: PathBuf,
    pub dir: PathBuf,
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

/// Whether the agent provides what `m` mounts itself.
fn guest_own(m: &OciMount) -> bool {
    let kind = m.kind.as_deref().unwrap_or_default();
    GUEST_OWN_TYPES.contains(&kind) || GUEST_OWN_PATHS.contains(&m.destination.as_str())
}

/// The directory a single-file bind (mount `j` of the spec) is shared
/// through, under `files_dir`.
fn file_dir(files_dir: &Path, j: usize) -> PathBuf {
    files_dir.join(j.to_string())
}

/// Turns the spec's mounts into the pod's (see the module documentation);
/// single files are shared through directories under `files_dir`.
pub fn convert(mounts: &[OciMount], prefix: &str, files_dir: &Path) -> Result<Mounts, ShimError> {
    let mut out = Mounts::default();
    for (j, m) in mounts.iter().enumerate() {
        let kind = m.kind.as_deref().unwrap_or_default();
        if guest_own(m) {
            continue;
        }
        if m.is_bind() {
            bind(m, prefix, &file_dir(files_dir, j), &mut out)?;
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

/// The single-file binds of the spec, to make before the pod starts.
pub fn file_binds(mounts: &[OciMount], files_dir: &Path) -> Vec<FileBind> {
    mounts
        .iter()
        .enumerate()
        .filter(|(_, m)| !guest_own(m) && m.is_bind())
        .filter_map(|(j, m)| {
            let source = m.source.clone()?;
            source.is_file().then(|| FileBind {
                source,
                dir: file_dir(files_dir, j),
            })
        })
        .collect()
}

/// Makes each bind: `<dir>/file`, a host file's bind mount.
pub fn bind_files(binds: &[FileBind]) -> Result<(), ShimError> {
    for b in binds {
        let target = b.dir.join(FILE_NAME);
        let io = |source| ShimError::Io {
            what: format!("creating {}", target.display()),
            source,
        };
        std::fs::create_dir_all(&b.dir).map_err(io)?;
        std::fs::File::create(&target).map_err(io)?;
        mount(
            Some(b.source.as_path()),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| ShimError::Mount {
            target: target.display().to_string(),
            why: format!("binding {}: {e}", b.source.display()),
        })?;
    }
    Ok(())
}

/// Undoes [`bind_files`]: what is mounted under `files_dir` is detached,
/// and the directory removed.
pub fn unbind_files(files_dir: &Path) {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut targets: Vec<PathBuf> = mount_points(&info)
        .into_iter()
        .map(PathBuf::from)
        .filter(|p| p.starts_with(files_dir))
        .collect();
    targets.reverse();
    for t in targets {
        let _ = umount2(&t, MntFlags::MNT_DETACH);
    }
    let _ = std::fs::remove_dir_all(files_dir);
}

/// A bind mount of a host directory, or of a single file (through the
/// directory `file_dir`): a host volume of its own.
fn bind(m: &OciMount, prefix: &str, file_dir: &Path, out: &mut Mounts) -> Result<(), ShimError> {
    let source = m
        .source
        .clone()
        .ok_or_else(|| m.unsupported("a bind mount needs a source"))?;
    let (shared, sub_path) = if source.is_dir() {
        (source, None)
    } else if source.is_file() {
        (file_dir.to_path_buf(), Some(FILE_NAME.to_string()))
    } else {
        return Err(m.unsupported(&format!(
            "{} is neither a directory nor a regular file",
            source.display()
        )));
    };
    let name = format!("{prefix}-{}", out.volumes.len());
    out.volumes.push(Volume {
        name: name.clone(),
        kind: VolumeKind::Host,
        source: Some(shared),
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
        sub_path,
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
        assert_eq!(
            convert(&m, "mount", Path::new("/b/files")).unwrap(),
            Mounts::default()
        );
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
        let got = convert(&m, "mount", Path::new("/b/files")).unwrap();
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
                    read_only: true,
                    sub_path: None,
                },
                MountPoint {
                    volume: "mount-1".into(),
                    path: "/rw".into(),
                    read_only: false,
                    sub_path: None,
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
    fn a_single_file_is_shared_through_a_directory_of_its_own() {
        let file = std::env::temp_dir().join(format!("kvmpod-shim-{}", std::process::id()));
        std::fs::write(&file, "x").unwrap();
        let m = vec![
            OciMount {
                destination: "/proc".into(),
                kind: Some("proc".into()),
                source: None,
                options: vec![],
            },
            OciMount {
                destination: "/dev/termination-log".into(),
                kind: Some("bind".into()),
                source: Some(file.clone()),
                options: vec!["rbind".into(), "rw".into()],
            },
        ];
        let files = Path::new("/b/files");
        let got = convert(&m, "mount", files).unwrap();
        assert_eq!(
            got.volumes[0].source.as_deref(),
            Some(Path::new("/b/files/1"))
        );
        assert_eq!(got.mount_points[0].path, "/dev/termination-log");
        assert_eq!(got.mount_points[0].sub_path.as_deref(), Some("file"));
        assert_eq!(
            file_binds(&m, files),
            [FileBind {
                source: file.clone(),
                dir: "/b/files/1".into()
            }]
        );
        std::fs::remove_file(&file).unwrap();
    }

    #[test]
    fn what_cannot_be_shared_is_refused_by_name() {
        let device = OciMount {
            destination: "/dev/mine".into(),
            kind: Some("bind".into()),
            source: Some("/dev/null".into()),
            options: vec!["rbind".into()],
        };
        let e = convert(&[device], "mount", Path::new("/b/files"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/dev/mine") && e.contains("neither"), "{e}");
        // The pod's own /etc files are the agent's.
        let hosts = OciMount {
            destination: "/etc/hosts".into(),
            kind: Some("bind".into()),
            source: Some("/etc/hosts".into()),
            options: vec!["rbind".into()],
        };
        assert_eq!(
            convert(&[hosts], "mount", Path::new("/b/files")).unwrap(),
            Mounts::default()
        );
        let block = OciMount {
            destination: "/disk".into(),
            kind: Some("ext4".into()),
            source: Some("/dev/vdb".into()),
            options: vec![],
        };
        let e = convert(&[block], "mount", Path::new("/b/files"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/disk") && e.contains("ext4"), "{e}");
        let bad_size = OciMount {
            destination: "/t".into(),
            kind: Some("tmpfs".into()),
            source: None,
            options: vec!["size=lots".into()],
        };
        assert!(convert(&[bad_size], "mount", Path::new("/b/files")).is_err());
    }
}
