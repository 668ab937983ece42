//! Moving the guest's root off the initramfs.
//!
//! The kernel unpacks the initramfs into `rootfs`, a mount that
//! `pivot_root` refuses to move away from. Apps need `pivot_root` (a chroot
//! can be escaped), so, once the agent has read its settings and loaded
//! the kernel modules from the initramfs, it makes a fresh tmpfs the root
//! (as `switch_root` does) — without copying anything: each app's root is
//! bind-mounted from the initramfs into the new root, which also makes it
//! the mount point `pivot_root` needs. The agent keeps running from its
//! old inode; nothing else of the initramfs is reachable afterwards.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::mount::{mount, MsFlags};
use nix::sys::statfs::{statfs, FsType, TMPFS_MAGIC};

use crate::error::{Context, SysError};

/// ramfs, which the initramfs is when the kernel has no tmpfs.
const RAMFS_MAGIC: FsType = FsType(0x8584_58f6);

/// Where the new root is assembled.
const NEW_ROOT: &str = "/newroot";

static APP_ROOTS_MOUNTED: AtomicBool = AtomicBool::new(false);

/// Whether `/` is still the initramfs.
pub fn on_initramfs() -> bool {
    statfs("/")
        .map(|s| s.filesystem_type() == RAMFS_MAGIC || s.filesystem_type() == TMPFS_MAGIC)
        .unwrap_or(false)
        && !Path::new(NEW_ROOT).exists()
}

/// Whether every app's root is already a mount point of its own.
pub fn app_roots_mounted() -> bool {
    APP_ROOTS_MOUNTED.load(Ordering::SeqCst)
}

/// Makes a tmpfs the root, with `app_roots` bind-mounted into it at the
/// same paths.
pub fn switch_to_tmpfs(app_roots: &[PathBuf]) -> Result<(), SysError> {
    fs::create_dir(NEW_ROOT).context(|| format!("creating {NEW_ROOT}"))?;
    mount(
        Some("root"),
        NEW_ROOT,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("mode=0755"),
    )
    .context(|| format!("mounting a tmpfs at {NEW_ROOT}"))?;
    for root in app_roots {
        let inside = Path::new(NEW_ROOT).join(root.strip_prefix("/").unwrap_or(root));
        fs::create_dir_all(&inside).context(|| format!("creating {}", inside.display()))?;
        mount(
            Some(root.as_path()),
            &inside,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .context(|| format!("bind-mounting {} into the new root", root.display()))?;
    }
    // The kernel opens /dev/console for init from the initramfs; devtmpfs
    // is mounted over the new /dev right after.
    for dir in ["dev", "proc", "sys", "run", "tmp", "mnt"] {
        fs::create_dir_all(Path::new(NEW_ROOT).join(dir)).context(|| format!("creating /{dir}"))?;
    }
    std::env::set_current_dir(NEW_ROOT).context(|| format!("entering {NEW_ROOT}"))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .context(|| "moving the new root over /".into())?;
    nix::unistd::chroot(".").context(|| "entering the new root".into())?;
    std::env::set_current_dir("/").context(|| "entering /".into())?;
    APP_ROOTS_MOUNTED.store(true, Ordering::SeqCst);
    Ok(())
}
