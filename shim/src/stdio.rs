//! The FIFOs containerd names for a task's stdin, stdout and stderr
//! (empty: no such stream). Outputs are opened read-write, as runc's shim
//! does: the open never waits for a reader, and a reader that comes later
//! (ctr attach) still gets the output. Stdin is opened for reading only,
//! so the app sees end of file when containerd's side closes it.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::process::Stdio;

use nix::fcntl::{fcntl, FcntlArg, OFlag};

use crate::error::ShimError;

#[derive(Debug, Clone, Default)]
pub struct Fifos {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// Opens the output FIFO `path` for the shim's child; None when there is
/// none.
pub fn output(path: &str) -> Result<Option<Stdio>, ShimError> {
    if path.is_empty() {
        return Ok(None);
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|source| io_error(path, source))?;
    Ok(Some(Stdio::from(file)))
}

/// Opens the stdin FIFO `path` for reading, without waiting for its
/// writer; None when there is none.
pub fn input(path: &str) -> Result<Option<Stdio>, ShimError> {
    if path.is_empty() {
        return Ok(None);
    }
    let file: File = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|source| io_error(path, source))?;
    // The child reads it blocking.
    fcntl(&file, FcntlArg::F_SETFL(OFlag::empty()))
        .map_err(|e| io_error(path, std::io::Error::from(e)))?;
    Ok(Some(Stdio::from(file)))
}

fn io_error(path: &str, source: std::io::Error) -> ShimError {
    ShimError::Io {
        what: format!("opening {path}"),
        source,
    }
}
