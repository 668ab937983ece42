//! Mounting into app roots: bind mounts of volumes (read-only where rkt's
//! rule says so), and each app's `/proc`, `/sys` and `/dev`; and taking it
//! all down again at shutdown.
//!
//! Binds use the new mount API: the source tree is cloned
//! (`open_tree`), made read-only recursively *before* it is attached
//! (`mount_setattr`), then attached on the resolved target handle
//! (`move_mount`). An app never sees the mount writable, sub-mounts are
//! read-only too, and the mount's other flags (`nosuid`, `nodev`, ...) are
//! left as they are. Kernels before 5.12 get the classic bind and a remount
//! that carries those flags over from `statvfs`.

use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use kvmpod_api::mountapi::{self, mount_points, Target};
use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::statvfs::{statvfs, FsFlags};

use super::resolve::{ensure_target, fd_path, open_in_root, Kind};
use super::StorageError;
use crate::error::SysError;

fn sys(context: impl Into<String>) -> impl FnOnce(Errno) -> StorageError {
    let context = context.into();
    move |errno| StorageError::sys(context, errno)
}

/// Bind-mounts `source` (a guest path) onto `path` inside the app root
/// `root`, creating the target to match the source's kind, and makes it
/// read-only when `read_only`. `kind` is the source's when the caller
/// knows it: a volume is a directory, and learning that from the source
/// would cost a 9p round trip per bind (a `cache=mmap` mount does not
/// cache attributes); `None` looks.
pub(super) fn bind_into_root(
    root: &OwnedFd,
    source: &Path,
    kind: Option<Kind>,
    path: &str,
    read_only: bool,
) -> Result<(), StorageError> {
    bind_with(root, source, kind, path, read_only, MountApi::New)
}

/// Which kernel interface a bind uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MountApi {
    /// open_tree + mount_setattr + move_mount, falling back to `Classic`
    /// where the kernel lacks them.
    New,
    /// mount(MS_BIND) then a remount read-only (kernels before 5.12).
    /// Production code reaches it through `ENOSYS`; tests force it.
    #[cfg_attr(not(test), allow(dead_code))]
    Classic,
}

fn bind_with(
    root: &OwnedFd,
    source: &Path,
    kind: Option<Kind>,
    path: &str,
    read_only: bool,
    api: MountApi,
) -> Result<(), StorageError> {
    let kind = match kind {
        Some(kind) => kind,
        None => source_kind(source)?,
    };
    let target = ensure_target(root, path, kind).map_err(StorageError::target)?;
    let what = format!("bind-mounting {} at {path}", source.display());
    let attached = match api {
        MountApi::New => attach_clone(source, &target, read_only),
        MountApi::Classic => Err(Errno::ENOSYS),
    };
    match attached {
        Ok(()) => Ok(()),
        Err(Errno::ENOSYS) => {
            let flags = MsFlags::MS_BIND | MsFlags::MS_REC;
            mount(
                Some(source),
                &fd_path(&target),
                None::<&str>,
                flags,
                None::<&str>,
            )
            .map_err(sys(what))?;
            if read_only {
                // Re-resolve: the old handle is the covered directory, not
                // the new mount's root.
                let mounted = open_in_root(root, path, nix::fcntl::OFlag::O_PATH)
                    .map_err(StorageError::target)?;
                remount_read_only(&fd_path(&mounted))
                    .map_err(sys(format!("remounting {path} read-only")))?;
            }
            Ok(())
        }
        Err(errno) => Err(sys(what)(errno)),
    }
}

/// Whether `source` is a directory or something else.
fn source_kind(source: &Path) -> Result<Kind, StorageError> {
    let meta = fs::metadata(source).map_err(|e| {
        sys(format!("bind source {}", source.display()))(Errno::from_raw(
            e.raw_os_error().unwrap_or(libc::EIO),
        ))
    })?;
    Ok(if meta.is_dir() { Kind::Dir } else { Kind::File })
}

/// open_tree + mount_setattr + move_mount, as described in the module docs.
fn attach_clone(source: &Path, target: &OwnedFd, read_only: bool) -> Result<(), Errno> {
    let tree = mountapi::clone_tree(source)?;
    if read_only {
        mountapi::make_tree_read_only(tree.as_fd())?;
    }
    mountapi::attach(tree.as_fd(), Target::Fd(target.as_fd()))
}

/// A bind remount to read-only must repeat the mount's locked flags
/// (`nosuid`, `nodev`, `noexec`, atime), or the kernel refuses it or drops
/// them.
fn remount_read_only(path: &Path) -> Result<(), Errno> {
    let st = statvfs(path)?;
    let mut flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY;
    for (have, set) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
    ] {
        if st.flags().contains(have) {
            flags |= set;
        }
    }
    mount(None::<&str>, path, None::<&str>, flags, None::<&str>)
}

/// Makes the mount at `path` read-only, itself only (mounts under it keep
/// their own flags).
pub(super) fn make_read_only(path: &Path) -> Result<(), Errno> {
    match mountapi::make_mount_read_only(path) {
        Err(Errno::ENOSYS) => remount_read_only(path),
        r => r,
    }
}

/// Unmounts every mount at or below one of `prefixes`, deepest and newest
/// first. A busy mount is detached instead. Returns the failures, which
/// only get reported: shutdown goes on regardless.
pub fn unmount_under(prefixes: &[&str]) -> Vec<SysError> {
    let mut failures = Vec::new();
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return failures;
    };
    let mut targets: Vec<String> = mount_points(&info)
        .into_iter()
        .filter(|p| {
            prefixes
                .iter()
                .any(|pre| p == pre || p.starts_with(&format!("{pre}/")))
        })
        .collect();
    // mountinfo lists mounts oldest first; undo them newest first.
    targets.reverse();
    for t in targets {
        if umount2(t.as_str(), MntFlags::empty()).is_err() {
            if let Err(errno) = umount2(t.as_str(), MntFlags::MNT_DETACH) {
                failures.push(SysError {
                    context: format!("unmounting {t}"),
                    errno,
                });
            }
        }
    }
    failures
}

/// For tests that mount for real: they need root (as `make test` runs)
/// and work in a mount namespace of their own thread.
#[cfg(test)]
pub(crate) fn private_mount_namespace() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test mounts file systems: run it as root (`make test` does)"
    );
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).expect("unshare(CLONE_NEWNS)");
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .expect("making / private");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::open_root;
    use std::os::unix::fs::MetadataExt;

    fn tmpfs(at: &Path, flags: MsFlags) {
        fs::create_dir_all(at).unwrap();
        mount(Some("tmpfs"), at, Some("tmpfs"), flags, None::<&str>).unwrap();
    }

    fn is_erofs(path: &Path) -> bool {
        matches!(fs::write(path, "x"), Err(e) if e.raw_os_error() == Some(libc::EROFS))
    }

    #[test]
    fn read_only_binds_hold_keep_flags_and_cover_submounts() {
        private_mount_namespace();
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        // A volume on its own nosuid,nodev tmpfs, with a mount inside it.
        let vol = base.join("vol");
        tmpfs(&vol, MsFlags::MS_NOSUID | MsFlags::MS_NODEV);
        tmpfs(&vol.join("sub"), MsFlags::empty());
        let app = base.join("app");
        fs::create_dir_all(&app).unwrap();
        let root = open_root(&app).unwrap();

        for (api, at) in [
            (MountApi::New, "/new/ro"),
            (MountApi::Classic, "/classic/ro"),
        ] {
            bind_with(&root, &vol, None, at, true, api).unwrap();
            let target = app.join(&at[1..]);
            assert!(is_erofs(&target.join("f")), "{api:?}: writable");
            let st = statvfs(&target).unwrap();
            assert!(
                st.flags()
                    .contains(FsFlags::ST_RDONLY | FsFlags::ST_NOSUID | FsFlags::ST_NODEV),
                "{api:?}: {:?}",
                st.flags()
            );
            // The new API makes the whole tree read-only; a classic remount
            // only reaches the top mount.
            assert_eq!(
                is_erofs(&target.join("sub/f")),
                api == MountApi::New,
                "{api:?}: sub-mount"
            );
        }
        bind_with(&root, &vol, None, "/rw", false, MountApi::New).unwrap();
        fs::write(app.join("rw/f"), "x").unwrap();
        assert_eq!(fs::read_to_string(vol.join("f")).unwrap(), "x");
        // The read-only views never let the write through to their source
        // either way, and the source itself stays writable.
        assert_eq!(
            fs::metadata(vol.join("f")).unwrap().ino(),
            fs::metadata(app.join("new/ro/f")).unwrap().ino()
        );

        let failures = unmount_under(&[base.to_str().unwrap()]);
        assert!(failures.is_empty(), "{failures:?}");
        let left = mount_points(&fs::read_to_string("/proc/self/mountinfo").unwrap());
        assert!(
            !left.iter().any(|p| p.starts_with(base.to_str().unwrap())),
            "{left:?}"
        );
    }

    #[test]
    fn binds_follow_no_symlink_out_of_the_root() {
        private_mount_namespace();
        let dir = tempfile::tempdir().unwrap();
        let base = fs::canonicalize(dir.path()).unwrap();
        let vol = base.join("vol");
        fs::create_dir_all(&vol).unwrap();
        fs::write(vol.join("marker"), "volume").unwrap();
        let outside = base.join("host-etc");
        fs::create_dir_all(&outside).unwrap();
        let app = base.join("app");
        fs::create_dir_all(&app).unwrap();
        std::os::unix::fs::symlink(&outside, app.join("data")).unwrap();
        std::os::unix::fs::symlink("../../../../..", app.join("up")).unwrap();
        fs::create_dir_all(app.join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc", app.join("etclink")).unwrap();
        let root = open_root(&app).unwrap();
        // An absolute link out of the root resolves inside it, where its
        // target does not exist: refused, not followed.
        let e = bind_into_root(&root, &vol, None, "/data", false).unwrap_err();
        assert_eq!(
            e,
            StorageError::DanglingSymlink {
                path: "/data".into()
            }
            .target()
        );
        // Links that resolve inside the root get the mount there.
        bind_into_root(&root, &vol, None, "/etclink", false).unwrap();
        assert_eq!(
            fs::read_to_string(app.join("etc/marker")).unwrap(),
            "volume"
        );
        bind_into_root(&root, &vol, Some(Kind::Dir), "/up/x", false).unwrap();
        assert_eq!(fs::read_to_string(app.join("x/marker")).unwrap(), "volume");
        // Nothing was mounted over (or created in) the directory outside,
        // nor over the host's /etc.
        assert!(!outside.join("marker").exists());
        assert!(!Path::new("/etc/marker").exists());
        assert!(fs::read_dir(&outside).unwrap().next().is_none());
        let failures = unmount_under(&[base.to_str().unwrap()]);
        assert!(failures.is_empty(), "{failures:?}");
    }

    #[test]
    fn a_symlink_swapped_in_after_resolution_is_not_followed() {
        private_mount_namespace();
        let dir = tempfile::tempdir().unwrap();
        let base = fs::canonicalize(dir.path()).unwrap();
        let vol = base.join("vol");
        fs::create_dir_all(&vol).unwrap();
        fs::write(vol.join("marker"), "volume").unwrap();
        let outside = base.join("outside");
        fs::create_dir_all(&outside).unwrap();
        let app = base.join("app");
        fs::create_dir_all(&app).unwrap();
        let root = open_root(&app).unwrap();
        let target = ensure_target(&root, "/data", Kind::Dir).unwrap();
        // The image swaps /data for a link out after the agent resolved it.
        fs::rename(app.join("data"), app.join("moved")).unwrap();
        std::os::unix::fs::symlink(&outside, app.join("data")).unwrap();
        attach_clone(&vol, &target, false).unwrap();
        assert!(
            !outside.join("marker").exists(),
            "the mount followed the swapped-in link"
        );
        assert_eq!(
            fs::read_to_string(app.join("moved/marker")).unwrap(),
            "volume"
        );
        let failures = unmount_under(&[base.to_str().unwrap()]);
        assert!(failures.is_empty(), "{failures:?}");
    }
}
