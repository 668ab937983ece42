//! The agent's error type: what was being done, and why it failed.

use std::fmt;

use nix::errno::Errno;

/// A failed system call, with what it was doing ("mounting 9p tag data at
/// /mnt/data").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SysError {
    pub context: String,
    pub errno: Errno,
}

impl fmt::Display for SysError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.context, self.errno.desc())
    }
}

/// Adds context to a raw `Errno` result.
pub trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, SysError>;
}

impl<T> Context<T> for Result<T, Errno> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, SysError> {
        self.map_err(|errno| SysError {
            context: what(),
            errno,
        })
    }
}

impl<T> Context<T> for std::io::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, SysError> {
        self.map_err(|e| SysError {
            context: what(),
            errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        })
    }
}
