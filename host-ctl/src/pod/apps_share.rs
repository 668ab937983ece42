//! A sandbox pod's apps share: `<pod>/apps`, exported to the guest as 9p
//! tag `kvmpod-apps` (see `kvmpod_api::addapp`). For each app added while
//! the pod runs, host-ctl binds its root's layers (read-only) and its host
//! volumes there; the hypervisor's 9p server sees them because the share
//! is a shared mount, whose new mounts propagate into a jailed
//! hypervisor's namespace too (the jail makes its mounts slaves).
//!
//! The guest must not be able to shape the paths host-ctl mounts on: a
//! symlink it made there would be followed on the host. So the share is a
//! read-only bind of a directory only host-ctl writes (`<pod>/apps.d`):
//! host-ctl makes mount points in that one and mounts on their paths in
//! the share; the guest can write only inside the volumes bound there.
//! And nothing here deletes through a mount: directories are removed with
//! `rmdir`, which refuses one that is not empty or still a mount point.

use std::fs;
use std::path::{Path, PathBuf};

use kvmpod_api::layout;
use kvmpod_api::mountapi::{mount_points, remove_empty_dirs};
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::{PodDir, PodError};

/// One bind into an app's directory of the share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppBind {
    pub source: PathBuf,
    /// Relative to the share (`kvmpod_api::layout::added_app_layer`, ...).
    pub target: PathBuf,
    pub read_only: bool,
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PodError {
    let path = path.to_path_buf();
    move |source| PodError::Io { what, path, source }
}

fn sys(what: &str, path: &Path) -> impl FnOnce(nix::errno::Errno) -> PodError {
    let text = format!("{what} {}: {{}}", path.display());
    move |e| PodError::Invalid(text.replace("{}", e.desc()))
}

/// Creates the share: a read-only, shared bind of `<pod>/apps.d`.
pub fn create(dir: &PodDir) -> Result<(), PodError> {
    let (share, inner) = (dir.apps_share(), dir.apps_share_source());
    for d in [&share, &inner] {
        fs::create_dir_all(d).map_err(io("creating", d))?;
    }
    mount(
        Some(inner.as_path()),
        &share,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(sys("binding", &share))?;
    let ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID;
    mount(
        None::<&str>,
        &share,
        None::<&str>,
        ro | MsFlags::MS_NODEV,
        None::<&str>,
    )
    .map_err(sys("making read-only", &share))?;
    mount(
        None::<&str>,
        &share,
        None::<&str>,
        MsFlags::MS_SHARED,
        None::<&str>,
    )
    .map_err(sys("making a shared mount of", &share))
}

/// Binds app `app`'s layers and volumes into the share. On failure what
/// was bound is unbound again.
pub fn bind_app(dir: &PodDir, app: &str, binds: &[AppBind]) -> Result<(), PodError> {
    let result = binds.iter().try_for_each(|b| bind_one(dir, b));
    if result.is_err() {
        unbind_app(dir, app);
    }
    result
}

fn bind_one(dir: &PodDir, b: &AppBind) -> Result<(), PodError> {
    // The mount point is made where only host-ctl writes; the mount goes
    // on its path in the share.
    let point = dir.apps_share_source().join(&b.target);
    fs::create_dir_all(&point).map_err(io("creating", &point))?;
    let target = dir.apps_share().join(&b.target);
    mount(
        Some(b.source.as_path()),
        &target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(sys(&format!("binding {} at", b.source.display()), &target))?;
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    if b.read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    mount(None::<&str>, &target, None::<&str>, flags, None::<&str>)
        .map_err(sys("restricting", &target))
}

/// Unbinds everything of app `app` in the share and removes its mount
/// points. Best effort: a mount still in use is detached; a directory that
/// is still a mount point stays.
pub fn unbind_app(dir: &PodDir, app: &str) {
    let relative = layout::added_app_dir(app);
    for target in mounts_under(&dir.apps_share().join(&relative)) {
        let _ = umount2(&target, MntFlags::MNT_DETACH);
    }
    remove_empty_dirs(&dir.apps_share_source().join(&relative));
}

/// Takes the whole share down (the pod is over).
pub fn release(dir: &PodDir) {
    let share = dir.apps_share();
    for target in mounts_under(&share) {
        let _ = umount2(&target, MntFlags::MNT_DETACH);
    }
    let _ = fs::remove_dir(&share);
    remove_empty_dirs(&dir.apps_share_source());
}

/// Mount points at or under `dir`, newest first. mountinfo names them by
/// their resolved path, so `dir` is resolved too.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let dir = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = mount_points(&info)
        .into_iter()
        .map(PathBuf::from)
        .filter(|p| p.starts_with(&dir))
        .collect();
    found.reverse();
    found
}
