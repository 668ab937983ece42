//! Unpacking a source tar (an OCI layout tar or a docker-archive, possibly
//! gzipped) into a work directory: only directories and regular files are
//! created; links inside the archive (docker-archive links duplicate
//! layers) become hard links to files inside it, or nothing.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use tar::EntryType;

use crate::image::compress;
use crate::image::error::{ImageError, IoContext};
use crate::image::layer::path::sanitize;

/// Unpacks `archive` into the empty directory `dest`, telling `read` of
/// the archive's bytes as they are read.
pub fn unpack(archive: &Path, dest: &Path, read: &dyn Fn(u64)) -> Result<(), ImageError> {
    let file = File::open(archive).ctx("opening", archive)?;
    let counted = Counted { inner: file, read };
    let stream = compress::decompress(counted).ctx("reading", archive)?;
    let mut tar = tar::Archive::new(TailReader::new(stream));
    let mut links: Vec<(PathBuf, PathBuf)> = Vec::new();
    let entries = tar.entries().ctx("reading", archive)?;
    for entry in entries {
        let mut entry = entry.ctx("reading an entry header of", archive)?;
        let raw = entry
            .path()
            .ctx("reading an entry path of", archive)?
            .into_owned();
        let bad = |why: &str| {
            ImageError::Invalid(format!(
                "{}: entry {:?}: {why}",
                archive.display(),
                raw.display()
            ))
        };
        let rel = sanitize(&raw).map_err(bad)?;
        let target = dest.join(&rel);
        let io_err = |e: io::Error| bad(&format!("unpacking it: {e}"));
        match entry.header().entry_type() {
            EntryType::Directory => fs::create_dir_all(&target).map_err(io_err)?,
            EntryType::Regular | EntryType::Continuous => {
                write_file(&mut entry, &rel, dest).map_err(io_err)?;
            }
            EntryType::Symlink | EntryType::Link => {
                let link = entry.link_name().map_err(io_err)?;
                let Some(link) = link else { continue };
                let symlink = entry.header().entry_type() == EntryType::Symlink;
                let base = if symlink {
                    rel.parent().unwrap_or(Path::new(""))
                } else {
                    Path::new("")
                };
                if let Ok(to) = sanitize(&base.join(link.as_ref())) {
                    links.push((rel, to));
                }
            }
            _ => {}
        }
    }
    if !tar.into_inner().ended_with_zero_block() {
        return Err(ImageError::Invalid(format!(
            "{} is truncated: it ends before the tar end-of-archive marker",
            archive.display()
        )));
    }
    resolve_links(dest, &links)
}

fn write_file<R: Read>(entry: &mut R, rel: &Path, dest: &Path) -> io::Result<()> {
    if let Some(parent) = rel.parent() {
        fs::create_dir_all(dest.join(parent))?;
    }
    let target = dest.join(rel);
    if fs::symlink_metadata(&target).is_ok() {
        fs::remove_file(&target)?;
    }
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&target)?;
    io::copy(entry, &mut out)?;
    Ok(())
}

/// Each link becomes a hard link to the regular file it leads to (through
/// at most a few other links), if there is one in the archive.
fn resolve_links(dest: &Path, links: &[(PathBuf, PathBuf)]) -> Result<(), ImageError> {
    for (at, to) in links {
        let mut to = to.clone();
        for _ in 0..8 {
            match links.iter().find(|(a, _)| *a == to) {
                Some((_, next)) => to = next.clone(),
                None => break,
            }
        }
        let source = dest.join(&to);
        let is_file = fs::symlink_metadata(&source).is_ok_and(|m| m.is_file());
        let target = dest.join(at);
        if is_file && fs::symlink_metadata(&target).is_err() {
            if let Some(parent) = at.parent() {
                fs::create_dir_all(dest.join(parent)).ctx("creating", &dest.join(parent))?;
            }
            fs::hard_link(&source, &target).ctx("linking", &target)?;
        }
    }
    Ok(())
}

/// Remembers the last 512 bytes read: a complete tar's reader stops right
/// after the all-zero end-of-archive block, a truncated one does not.
struct TailReader<R> {
    inner: R,
    tail: Vec<u8>,
}

impl<R: Read> TailReader<R> {
    fn new(inner: R) -> Self {
        TailReader {
            inner,
            tail: Vec::with_capacity(1024),
        }
    }

    fn ended_with_zero_block(&self) -> bool {
        self.tail.len() >= 512 && self.tail[self.tail.len() - 512..].iter().all(|b| *b == 0)
    }
}

impl<R: Read> Read for TailReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.tail.extend_from_slice(&buf[..n]);
        if self.tail.len() > 512 {
            let drop = self.tail.len() - 512;
            self.tail.drain(..drop);
        }
        Ok(n)
    }
}

/// A reader that tells how much was read through it.
struct Counted<'a, R> {
    inner: R,
    read: &'a dyn Fn(u64),
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.read)(n as u64);
        Ok(n)
    }
}
