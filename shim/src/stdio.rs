//! The FIFOs containerd names for a task's stdin, stdout and stderr
//! (empty: no such stream). Outputs are opened read-write, as runc's shim
//! does: the open never waits for a reader, and a reader that comes later
//! (ctr attach) still gets the output. (Stdin goes to the agent directly:
//! `guest::feed`.)

use std::fs::{File, OpenOptions};
use std::process::Stdio;

use crate::error::ShimError;

#[derive(Debug, Clone, Default)]
pub struct Fifos {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// Opens the output FIFO `path` (read-write, so it never waits for a
/// reader); None when there is none. The one opener of output FIFOs: the
/// shim's children get it as a [`Stdio`] ([`output`]), exec sessions as
/// an async pipe (`guest::outputs`).
pub fn open_output(path: &str) -> Result<Option<File>, ShimError> {
    if path.is_empty() {
        return Ok(None);
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map(Some)
        .map_err(|source| io_error(path, source))
}

/// The output FIFO `path` for the shim's child; None when there is none.
pub fn output(path: &str) -> Result<Option<Stdio>, ShimError> {
    Ok(open_output(path)?.map(Stdio::from))
}

fn io_error(path: &str, source: std::io::Error) -> ShimError {
    ShimError::Io {
        what: format!("opening {path}"),
        source,
    }
}
