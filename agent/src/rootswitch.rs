//! Moving the guest's root off the initramfs.
//!
//! The kernel unpacks the initramfs into `rootfs`, a mount that
//! `pivot_root` refuses to move. Apps need `pivot_root` (a chroot can be
//! escaped), so before anything else the agent does what `switch_root`
//! does: it moves every file into a fresh tmpfs, file by file so memory
//! is never held twice, makes that tmpfs the root, and carries on there.

use std::fs;
use std::io;
use std::os::unix::fs::{lchown, symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use nix::mount::{mount, MsFlags};
use nix::sys::stat::{mknod, Mode, SFlag};
use nix::sys::statfs::{statfs, FsType, TMPFS_MAGIC};

use crate::error::{Context, SysError};

/// ramfs, which the initramfs is when the kernel has no tmpfs.
const RAMFS_MAGIC: FsType = FsType(0x8584_58f6);

/// Where the new root is assembled.
const NEW_ROOT: &str = "/newroot";

/// Whether `/` is still the initramfs.
pub fn on_initramfs() -> bool {
    statfs("/")
        .map(|s| s.filesystem_type() == RAMFS_MAGIC || s.filesystem_type() == TMPFS_MAGIC)
        .unwrap_or(false)
        && !Path::new(NEW_ROOT).exists()
}

/// Moves `/` into a tmpfs and makes it the root. Returns the bytes moved.
pub fn switch_to_tmpfs() -> Result<u64, SysError> {
    fs::create_dir(NEW_ROOT).context(|| format!("creating {NEW_ROOT}"))?;
    mount(
        Some("root"),
        NEW_ROOT,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("mode=0755"),
    )
    .context(|| format!("mounting a tmpfs at {NEW_ROOT}"))?;
    let mut moved = 0;
    for entry in fs::read_dir("/").context(|| "reading /".into())? {
        let entry = entry.context(|| "reading /".into())?;
        if entry.file_name() == "newroot" {
            continue;
        }
        let dst = Path::new(NEW_ROOT).join(entry.file_name());
        move_entry(&entry.path(), &dst, &mut moved)
            .context(|| format!("moving {} to the new root", entry.path().display()))?;
    }
    std::env::set_current_dir(NEW_ROOT).context(|| format!("entering {NEW_ROOT}"))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .context(|| "moving the new root over /".into())?;
    nix::unistd::chroot(".").context(|| "entering the new root".into())?;
    std::env::set_current_dir("/").context(|| "entering /".into())?;
    Ok(moved)
}

/// Moves one entry (recursively), keeping type, mode and owner.
fn move_entry(src: &Path, dst: &Path, moved: &mut u64) -> io::Result<()> {
    let meta = fs::symlink_metadata(src)?;
    let ft = meta.file_type();
    if ft.is_dir() {
        fs::create_dir(dst)?;
        for entry in fs::read_dir(src)? {
            let entry = entry?;
            move_entry(&entry.path(), &dst.join(entry.file_name()), moved)?;
        }
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        lchown(dst, Some(meta.uid()), Some(meta.gid()))?;
        let _ = fs::remove_dir(src);
        return Ok(());
    }
    if ft.is_file() {
        *moved += fs::copy(src, dst)?;
        // copy() keeps the permission bits but not setuid/setgid under
        // every kernel; set them explicitly after the owner.
        lchown(dst, Some(meta.uid()), Some(meta.gid()))?;
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    } else if ft.is_symlink() {
        symlink(fs::read_link(src)?, dst)?;
        lchown(dst, Some(meta.uid()), Some(meta.gid()))?;
    } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
        let kind = if ft.is_char_device() {
            SFlag::S_IFCHR
        } else if ft.is_block_device() {
            SFlag::S_IFBLK
        } else {
            SFlag::S_IFIFO
        };
        mknod(
            dst,
            kind,
            Mode::from_bits_truncate(meta.mode() & 0o7777),
            meta.rdev(),
        )
        .map_err(io::Error::from)?;
        lchown(dst, Some(meta.uid()), Some(meta.gid()))?;
    }
    // Sockets are not in an initramfs; anything else is left behind.
    fs::remove_file(src)
}
