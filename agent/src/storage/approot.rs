//! Assembling an app's root, once, before its first start: the root made a
//! mount point (so the app can `pivot_root` into it), its own `/proc`, a
//! read-only `/sys`, a minimal `/dev`, the pod's `/etc/hosts`,
//! `/etc/hostname` and `/etc/resolv.conf`, the manifest's tmpfs mounts and
//! volumes, and finally the root itself read-only if asked. Every target
//! is resolved inside the root (see `resolve`).
//!
//! An app's root must be a mount point of its own for `pivot_root`: boot
//! mounts every root as an overlay ([`mount_app_roots`]); otherwise (unit
//! tests) [`assemble`] makes it one.

use std::collections::BTreeMap;
use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use kvmpod_api::layout;
use kvmpod_api::manifest::{is_mount_read_only, App, MountPoint, PodManifest};
use kvmpod_api::network::GuestNetwork;
use kvmpod_api::validate::normalize_guest_path;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{mount, MsFlags};
use nix::sys::stat::{fchmodat, makedev, mknodat, FchmodatFlags, Mode, SFlag};
use nix::unistd::symlinkat;

use super::mounts::{bind_into_root, make_read_only};
use super::resolve::{ensure_target, fd_path, open_in_root, open_root, Kind};
use super::StorageError;
use crate::error::Context;

/// Where the agent writes the files every app gets in its `/etc`.
const ETC_DIR: &str = "/run/kvmpod/etc";

/// Set once the writable layers' tmpfs is mounted: from then on every app root is
/// an overlay, a mount point of its own.
static APP_ROOTS_MOUNTED: AtomicBool = AtomicBool::new(false);

/// Mounts each app's root: its read-only layers from the pod's share
/// (top first in `roots`), under a writable layer on a tmpfs of the
/// guest's, with overlayfs. An app's writes stay in the guest; the layers,
/// shared by every pod of an image, are never written. Each root is then a
/// mount point of its own, as `pivot_root` needs.
pub fn mount_app_roots(roots: &BTreeMap<String, Vec<usize>>) -> Result<(), StorageError> {
    if roots.is_empty() {
        return Ok(());
    }
    for (app, layers) in roots {
        let lowers: Vec<PathBuf> = layers.iter().map(|n| layout::root_layer(*n)).collect();
        mount_overlay(app, &lowers)?;
    }
    Ok(())
}

/// The tmpfs every app's writable layer lives on, mounted by the first
/// root that needs it.
fn upper_tmpfs() -> Result<(), StorageError> {
    if APP_ROOTS_MOUNTED.load(Ordering::SeqCst) {
        return Ok(());
    }
    fs::create_dir_all(layout::UPPER_DIR).context(|| format!("creating {}", layout::UPPER_DIR))?;
    mount(
        Some("upper"),
        layout::UPPER_DIR,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0700"),
    )
    .context(|| format!("mounting a tmpfs at {}", layout::UPPER_DIR))?;
    APP_ROOTS_MOUNTED.store(true, Ordering::SeqCst);
    Ok(())
}

/// The overlayfs mount options of an app's root.
fn overlay_options(lowers: &[PathBuf], upper: &Path, work: &Path) -> String {
    let lower: Vec<String> = lowers.iter().map(|l| l.display().to_string()).collect();
    format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        upper.display(),
        work.display()
    )
}

/// Mounts app `app`'s root: `lowers` (top first) under a writable layer
/// of its own on the guest's tmpfs.
pub(super) fn mount_overlay(app: &str, lowers: &[PathBuf]) -> Result<(), StorageError> {
    upper_tmpfs()?;
    let base = upper_dir(app);
    let (upper, work) = (base.join("upper"), base.join("work"));
    for d in [&upper, &work] {
        fs::create_dir_all(d).context(|| format!("creating {}", d.display()))?;
    }
    // The writable layer's top directory is the root the app sees: it
    // takes the image's mode, not the tmpfs's 0700.
    let root = layout::app_rootfs(app);
    fs::create_dir_all(&root).context(|| format!("creating {}", root.display()))?;
    let data = overlay_options(lowers, &upper, &work);
    mount(
        Some("overlay"),
        &root,
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_str()),
    )
    .context(|| format!("mounting app {app:?}'s root (overlay {data})"))?;
    Ok(())
}

/// Where app `app`'s writable layer lives.
pub(super) fn upper_dir(app: &str) -> PathBuf {
    Path::new(layout::UPPER_DIR).join(app)
}

/// Writes the pod's `/etc` files and sets the guest's hostname. With a
/// network, the hostname names the pod's address and the resolver is the
/// host's plan; without one, there is no resolver to name.
pub fn write_pod_files(hostname: &str, net: Option<&GuestNetwork>) -> Result<(), StorageError> {
    fs::create_dir_all(ETC_DIR).context(|| format!("creating {ETC_DIR}"))?;
    let (hosts, resolv) = pod_files(hostname, net);
    let files = [
        ("hostname", format!("{hostname}\n")),
        ("hosts", hosts),
        ("resolv.conf", resolv),
    ];
    for (name, text) in files {
        let p = Path::new(ETC_DIR).join(name);
        fs::write(&p, text).context(|| format!("writing {}", p.display()))?;
    }
    nix::unistd::sethostname(hostname).context(|| format!("setting the hostname {hostname:?}"))?;
    Ok(())
}

/// The texts of `/etc/hosts` and `/etc/resolv.conf`.
fn pod_files(hostname: &str, net: Option<&GuestNetwork>) -> (String, String) {
    let own = net.map_or_else(|| "127.0.1.1".to_string(), |n| n.address.to_string());
    let hosts = format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{own}\t{hostname}\n"
    );
    let resolv = match net {
        None => "# kvmpod: the pod has no network beyond loopback\n".to_string(),
        Some(n) if n.nameservers.is_empty() => "# kvmpod: the host named no resolver\n".to_string(),
        Some(n) => n
            .nameservers
            .iter()
            .map(|ns| format!("nameserver {ns}\n"))
            .collect(),
    };
    (hosts, resolv)
}

fn sys(what: String) -> impl FnOnce(Errno) -> StorageError {
    move |errno| StorageError::sys(what, errno)
}

/// Character devices every app gets: name, major, minor, mode.
const DEVICES: [(&str, u64, u64, u32); 7] = [
    ("null", 1, 3, 0o666),
    ("zero", 1, 5, 0o666),
    ("full", 1, 7, 0o666),
    ("random", 1, 8, 0o666),
    ("urandom", 1, 9, 0o666),
    ("tty", 5, 0, 0o666),
    ("console", 5, 1, 0o620),
];

const SYMLINKS: [(&str, &str); 5] = [
    ("ptmx", "pts/ptmx"),
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
];

/// A fresh mount of `fstype` at `path` inside `root`.
fn mount_in(
    root: &OwnedFd,
    path: &str,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), StorageError> {
    let target = ensure_target(root, path, Kind::Dir).map_err(StorageError::target)?;
    mount(Some(fstype), &fd_path(&target), Some(fstype), flags, data)
        .map_err(sys(format!("mounting {fstype} at {path}")))
}

/// `/dev` with only what an app needs: the usual character devices, a
/// private devpts (its ptys are its own), `/dev/shm`, and the symlinks.
fn minimal_dev(root: &OwnedFd) -> Result<(), StorageError> {
    let nosuid_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    mount_in(
        root,
        "/dev",
        "tmpfs",
        nosuid_noexec,
        Some("mode=0755,size=64k"),
    )?;
    let dev = open_in_root(root, "/dev", OFlag::O_PATH | OFlag::O_DIRECTORY)
        .map_err(StorageError::target)?;
    for (name, major, minor, mode) in DEVICES {
        mknodat(
            dev.as_fd(),
            name,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(mode),
            makedev(major, minor),
        )
        .map_err(sys(format!("creating /dev/{name}")))?;
        // mknod honours the agent's umask (the kernel starts init with
        // 022): without this, /dev/null is 0644 and only root may write it.
        fchmodat(
            dev.as_fd(),
            name,
            Mode::from_bits_truncate(mode),
            FchmodatFlags::FollowSymlink,
        )
        .map_err(sys(format!("setting the mode of /dev/{name}")))?;
    }
    for (name, target) in SYMLINKS {
        symlinkat(target, dev.as_fd(), name).map_err(sys(format!("creating /dev/{name}")))?;
    }
    mount_in(
        root,
        "/dev/pts",
        "devpts",
        nosuid_noexec,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )?;
    mount_in(
        root,
        "/dev/shm",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )
}

/// Builds `app`'s root (see the module docs), with the volumes of
/// `manifest`. Errors name the mount.
pub fn assemble(manifest: &PodManifest, app: &App) -> Result<(), StorageError> {
    let root_path = layout::app_rootfs(&app.name);
    // The root must be a mount point of its own: pivot_root needs one. It
    // already is when boot mounted it as an overlay.
    if !APP_ROOTS_MOUNTED.load(Ordering::SeqCst) {
        mount(
            Some(root_path.as_path()),
            root_path.as_path(),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .context(|| format!("making {} a mount point", root_path.display()))?;
    }
    let root = open_root(&root_path)?;
    kernel_file_systems(&root)?;
    minimal_dev(&root).map_err(StorageError::in_step("/dev"))?;
    pod_etc_files(&root, app)?;
    tmpfs_mounts(&root, app)?;
    volume_mounts(&root, manifest, app)?;
    if app.read_only_root_filesystem {
        // Only the root's own mount: what is mounted in it stays writable.
        make_read_only(&root_path).context(|| "making the root read-only".into())?;
    }
    Ok(())
}

/// The app's own `/proc`, and a read-only `/sys`.
fn kernel_file_systems(root: &OwnedFd) -> Result<(), StorageError> {
    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount_in(root, "/proc", "proc", nosuid_nodev_noexec, None)
        .map_err(StorageError::in_step("/proc"))?;
    mount_in(
        root,
        "/sys",
        "sysfs",
        nosuid_nodev_noexec | MsFlags::MS_RDONLY,
        None,
    )
    .map_err(StorageError::in_step("/sys"))
}

/// The pod's `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf`,
/// read-only.
fn pod_etc_files(root: &OwnedFd, app: &App) -> Result<(), StorageError> {
    for name in ["hosts", "hostname", "resolv.conf"] {
        let src = Path::new(ETC_DIR).join(name);
        let Err(e) = bind_into_root(root, &src, Some(Kind::File), &format!("/etc/{name}"), true)
        else {
            continue;
        };
        match dangling_target(&e) {
            // An image's /etc/resolv.conf is often a symlink to a runtime
            // file that does not exist: the app goes without ours.
            Some(path) => log::warn!(
                "app {}: {path} is a dangling symlink; not providing it",
                app.name
            ),
            None => return Err(StorageError::in_step(format!("/etc/{name}"))(e)),
        }
    }
    Ok(())
}

/// The mount target that `e` found to be a dangling symlink, if that is
/// why a mount failed.
fn dangling_target(e: &StorageError) -> Option<&str> {
    match e {
        StorageError::Target(why) => match why.as_ref() {
            StorageError::DanglingSymlink { path } => Some(path),
            _ => None,
        },
        _ => None,
    }
}

/// The manifest's tmpfs mounts.
fn tmpfs_mounts(root: &OwnedFd, app: &App) -> Result<(), StorageError> {
    for t in &app.tmpfs {
        let path = normalize_guest_path(&t.path).map_err(|reason| StorageError::TmpfsPath {
            path: t.path.clone(),
            reason,
        })?;
        let mut data = format!("mode={:04o}", t.mode.unwrap_or(0o1777));
        if let Some(size) = t.size {
            data.push_str(&format!(",size={size}"));
        }
        mount_in(
            root,
            &path,
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(&data),
        )
        .map_err(StorageError::in_step(format!("tmpfs at {path}")))?;
    }
    Ok(())
}

/// The app's volumes, parents before the mounts nested in them.
fn volume_mounts(root: &OwnedFd, manifest: &PodManifest, app: &App) -> Result<(), StorageError> {
    let mut mps: Vec<(String, &MountPoint)> = app
        .mount_points
        .iter()
        .filter_map(|mp| normalize_guest_path(&mp.path).ok().map(|p| (p, mp)))
        .collect();
    mps.sort_by(|a, b| a.0.cmp(&b.0));
    for (path, mp) in mps {
        let volume = manifest
            .volume(&mp.volume)
            .ok_or_else(|| StorageError::NoVolume(mp.volume.clone()))?;
        let step = || format!("mounting volume {:?} at {path}", volume.name);
        let dir = layout::volume_dir(&volume.name);
        // A sub-path is resolved inside the volume: a symlink in it cannot
        // lead out (the volume's files are the host's, or another app's).
        let inner = match &mp.sub_path {
            Some(sub) => Some(
                open_root(&dir)
                    .and_then(|v| open_in_root(&v, sub, OFlag::O_PATH))
                    .map_err(StorageError::in_step(format!(
                        "{}: subPath {sub:?}",
                        step()
                    )))?,
            ),
            None => None,
        };
        // The volume itself is a directory; what a sub-path names is
        // looked at.
        let kind = inner.is_none().then_some(Kind::Dir);
        let source = inner.as_ref().map_or(dir, fd_path);
        bind_into_root(root, &source, kind, &path, is_mount_read_only(volume, mp))
            .map_err(StorageError::in_step(step()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_files_name_the_pod_address_and_resolvers() {
        let (hosts, resolv) = pod_files("web", None);
        assert!(hosts.contains("127.0.1.1\tweb\n"), "{hosts}");
        assert!(resolv.starts_with('#'));
        let net = GuestNetwork {
            mac: "52:54:00:00:00:03".into(),
            address: "10.0.2.15".parse().unwrap(),
            prefix_len: 24,
            gateway: Some("10.0.2.2".parse().unwrap()),
            mtu: 65520,
            nameservers: vec!["10.0.2.3".parse().unwrap()],
        };
        let (hosts, resolv) = pod_files("web", Some(&net));
        assert!(hosts.contains("10.0.2.15\tweb\n"), "{hosts}");
        assert_eq!(resolv, "nameserver 10.0.2.3\n");
    }

    #[test]
    fn overlay_stacks_the_layers_top_first() {
        assert_eq!(
            overlay_options(
                &[layout::root_layer(2), layout::root_layer(0)],
                Path::new("/u/a/upper"),
                Path::new("/u/a/work")
            ),
            "lowerdir=/run/kvmpod/pod/roots/2:/run/kvmpod/pod/roots/0,upperdir=/u/a/upper,workdir=/u/a/work"
        );
    }
}
