//! The new mount API (Linux 5.12+), which neither `nix` nor `libc` wraps:
//! clone a mount tree (`open_tree`), make it read-only before anyone can
//! see it (`mount_setattr`), and attach it (`move_mount`). The agent binds
//! volumes into app roots with it; host-ctl makes lkvm's read-only share
//! aliases with it. Errors are the kernel's: `ENOSYS` means an older kernel.

use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::errno::Errno;

// From linux/mount.h and linux/fcntl.h (not all are in the libc crate).
const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_EMPTY_PATH: libc::c_uint = 0x1000;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x04;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
const MOUNT_ATTR_RDONLY: u64 = 0x1;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Where `attach` puts a tree.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// A handle on the mount point (e.g. from `openat2`).
    Fd(BorrowedFd<'a>),
    /// A path.
    Path(&'a Path),
}

fn cstring(p: &Path) -> Result<CString, Errno> {
    CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| Errno::EINVAL)
}

/// A detached, recursive copy of the mounts at `source`.
pub fn clone_tree(source: &Path) -> Result<OwnedFd, Errno> {
    let src = cstring(source)?;
    // SAFETY: a valid NUL-terminated path; the returned fd is owned from
    // here on.
    unsafe {
        let fd = libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            src.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | AT_RECURSIVE,
        );
        Errno::result(fd)?;
        Ok(OwnedFd::from_raw_fd(fd as RawFd))
    }
}

fn set_read_only(dirfd: RawFd, path: &CStr, flags: libc::c_uint) -> Result<(), Errno> {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: `attr` and `path` outlive the call and the size is passed.
    Errno::result(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dirfd,
            path.as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })
    .map(drop)
}

/// Makes a cloned tree read-only, every mount in it.
pub fn make_tree_read_only(tree: BorrowedFd<'_>) -> Result<(), Errno> {
    set_read_only(tree.as_raw_fd(), c"", AT_EMPTY_PATH | AT_RECURSIVE)
}

/// Makes the mount at `path` read-only, itself only (mounts under it keep
/// their own flags).
pub fn make_mount_read_only(path: &Path) -> Result<(), Errno> {
    set_read_only(libc::AT_FDCWD, &cstring(path)?, 0)
}

/// Attaches a cloned tree at `target`.
pub fn attach(tree: BorrowedFd<'_>, target: Target<'_>) -> Result<(), Errno> {
    let path;
    let (dirfd, to, flags) = match target {
        Target::Fd(fd) => (fd.as_raw_fd(), c"", MOVE_MOUNT_T_EMPTY_PATH),
        Target::Path(p) => {
            path = cstring(p)?;
            (libc::AT_FDCWD, path.as_c_str(), 0)
        }
    };
    // SAFETY: the fds and paths are valid for the call.
    Errno::result(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            dirfd,
            to.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | flags,
        )
    })
    .map(drop)
}

/// The mount points of a `/proc/self/mountinfo` text, in its order, with
/// the kernel's octal escapes (`\040` for a space) decoded.
pub fn mount_points(mountinfo: &str) -> Vec<String> {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape)
        .collect()
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Removes `dir` and the directories under it, with `rmdir` only: never a
/// file, never through a mount (its root is busy or not empty), never
/// along a symlink.
pub fn remove_empty_dirs(dir: &Path) {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mounted: Vec<std::path::PathBuf> = mount_points(&info)
        .into_iter()
        .map(std::path::PathBuf::from)
        .collect();
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    remove_tree(&dir, &mounted);
}

fn remove_tree(dir: &Path, mounted: &[std::path::PathBuf]) {
    if mounted.iter().any(|m| m == dir) {
        return;
    }
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path(), mounted);
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

#[cfg(test)]
mod tests {
    #[test]
    fn mountinfo_points_are_decoded_in_order() {
        let info = "\
22 1 0:20 / / rw - rootfs rootfs rw
23 22 0:21 / /proc rw,nosuid - proc proc rw
40 22 0:33 / /mnt/data rw - 9p data rw,trans=virtio
41 22 0:33 / /opt/stage2/web/rootfs/my\\040data rw - 9p data rw
";
        assert_eq!(
            mount_points(info),
            ["/", "/proc", "/mnt/data", "/opt/stage2/web/rootfs/my data"]
        );
        assert_eq!(unescape("a\\134b"), "a\\b");
        assert_eq!(unescape("tail\\04"), "tail\\04");
    }

    use super::*;

    #[test]
    fn a_path_with_nul_is_refused_before_any_call() {
        assert_eq!(clone_tree(Path::new("a\0b")).unwrap_err(), Errno::EINVAL);
        assert_eq!(
            make_mount_read_only(Path::new("a\0b")).unwrap_err(),
            Errno::EINVAL
        );
    }
}
