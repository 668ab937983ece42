//! Assembling an app's root, once, before its first start: the root made a
//! mount point (so the app can `pivot_root` into it), its own `/proc`, a
//! read-only `/sys`, a minimal `/dev`, the pod's `/etc/hosts`,
//! `/etc/hostname` and `/etc/resolv.conf`, the manifest's tmpfs mounts and
//! volumes, and finally the root itself read-only if asked. Every target
//! is resolved inside the root (see `resolve`).

use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use kvmpod_api::layout;
use kvmpod_api::manifest::{is_mount_read_only, App, MountPoint};
use kvmpod_api::validate::normalize_guest_path;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{mount, MsFlags};
use nix::sys::stat::{fchmodat, makedev, mknodat, FchmodatFlags, Mode, SFlag};
use nix::unistd::symlinkat;

use crate::mounts::{bind_into_root, make_read_only, MountError};
use crate::pod::Pod;
use crate::resolve::{ensure_target, fd_path, open_in_root, open_root, Kind, ResolveError};

/// Where the agent writes the files every app gets in its `/etc`.
pub const ETC_DIR: &str = "/run/kvmpod/etc";

/// Writes the pod's `/etc` files and sets the guest's hostname.
pub fn write_pod_files(hostname: &str) -> Result<(), String> {
    fs::create_dir_all(ETC_DIR).map_err(|e| format!("creating {ETC_DIR}: {e}"))?;
    let files = [
        ("hostname", format!("{hostname}\n")),
        (
            "hosts",
            format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"),
        ),
        // The pod has no network beyond loopback: no resolver to name.
        ("resolv.conf", "# kvmpod: the pod has no network beyond loopback\n".into()),
    ];
    for (name, text) in files {
        let p = Path::new(ETC_DIR).join(name);
        fs::write(&p, text).map_err(|e| format!("writing {}: {e}", p.display()))?;
    }
    nix::unistd::sethostname(hostname)
        .map_err(|e| format!("setting the hostname {hostname:?}: {e}"))
}

fn sys(what: String) -> impl FnOnce(Errno) -> MountError {
    move |errno| {
        MountError::Sys(crate::error::SysError {
            context: what,
            errno,
        })
    }
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
) -> Result<(), MountError> {
    let target = ensure_target(root, path, Kind::Dir)?;
    mount(Some(fstype), &fd_path(&target), Some(fstype), flags, data)
        .map_err(sys(format!("mounting {fstype} at {path}")))
}

/// `/dev` with only what an app needs: the usual character devices, a
/// private devpts (its ptys are its own), `/dev/shm`, and the symlinks.
fn minimal_dev(root: &OwnedFd) -> Result<(), MountError> {
    let nosuid_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    mount_in(
        root,
        "/dev",
        "tmpfs",
        nosuid_noexec,
        Some("mode=0755,size=64k"),
    )?;
    let dev = open_in_root(root, "/dev", OFlag::O_PATH | OFlag::O_DIRECTORY)?;
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

/// Builds `app`'s root (see the module docs). Errors name the mount.
pub fn assemble(pod: &Pod, app: &App) -> Result<(), String> {
    let root_path = layout::app_rootfs(&app.name);
    let root_str = root_path.to_string_lossy().into_owned();
    // The root must be a mount point of its own: pivot_root needs one. It
    // already is when the agent moved the root off the initramfs.
    if !crate::rootswitch::app_roots_mounted() {
        mount(
            Some(root_path.as_path()),
            root_path.as_path(),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| format!("making {root_str} a mount point: {}", e.desc()))?;
    }
    let root = open_root(&root_path).map_err(|e| e.to_string())?;
    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let step = |what: &str, r: Result<(), MountError>| r.map_err(|e| format!("{what}: {e}"));
    step(
        "/proc",
        mount_in(&root, "/proc", "proc", nosuid_nodev_noexec, None),
    )?;
    step(
        "/sys",
        mount_in(
            &root,
            "/sys",
            "sysfs",
            nosuid_nodev_noexec | MsFlags::MS_RDONLY,
            None,
        ),
    )?;
    step("/dev", minimal_dev(&root))?;
    for name in ["hosts", "hostname", "resolv.conf"] {
        let src = Path::new(ETC_DIR).join(name);
        match bind_into_root(&root, &src, &format!("/etc/{name}"), true) {
            Ok(()) => {}
            // An image's /etc/resolv.conf is often a symlink to a runtime
            // file that does not exist: the app goes without ours.
            Err(MountError::Target(ResolveError::DanglingSymlink { path })) => {
                log::warn!(
                    "app {}: {path} is a dangling symlink; not providing it",
                    app.name
                );
            }
            Err(e) => return Err(format!("/etc/{name}: {e}")),
        }
    }
    for t in &app.tmpfs {
        let path = normalize_guest_path(&t.path).map_err(|e| format!("tmpfs {}: {e}", t.path))?;
        let mut data = format!("mode={:04o}", t.mode.unwrap_or(0o1777));
        if let Some(size) = t.size {
            data.push_str(&format!(",size={size}"));
        }
        step(
            &format!("tmpfs at {path}"),
            mount_in(
                &root,
                &path,
                "tmpfs",
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some(&data),
            ),
        )?;
    }
    // Volumes, parents before the mounts nested in them.
    let mut mps: Vec<(String, &MountPoint)> = app
        .mount_points
        .iter()
        .filter_map(|mp| normalize_guest_path(&mp.path).ok().map(|p| (p, mp)))
        .collect();
    mps.sort_by(|a, b| a.0.cmp(&b.0));
    for (path, mp) in mps {
        let volume = pod
            .manifest
            .volume(&mp.volume)
            .ok_or_else(|| format!("no volume named {:?}", mp.volume))?;
        let source = layout::volume_dir(&volume.name);
        bind_into_root(&root, &source, &path, is_mount_read_only(volume, mp))
            .map_err(|e| format!("mounting volume {:?} at {path}: {e}", volume.name))?;
    }
    if app.read_only_root_filesystem {
        // Only the root's own mount: what is mounted in it stays writable.
        make_read_only(&root_path).map_err(|e| format!("making the root read-only: {e}"))?;
    }
    Ok(())
}
