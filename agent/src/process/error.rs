//! The process subsystem's one error type, and the exit status each error
//! is recorded with: the convention of `docker run` (and of shells) for
//! errors of the runtime itself, a program that cannot be executed, and a
//! program that does not exist.

use nix::errno::Errno;

use crate::error::SysError;
use crate::storage::StorageError;

/// Exit status recorded for an app that could not be set up (mounts, user).
pub const EXIT_SETUP_FAILED: i32 = 125;
/// ... for a program that exists but cannot be executed.
pub const EXIT_CANNOT_EXECUTE: i32 = 126;
/// ... for a program that does not exist.
pub const EXIT_NOT_FOUND: i32 = 127;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpawnError {
    #[error("{program:?} was not found in the app's PATH ({path})")]
    NotInPath { program: String, path: String },
    #[error("{0:?} does not exist in the app's root")]
    Missing(String),
    #[error("{0:?} is not an executable file")]
    NotExecutable(String),
    /// A string for the kernel (named by what it is) holds a NUL byte.
    #[error("{0}: contains a NUL byte")]
    Nul(String),
    #[error("user {0:?} is not in the app's /etc/passwd")]
    NoSuchUser(String),
    #[error("group {0:?} is not in the app's /etc/group")]
    NoSuchGroup(String),
    #[error("reading the app's {file}: {source}")]
    ReadImage {
        file: &'static str,
        source: StorageError,
    },
    /// The app's root could not be opened.
    #[error(transparent)]
    Root(StorageError),
    #[error("allocating a terminal: opening the app's /dev/pts/ptmx: {0}")]
    PtyOpen(StorageError),
    #[error("allocating a terminal: {what}: {errno}")]
    PtyIoctl { what: &'static str, errno: Errno },
    #[error("app {0:?} is not running")]
    NotRunning(String),
    /// A file of a process in /proc could not be read, or not parsed.
    #[error("reading /proc/{pid}/{file}: {reason}")]
    Procfs {
        pid: i32,
        file: &'static str,
        reason: String,
    },
    #[error(transparent)]
    Sys(#[from] SysError),
    #[error("starting {program:?}: {reason}")]
    Exec {
        program: String,
        reason: String,
        code: i32,
    },
}

impl SpawnError {
    /// The exit status the app (or command) is recorded with.
    pub fn exit_code(&self) -> i32 {
        match self {
            SpawnError::NotInPath { .. } | SpawnError::Missing(_) => EXIT_NOT_FOUND,
            SpawnError::NotExecutable(_) => EXIT_CANNOT_EXECUTE,
            SpawnError::Exec { code, .. } => *code,
            _ => EXIT_SETUP_FAILED,
        }
    }
}

/// Maps a failed `spawn` to the error recorded for the app.
pub(super) fn exec_error(program: &str, e: &std::io::Error) -> SpawnError {
    let code = match e.raw_os_error() {
        Some(libc::ENOENT) => EXIT_NOT_FOUND,
        Some(libc::EACCES) | Some(libc::ENOEXEC) | Some(libc::EPERM) => EXIT_CANNOT_EXECUTE,
        _ => EXIT_SETUP_FAILED,
    };
    SpawnError::Exec {
        program: program.to_string(),
        reason: e.to_string(),
        code,
    }
}
