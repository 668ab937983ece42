//! A sandbox pod's apps share: `<pod>/apps`, exported to the guest as 9p
//! tag `kvmpod-apps` (see `kvmpod_api::addapp`). For each app added while
//! the pod runs, host-ctl binds its root's layers (read-only) and its host
//! volumes there; the hypervisor's 9p server sees them because the share
//! is a shared mount, whose new mounts propagate into a jailed
//! hypervisor's namespace too (the jail makes its mounts slaves).

use std::fs;
use std::path::{Path, PathBuf};

use kvmpod_api::layout;
use kvmpod_api::mountapi::mount_points;
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

/// Creates the share, as a shared mount of its own.
pub fn create(dir: &PodDir) -> Result<(), PodError> {
    let share = dir.apps_share();
    fs::create_dir_all(&share).map_err(io("creating", &share))?;
    mount(
        Some(share.as_path()),
        &share,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(sys("binding", &share))?;
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
    let result = binds
        .iter()
        .try_for_each(|b| bind_one(&dir.apps_share(), b));
    if result.is_err() {
        unbind_app(dir, app);
    }
    result
}

fn bind_one(share: &Path, b: &AppBind) -> Result<(), PodError> {
    let target = share.join(&b.target);
    fs::create_dir_all(&target).map_err(io("creating", &target))?;
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

/// Unbinds everything of app `app` in the share and removes its
/// directory. Best effort: a mount still in use is detached.
pub fn unbind_app(dir: &PodDir, app: &str) {
    let app_dir = dir.apps_share().join(layout::added_app_dir(app));
    for target in mounts_under(&app_dir) {
        let _ = umount2(&target, MntFlags::MNT_DETACH);
    }
    let _ = fs::remove_dir_all(&app_dir);
}

/// Takes the whole share down (the pod is over).
pub fn release(dir: &PodDir) {
    let share = dir.apps_share();
    if !share.exists() {
        return;
    }
    for target in mounts_under(&share) {
        let _ = umount2(&target, MntFlags::MNT_DETACH);
    }
    let _ = fs::remove_dir_all(&share);
}

/// Mount points at or under `dir`, newest first.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = mount_points(&info)
        .into_iter()
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    found.reverse();
    found
}
