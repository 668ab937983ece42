//! Moving the guest's root off the initramfs.
//!
//! The kernel unpacks the initramfs into `rootfs`, a mount that
//! `pivot_root` refuses to move away from. Apps need `pivot_root` (a chroot
//! can be escaped), so, once the agent has loaded the kernel modules from
//! the initramfs, it makes a fresh tmpfs the root (as `switch_root` does).
//! The app roots are mounted there later, from the pod's share. The agent
//! keeps running from its old inode; nothing of the initramfs is reachable
//! afterwards.

use std::fs;
use std::path::Path;

use nix::mount::{mount, MsFlags};
use nix::sys::statfs::{statfs, FsType, TMPFS_MAGIC};

use super::BootError;
use crate::error::Context;

/// ramfs, which the initramfs is when the kernel has no tmpfs.
const RAMFS_MAGIC: FsType = FsType(0x8584_58f6);

/// Where the new root is assembled.
const NEW_ROOT: &str = "/newroot";

/// Whether `/` is still the initramfs.
pub(super) fn on_initramfs() -> bool {
    statfs("/")
        .map(|s| s.filesystem_type() == RAMFS_MAGIC || s.filesystem_type() == TMPFS_MAGIC)
        .unwrap_or(false)
        && !Path::new(NEW_ROOT).exists()
}

/// Makes a fresh tmpfs the root.
pub(super) fn switch_to_tmpfs() -> Result<(), BootError> {
    fs::create_dir(NEW_ROOT).context(|| format!("creating {NEW_ROOT}"))?;
    mount(
        Some("root"),
        NEW_ROOT,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("mode=0755"),
    )
    .context(|| format!("mounting a tmpfs at {NEW_ROOT}"))?;
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
    Ok(())
}
