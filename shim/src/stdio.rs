//! The FIFOs containerd names for a task's stdin, stdout and stderr
//! (empty: no such stream). Outputs are opened read-write, as runc's shim
//! does: the open never waits for a reader, and a reader that comes later
//! (ctr attach) still gets the output. (Stdin goes to the agent directly:
//! `guest::feed`.)

use std::fs::OpenOptions;
use std::process::Stdio;

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

fn io_error(path: &str, source: std::io::Error) -> ShimError {
    ShimError::Io {
        what: format!("opening {path}"),
        source,
    }
}
