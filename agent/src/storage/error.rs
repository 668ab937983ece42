//! Storage's one error type: resolving paths in an app's root, mounting
//! there and in the guest. Messages name the path or mount concerned.

use kvmpod_api::validate::GuestPathError;
use nix::errno::Errno;

use crate::error::SysError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// A system call failed; its context names the path.
    #[error(transparent)]
    Sys(#[from] SysError),
    #[error("{path} is not a directory")]
    NotDir { path: String },
    #[error("{path} is a directory, but a file is mounted there")]
    IsDir { path: String },
    #[error("{path} is a symlink to nothing inside the app's root; refusing to create its target")]
    DanglingSymlink { path: String },
    /// Where a mount was to go could not be resolved in the app's root.
    #[error("mount target {0}")]
    Target(Box<StorageError>),
    /// One step of assembling an app's root: `/proc`, `tmpfs at /run`...
    #[error("{what}: {source}")]
    Step {
        what: String,
        source: Box<StorageError>,
    },
    #[error("tmpfs {path}: {reason}")]
    TmpfsPath {
        path: String,
        reason: GuestPathError,
    },
    #[error("no volume named {0:?}")]
    NoVolume(String),
    /// A tar archive that is not one (`host-ctl cp`).
    #[error("bad archive: {0}")]
    Archive(String),
    /// Reading or sending an archive failed.
    #[error("archive: {0}")]
    ArchiveIo(String),
    #[error("archive entry {name:?} {why}; refusing it")]
    BadEntryName { name: String, why: &'static str },
    #[error("archive entry {name:?}: {part:?} is not a directory (symlinks are not followed)")]
    NotDirInArchive { name: String, part: String },
    #[error("archive entry {name:?}: a directory is in the way")]
    IsDirInArchive { name: String },
    #[error("{path:?} is a {what}; only files, directories and symlinks are copied in")]
    NotCopied { path: String, what: &'static str },
    #[error("{0} is nested too deeply to copy")]
    TooDeep(String),
}

impl StorageError {
    /// A failed system call on `context` (a path, or what was being done).
    pub(crate) fn sys(context: impl Into<String>, errno: Errno) -> Self {
        StorageError::Sys(SysError {
            context: context.into(),
            errno,
        })
    }

    /// This error, as the reason a mount target could not be made.
    pub(crate) fn target(self) -> Self {
        StorageError::Target(Box::new(self))
    }

    /// Names the step of assembling an app's root that failed.
    pub(crate) fn in_step(what: impl Into<String>) -> impl FnOnce(StorageError) -> StorageError {
        let what = what.into();
        move |e| StorageError::Step {
            what,
            source: Box::new(e),
        }
    }
}
