//! Archiving a host source for a copy in, as it is sent: symlinks kept
//! as symlinks, never followed.

use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use tokio::sync::mpsc;

use super::CHUNK;

/// Writes chunks of archive to the session.
pub(super) struct ChunkWriter {
    pub(super) tx: mpsc::Sender<Vec<u8>>,
    pub(super) buf: Vec<u8>,
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.flush()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(chunk)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the copy ended"))
    }
}

/// Writes a tar archive of `src` (named after its last component, its
/// symlinks kept as symlinks) to `w`.
pub fn archive<W: Write>(src: &Path, w: W) -> Result<()> {
    let name = src
        .file_name()
        .map(OsString::from)
        .or_else(|| fs::canonicalize(src).ok()?.file_name().map(OsString::from))
        .ok_or_else(|| anyhow!("{}: no name to copy it as", src.display()))?;
    let meta = fs::symlink_metadata(src).with_context(|| format!("{}", src.display()))?;
    let mut b = tar::Builder::new(w);
    b.follow_symlinks(false);
    if meta.is_dir() {
        b.append_dir_all(&name, src)
    } else {
        b.append_path_with_name(src, &name)
    }
    .with_context(|| format!("archiving {}", src.display()))?;
    b.into_inner()
        .and_then(|mut w| w.flush())
        .with_context(|| format!("archiving {}", src.display()))?;
    Ok(())
}
