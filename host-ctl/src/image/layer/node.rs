//! Creating one entry's node: the checks (paths, ancestors, links, device
//! nodes) and then the file, directory, link, fifo or whiteout itself.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::Mode;
use tar::EntryType;

use super::meta::{set_mtime, Meta};
use super::path::{ensure_parents, is_whiteout, lookup, lstat, sanitize, Lookup};
use super::whiteout::{self, Name};
use crate::image::error::ImageError;

/// The state of one layer being applied.
pub struct Applier<'a> {
    root: &'a Path,
    lowers: &'a [PathBuf],
    layer: &'a str,
    /// Directories marked opaque, filled with whiteouts at the end.
    opaque: Vec<PathBuf>,
    /// Directories' mtimes, set last (writing in a directory changes it).
    dir_times: Vec<(PathBuf, i64)>,
    /// The current entry's path as the archive gives it, for errors.
    entry_name: String,
}

impl<'a> Applier<'a> {
    pub fn new(root: &'a Path, lowers: &'a [PathBuf], layer: &'a str) -> Self {
        Applier {
            root,
            lowers,
            layer,
            opaque: Vec::new(),
            dir_times: Vec::new(),
            entry_name: String::new(),
        }
    }

    fn hostile(&self, reason: impl Into<String>) -> ImageError {
        ImageError::Hostile {
            layer: self.layer.to_string(),
            entry: self.entry_name.clone(),
            reason: reason.into(),
        }
    }

    fn io(&self, what: &str, e: io::Error) -> ImageError {
        ImageError::Io {
            context: format!("layer {}: entry {:?}: {what}", self.layer, self.entry_name),
            source: e,
        }
    }

    /// Applies one archive entry.
    pub fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), ImageError> {
        let raw = entry
            .path()
            .map_err(|e| self.io("reading its path", e))?
            .into_owned();
        self.entry_name = raw.display().to_string();
        let rel = sanitize(&raw).map_err(|r| self.hostile(r))?;
        let kind = entry.header().entry_type();
        if matches!(kind, EntryType::XGlobalHeader | EntryType::XHeader) {
            return Ok(());
        }
        let meta = Meta::of(entry).map_err(|e| self.io("reading its header", e))?;
        let Some(file_name) = rel.file_name() else {
            return self.root_entry(kind, &meta);
        };
        match whiteout::classify(file_name) {
            Name::Plain => {}
            Name::Ignore => return Ok(()),
            Name::Bad => return Err(self.hostile("a whiteout must name a file")),
            Name::Opaque => return self.opaque_marker(&rel),
            Name::Hide(hidden) => return self.whiteout(&rel.with_file_name(hidden)),
        }
        self.parents(&rel, true)?;
        let target = self.root.join(&rel);
        match kind {
            EntryType::Directory => return self.dir(&target, meta),
            EntryType::Link => return self.hard_link(entry, &target),
            // A GNU sparse entry reads as its whole content (the tar crate
            // fills the holes), and is written with holes again.
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.file(entry, &target)?
            }
            EntryType::Symlink => self.symlink(entry, &target)?,
            EntryType::Fifo => self.fifo(&target)?,
            EntryType::Char | EntryType::Block => return self.device(entry, &rel),
            other => return Err(self.hostile(format!("unsupported entry type {other:?}"))),
        }
        let symlink = kind == EntryType::Symlink;
        meta.apply(&target, symlink, true)
            .map_err(|e| self.io("setting its attributes", e))
    }

    /// Checks (and with `create` makes) the real directories above `rel`.
    fn parents(&self, rel: &Path, create: bool) -> Result<(), ImageError> {
        match ensure_parents(self.root, rel, create, self.lowers) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(why)) => Err(self.hostile(why.reason())),
            Err(e) => Err(self.io("creating its parent directories", e)),
        }
    }

    /// `./` itself: the snapshot root takes its attributes.
    fn root_entry(&mut self, kind: EntryType, meta: &Meta) -> Result<(), ImageError> {
        if kind != EntryType::Directory {
            return Err(self.hostile("the layer's root must be a directory"));
        }
        meta.apply(self.root, false, false)
            .map_err(|e| self.io("setting the root's attributes", e))?;
        self.dir_times.push((self.root.to_path_buf(), meta.mtime));
        Ok(())
    }

    /// Removes what an earlier entry of this layer left at `target`, unless
    /// both are directories (then the later entry only updates attributes).
    fn clear(&self, target: &Path, keep_dir: bool) -> Result<bool, ImageError> {
        let existing = lstat(target).map_err(|e| self.io("inspecting it", e))?;
        let result = match existing {
            None => return Ok(false),
            Some(m) if m.is_dir() && keep_dir => return Ok(true),
            Some(m) if m.is_dir() => fs::remove_dir_all(target),
            Some(_) => fs::remove_file(target),
        };
        result.map_err(|e| self.io("replacing an earlier entry", e))?;
        Ok(false)
    }

    fn dir(&mut self, target: &Path, meta: Meta) -> Result<(), ImageError> {
        if !self.clear(target, true)? {
            fs::DirBuilder::new()
                .mode(0o700)
                .create(target)
                .map_err(|e| self.io("creating it", e))?;
        }
        meta.apply(target, false, false)
            .map_err(|e| self.io("setting its attributes", e))?;
        self.dir_times.push((target.to_path_buf(), meta.mtime));
        Ok(())
    }

    fn file<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        target: &Path,
    ) -> Result<(), ImageError> {
        self.clear(target, false)?;
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(target)
            .map_err(|e| self.io("creating it", e))?;
        let size = entry.size();
        copy_in_large_writes(entry, &mut file, size).map_err(|e| self.io("writing it", e))?;
        Ok(())
    }

    /// Created as the archive says; never followed.
    fn symlink<R: Read>(&self, entry: &tar::Entry<'_, R>, target: &Path) -> Result<(), ImageError> {
        let link = entry
            .link_name()
            .map_err(|e| self.io("reading its link target", e))?
            .ok_or_else(|| self.hostile("a symbolic link without a target"))?;
        self.clear(target, false)?;
        std::os::unix::fs::symlink(&link, target).map_err(|e| self.io("creating it", e))
    }

    fn fifo(&self, target: &Path) -> Result<(), ImageError> {
        self.clear(target, false)?;
        nix::unistd::mkfifo(target, Mode::from_bits_truncate(0o600))
            .map_err(|e| self.io("creating it", e.into()))
    }

    /// Only overlayfs whiteouts (char 0:0) are allowed as device nodes.
    fn device<R: Read>(&mut self, entry: &tar::Entry<'_, R>, rel: &Path) -> Result<(), ImageError> {
        let h = entry.header();
        let major = h.device_major().ok().flatten().unwrap_or(0);
        let minor = h.device_minor().ok().flatten().unwrap_or(0);
        if h.entry_type() == EntryType::Char && major == 0 && minor == 0 {
            return self.whiteout(rel);
        }
        Err(self.hostile(format!(
            "device nodes ({major}:{minor}) are not allowed in image layers"
        )))
    }

    /// `.wh.NAME`: NAME becomes a whiteout, unless this layer itself has
    /// NAME (a whiteout only hides what lower layers have).
    fn whiteout(&mut self, rel: &Path) -> Result<(), ImageError> {
        self.parents(rel, true)?;
        let target = self.root.join(rel);
        if lstat(&target)
            .map_err(|e| self.io("inspecting it", e))?
            .is_some()
        {
            return Ok(());
        }
        whiteout::make(&target).map_err(|e| self.io("creating its whiteout", e))
    }

    /// `DIR/.wh..wh..opq`: DIR must be a real directory of this layer.
    fn opaque_marker(&mut self, rel: &Path) -> Result<(), ImageError> {
        self.parents(rel, true)?;
        if let Some(dir) = rel.parent() {
            self.opaque.push(dir.to_path_buf());
        }
        Ok(())
    }

    /// A hard link to an earlier entry of this layer, or to the file in the
    /// nearest lower snapshot (layers are immutable and on one file system).
    fn hard_link<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        target: &Path,
    ) -> Result<(), ImageError> {
        let link = entry
            .link_name()
            .map_err(|e| self.io("reading its link target", e))?
            .ok_or_else(|| self.hostile("a hard link without a target"))?;
        let rel = sanitize(&link).map_err(|_| {
            self.hostile(format!(
                "hard link target {} escapes the layer",
                link.display()
            ))
        })?;
        if rel.as_os_str().is_empty() {
            return Err(self.hostile("a hard link to the layer's root"));
        }
        let source = self.link_source(&rel, &link)?;
        if source == target {
            return Ok(());
        }
        self.clear(target, false)?;
        fs::hard_link(&source, target).map_err(|e| self.io("creating the hard link", e))
    }

    /// Where the file a hard link names is: this layer, else a lower one.
    fn link_source(&self, rel: &Path, link: &Path) -> Result<PathBuf, ImageError> {
        let shown = link.display();
        let not_file = || self.hostile(format!("hard link target {shown} is a directory"));
        let io_err = |e| self.io("looking up its hard link target", e);
        match ensure_parents(self.root, rel, false, &[]).map_err(io_err)? {
            Ok(()) => {
                let here = self.root.join(rel);
                match lstat(&here).map_err(io_err)? {
                    Some(m) if m.is_dir() => return Err(not_file()),
                    Some(m) if is_whiteout(&m) => {
                        return Err(self.hostile(format!("hard link target {shown} was deleted")))
                    }
                    Some(_) => return Ok(here),
                    None => {}
                }
            }
            Err(super::path::Ancestor::Missing(_)) => {}
            Err(why) => return Err(self.hostile(format!("hard link target: {}", why.reason()))),
        }
        for lower in self.lowers.iter().rev() {
            match lookup(lower, rel).map_err(io_err)? {
                Lookup::Absent => continue,
                Lookup::Hidden => break,
                Lookup::Found(m) if m.is_dir() => return Err(not_file()),
                Lookup::Found(_) => return Ok(lower.join(rel)),
            }
        }
        Err(self.hostile(format!(
            "hard link target {shown} is neither in this layer nor below it"
        )))
    }

    /// After the last entry: opaque directories' whiteouts, then the
    /// directories' mtimes.
    pub fn finish(self) -> Result<(), ImageError> {
        let fail = |what: &str, p: &Path, e| ImageError::Io {
            context: format!("layer {}: {what} {}", self.layer, p.display()),
            source: e,
        };
        for dir in &self.opaque {
            whiteout::fill_opaque(self.root, self.lowers, dir)
                .map_err(|e| fail("hiding the lower content of opaque directory", dir, e))?;
        }
        for (dir, mtime) in self.dir_times.iter().rev() {
            match set_mtime(dir, *mtime) {
                // A later entry replaced the directory.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                r => r.map_err(|e| fail("setting the mtime of", dir, e))?,
            }
        }
        Ok(())
    }
}

/// Copies `from` into `to` in writes of up to 1 MiB (`io::copy`'s 8 KiB
/// writes made the system calls half of an import's time, measured with
/// `strace -c` on a 200 MiB layer). Blocks of zeros are skipped, leaving
/// holes, as `cp --sparse=auto` does: layers are never written again, and
/// a disk image in a layer takes only the space of its data.
fn copy_in_large_writes(from: &mut impl Read, to: &mut std::fs::File, size: u64) -> io::Result<()> {
    thread_local! {
        // One buffer for every file of a layer: a fresh 1 MiB allocation
        // per file is an mmap, 256 page faults and an munmap.
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let len = usize::try_from(size.clamp(4096, 1 << 20)).unwrap_or(1 << 20);
    BUF.with_borrow_mut(|buf| {
        if buf.len() < len {
            buf.resize(len, 0);
        }
        copy_with(from, to, &mut buf[..len])
    })
}

fn copy_with(from: &mut impl Read, to: &mut std::fs::File, buf: &mut [u8]) -> io::Result<()> {
    use std::io::{Seek, SeekFrom};
    let mut written: u64 = 0;
    loop {
        let filled = super::read_full(from, buf)?;
        if filled == 0 {
            break;
        }
        if buf[..filled].iter().all(|&b| b == 0) {
            to.seek(SeekFrom::Current(filled as i64))?;
        } else {
            to.write_all(&buf[..filled])?;
        }
        written += filled as u64;
        if filled < buf.len() {
            break;
        }
    }
    // A file that ends in a hole gets its length.
    to.set_len(written)
}

#[cfg(test)]
mod sparse_tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn zeros_become_holes_and_the_content_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut data = vec![0u8; 5 << 20];
        data[(1 << 20) + 7] = 1;
        let mut f = std::fs::File::create(&path).unwrap();
        copy_in_large_writes(&mut &data[..], &mut f, data.len() as u64).unwrap();
        drop(f);
        assert_eq!(std::fs::read(&path).unwrap(), data);
        let allocated = std::fs::metadata(&path).unwrap().blocks() * 512;
        assert!(
            allocated <= 1 << 20,
            "{allocated} bytes allocated for 1 MiB of data"
        );
    }
}
