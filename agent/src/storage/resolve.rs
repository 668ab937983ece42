//! Path resolution inside an app's root that never leaves it.
//!
//! An app image is untrusted: its `/data` may be a symlink to `/etc` or to
//! `../../../../mnt`. Every path the agent creates or mounts on inside an
//! app's root is resolved with `openat2(RESOLVE_IN_ROOT)`, which treats the
//! root as `/` for absolute symlinks and `..` alike, and the mount is then
//! made on the resolved file descriptor, so a symlink swapped in after the
//! check cannot redirect it. Its errors are storage's own, which the
//! process subsystem passes on when it reads an image's files.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, mkdirat, Mode, SFlag};

use super::StorageError;
use crate::error::SysError;

/// What a mount target must be: a directory for a directory source, a
/// non-directory for a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Dir,
    File,
}

fn how(flags: OFlag) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS)
}

/// Opens a root directory as an `O_PATH` handle.
pub fn open_root(path: &Path) -> Result<OwnedFd, StorageError> {
    nix::fcntl::open(
        path,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|errno| StorageError::sys(path.display().to_string(), errno))
}

/// Resolves `path` inside `root` (symlinks and `..` cannot leave it) and
/// opens it with `flags` (add `O_PATH` for a handle only).
pub fn open_in_root(root: &OwnedFd, path: &str, flags: OFlag) -> Result<OwnedFd, StorageError> {
    let mut attempts = 0;
    loop {
        match openat2(root.as_fd(), rel(path), how(flags)) {
            // The kernel returns EAGAIN when a rename or mount anywhere
            // raced with a `..` step and it cannot prove the step stayed
            // inside the root; openat2(2) says to retry.
            Err(Errno::EAGAIN) if attempts < OPENAT2_RETRIES => attempts += 1,
            r => return r.map_err(|errno| StorageError::sys(path, errno)),
        }
    }
}

/// Retries of an `openat2` that lost a race with a mount or rename.
const OPENAT2_RETRIES: u32 = 64;

/// Resolves `path` inside `root`, creating what is missing: directories
/// along the way and, at the end, a directory or an empty file as `kind`
/// says. Returns an `O_PATH` handle on the target, which must already be of
/// the right kind when it exists.
pub(super) fn ensure_target(
    root: &OwnedFd,
    path: &str,
    kind: Kind,
) -> Result<OwnedFd, StorageError> {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    let mut parent = nix::unistd::dup(root).map_err(|errno| StorageError::sys("/", errno))?;
    for (i, name) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let prefix = format!("/{}", parts[..=i].join("/"));
        let want = if last { kind } else { Kind::Dir };
        let fd = match open_in_root(root, &prefix, OFlag::O_PATH) {
            Ok(fd) => fd,
            Err(StorageError::Sys(SysError {
                errno: Errno::ENOENT,
                ..
            })) => {
                create(&parent, name, want, &prefix)?;
                open_in_root(root, &prefix, OFlag::O_PATH)?
            }
            Err(e) => return Err(e),
        };
        check_kind(&fd, want, &prefix)?;
        parent = fd;
    }
    Ok(parent)
}

fn create(parent: &OwnedFd, name: &str, kind: Kind, shown: &str) -> Result<(), StorageError> {
    let made = match kind {
        Kind::Dir => mkdirat(parent.as_fd(), name, Mode::from_bits_truncate(0o755)),
        Kind::File => openat(
            parent.as_fd(),
            name,
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )
        .map(drop),
    };
    match made {
        Ok(()) => Ok(()),
        // The name exists but did not resolve: a symlink whose target is
        // missing. Creating through it would mean following it, which is
        // exactly what a hostile image wants; refuse instead.
        Err(Errno::EEXIST) => Err(StorageError::DanglingSymlink {
            path: shown.to_string(),
        }),
        Err(errno) => Err(StorageError::sys(shown, errno)),
    }
}

fn check_kind(fd: &OwnedFd, want: Kind, shown: &str) -> Result<(), StorageError> {
    let st = fstat(fd).map_err(|errno| StorageError::sys(shown, errno))?;
    let is_dir = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR;
    match (want, is_dir) {
        (Kind::Dir, false) => Err(StorageError::NotDir {
            path: shown.to_string(),
        }),
        (Kind::File, true) => Err(StorageError::IsDir {
            path: shown.to_string(),
        }),
        _ => Ok(()),
    }
}

/// The `/proc/self/fd/N` path of a handle, for system calls that take
/// paths; it names exactly the object the handle was opened on.
pub fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

fn rel(path: &str) -> &str {
    let r = path.trim_start_matches('/');
    if r.is_empty() {
        "."
    } else {
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    /// The real path a handle ended up on.
    fn real(fd: &OwnedFd) -> PathBuf {
        fs::read_link(fd_path(fd)).unwrap()
    }

    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let base = fs::canonicalize(dir.path()).unwrap();
        let root = base.join("root");
        let outside = base.join("outside");
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        (dir, root, outside)
    }

    #[test]
    fn creates_missing_directories_and_files_inside_the_root() {
        let (_d, root, _) = setup();
        let r = open_root(&root).unwrap();
        let fd = ensure_target(&r, "/var/lib/data", Kind::Dir).unwrap();
        assert_eq!(real(&fd), root.join("var/lib/data"));
        assert!(root.join("var/lib/data").is_dir());
        let fd = ensure_target(&r, "/etc/app.conf", Kind::File).unwrap();
        assert_eq!(real(&fd), root.join("etc/app.conf"));
        assert!(root.join("etc/app.conf").is_file());
        // Existing targets are reused as they are.
        ensure_target(&r, "/var/lib/data", Kind::Dir).unwrap();
    }

    #[test]
    fn absolute_symlink_escape_stays_inside() {
        let (_d, root, outside) = setup();
        symlink(&outside, root.join("data")).unwrap();
        fs::create_dir_all(root.join(outside.strip_prefix("/").unwrap())).unwrap();
        let r = open_root(&root).unwrap();
        let fd = ensure_target(&r, "/data", Kind::Dir).unwrap();
        // "/…/outside" is followed as a path inside the root.
        assert!(real(&fd).starts_with(&root), "{:?}", real(&fd));
    }

    #[test]
    fn relative_dotdot_escape_stays_inside() {
        let (_d, root, _) = setup();
        symlink("../../../../../../etc", root.join("data")).unwrap();
        let r = open_root(&root).unwrap();
        let fd = ensure_target(&r, "/data", Kind::Dir).unwrap();
        assert_eq!(real(&fd), root.join("etc"));
    }

    #[test]
    fn dangling_escape_is_refused_not_created_outside() {
        let (_d, root, outside) = setup();
        let target = outside.join("made-by-agent");
        symlink(&target, root.join("data")).unwrap();
        let r = open_root(&root).unwrap();
        let e = ensure_target(&r, "/data/x", Kind::Dir).unwrap_err();
        assert_eq!(
            e,
            StorageError::DanglingSymlink {
                path: "/data".into()
            }
        );
        assert!(!target.exists());
    }

    #[test]
    fn kinds_must_match() {
        let (_d, root, _) = setup();
        fs::write(root.join("etc/passwd"), "").unwrap();
        let r = open_root(&root).unwrap();
        assert_eq!(
            ensure_target(&r, "/etc/passwd", Kind::Dir).unwrap_err(),
            StorageError::NotDir {
                path: "/etc/passwd".into()
            }
        );
        assert_eq!(
            ensure_target(&r, "/etc", Kind::File).unwrap_err(),
            StorageError::IsDir {
                path: "/etc".into()
            }
        );
        assert!(matches!(
            ensure_target(&r, "/etc/passwd/x", Kind::Dir).unwrap_err(),
            StorageError::NotDir { .. }
        ));
    }

    #[test]
    fn open_in_root_reads_through_in_root_symlinks() {
        let (_d, root, outside) = setup();
        fs::write(root.join("etc/passwd"), "inside").unwrap();
        fs::write(outside.join("passwd"), "outside").unwrap();
        fs::create_dir_all(root.join("x")).unwrap();
        symlink("/etc", root.join("x/etc")).unwrap();
        let r = open_root(&root).unwrap();
        let fd = open_in_root(&r, "/x/etc/passwd", OFlag::O_RDONLY).unwrap();
        assert_eq!(fs::read_to_string(fd_path(&fd)).unwrap(), "inside");
    }
}
