//! OCI whiteouts as overlayfs reads them through 9p. `.wh.NAME` becomes a
//! character device 0:0 named NAME. An opaque directory cannot carry the
//! `trusted.overlay.opaque` xattr (QEMU's 9p passthrough does not pass
//! trusted.* to the guest), so it gets an explicit whiteout for every name
//! the lower snapshots of its chain have there and this layer does not.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::sys::stat::{makedev, mknod, Mode, SFlag};

use super::path::{lookup, lstat, Lookup};

const PREFIX: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";
/// aufs's own bookkeeping names (`.wh..wh.plnk` and the like).
const META_PREFIX: &str = ".wh..wh.";

/// What a layer entry's file name means.
#[derive(Debug, PartialEq, Eq)]
pub enum Name<'a> {
    /// An ordinary entry.
    Plain,
    /// `.wh.NAME`: NAME is deleted.
    Hide(&'a OsStr),
    /// `.wh..wh..opq`: the parent directory hides everything below it.
    Opaque,
    /// Other `.wh..wh.` names: aufs metadata, skipped.
    Ignore,
    /// `.wh.`, `.wh..` and the like.
    Bad,
}

pub fn classify(file_name: &OsStr) -> Name<'_> {
    let bytes = file_name.as_bytes();
    if bytes == OPAQUE.as_bytes() {
        return Name::Opaque;
    }
    if bytes.starts_with(META_PREFIX.as_bytes()) {
        return Name::Ignore;
    }
    match bytes.strip_prefix(PREFIX.as_bytes()) {
        None => Name::Plain,
        Some(b"" | b"." | b"..") => Name::Bad,
        Some(rest) if rest.contains(&b'/') => Name::Bad,
        Some(rest) => Name::Hide(OsStr::from_bytes(rest)),
    }
}

/// Creates overlayfs's whiteout at `path`.
pub fn make(path: &Path) -> io::Result<()> {
    mknod(path, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0)).map_err(io::Error::from)
}

/// Hides, in this layer's `dir` (relative to `root`), every name that the
/// lower snapshots have there and the layer does not. A subdirectory the
/// layer does have hides the lower one's content too, so it is filled the
/// same way.
pub fn fill_opaque(root: &Path, lowers: &[PathBuf], dir: &Path) -> io::Result<()> {
    let here = root.join(dir);
    if !lstat(&here)?.is_some_and(|m| m.is_dir()) {
        return Ok(());
    }
    for (name, lower_is_dir) in lower_names(lowers, dir)? {
        let path = here.join(&name);
        match lstat(&path)? {
            None => make(&path)?,
            Some(m) if m.is_dir() && lower_is_dir => fill_opaque(root, lowers, &dir.join(&name))?,
            Some(_) => {}
        }
    }
    Ok(())
}

/// The names visible in `dir` in the merged lower snapshots (and a few
/// already hidden ones, which do no harm), each with whether any of them is
/// a directory.
fn lower_names(lowers: &[PathBuf], dir: &Path) -> io::Result<BTreeMap<OsString, bool>> {
    let mut names = BTreeMap::new();
    for lower in lowers.iter().rev() {
        match lookup(lower, dir)? {
            Lookup::Absent => continue,
            Lookup::Found(m) if m.is_dir() => {
                for entry in fs::read_dir(lower.join(dir))? {
                    let entry = entry?;
                    let is_dir = entry.file_type()?.is_dir();
                    let seen = names.entry(entry.file_name()).or_insert(false);
                    *seen |= is_dir;
                }
            }
            _ => break,
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Name<'_> {
        classify(OsStr::new(s))
    }

    #[test]
    fn whiteout_names() {
        assert_eq!(c("passwd"), Name::Plain);
        assert_eq!(c(".wh.passwd"), Name::Hide(OsStr::new("passwd")));
        assert_eq!(c(".wh..hidden"), Name::Hide(OsStr::new(".hidden")));
        assert_eq!(c(".wh..wh..opq"), Name::Opaque);
        assert_eq!(c(".wh..wh.plnk"), Name::Ignore);
        assert_eq!(c(".wh."), Name::Bad);
        assert_eq!(c(".wh.."), Name::Bad);
        assert_eq!(c(".whx"), Name::Plain);
    }
}
