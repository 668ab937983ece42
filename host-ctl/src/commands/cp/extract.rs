//! Extracting a received archive on this host, as `docker cp` places
//! it: absolute names, `..`, hard links, devices and fifos are refused,
//! and no symlink already in the destination tree (or made by the
//! archive) is followed; files get the archive's mode without setuid and
//! setgid, and its mtime.

use std::ffi::{OsStr, OsString};
use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;
use tokio::sync::mpsc;

/// Reads the chunks of archive the session receives.
pub(super) struct ChunkReader {
    pub(super) rx: mpsc::Receiver<Vec<u8>>,
    pub(super) buf: Vec<u8>,
    pub(super) pos: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.rx.blocking_recv() {
                Some(chunk) => {
                    self.buf = chunk;
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Where a received archive is extracted, as `docker cp` places it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The existing directory entries are extracted into.
    pub into: PathBuf,
    /// The archive's top entry's new name, when DEST names the copy.
    pub rename: Option<OsString>,
}

impl Plan {
    /// An existing directory DEST receives the source under its own name
    /// (the contents, for `/`); anything else is the copy's new name in
    /// an existing directory.
    pub fn for_dest(dest: &Path, source: Option<OsString>) -> Result<Plan> {
        if dest.is_dir() {
            return Ok(match source {
                Some(_) => Plan {
                    into: dest.to_path_buf(),
                    rename: None,
                },
                None => Plan {
                    into: dest.to_path_buf(),
                    rename: Some(".".into()),
                },
            });
        }
        let name = dest
            .file_name()
            .ok_or_else(|| anyhow!("{}: not a name to copy to", dest.display()))?;
        let parent = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !parent.is_dir() {
            bail!("{}: no such directory", parent.display());
        }
        Ok(Plan {
            into: parent,
            rename: Some(name.to_os_string()),
        })
    }

    /// The host path of entry `name`, checked: no absolute name, no `..`,
    /// the top entry renamed; None for the archive's `.`.
    fn target(&self, name: &Path, top: &mut Option<OsString>) -> Result<Option<PathBuf>> {
        let shown = name.display();
        let mut parts: Vec<&OsStr> = Vec::new();
        for c in name.components() {
            match c {
                Component::Normal(p) => parts.push(p),
                Component::CurDir => {}
                Component::RootDir | Component::Prefix(_) => {
                    bail!("archive entry {shown:?} is an absolute path; refusing it")
                }
                Component::ParentDir => {
                    bail!("archive entry {shown:?} has a \"..\" component; refusing it")
                }
            }
        }
        if let Some(new) = &self.rename {
            let first = parts
                .first()
                .map_or(OsString::from("."), |p| p.to_os_string());
            if top.get_or_insert_with(|| first.clone()) != &first {
                bail!("archive entry {shown:?} is not under the archive's top entry");
            }
            if parts.is_empty() {
                parts.push(new);
            } else {
                parts[0] = new;
            }
        }
        let parts: Vec<&OsStr> = parts.into_iter().filter(|p| *p != ".").collect();
        if parts.is_empty() {
            return Ok(None);
        }
        Ok(Some(parts.iter().collect()))
    }

    /// Makes the directories of `rel` below `into` that are missing; a
    /// symlink on the way is refused, never followed.
    fn parents(&self, rel: &Path, shown: &str) -> Result<()> {
        let mut at = self.into.clone();
        let Some(parent) = rel.parent() else {
            return Ok(());
        };
        for c in parent.components() {
            at.push(c);
            match fs::symlink_metadata(&at) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => bail!(
                    "archive entry {shown:?}: {} is a symlink; not following it",
                    at.display()
                ),
                Ok(_) => bail!(
                    "archive entry {shown:?}: {} is not a directory",
                    at.display()
                ),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&at).with_context(|| format!("creating {}", at.display()))?;
                }
                Err(e) => return Err(e).with_context(|| format!("{}", at.display())),
            }
        }
        Ok(())
    }

    /// Extracts the archive read from `r`.
    pub fn extract<R: Read>(&self, r: R) -> Result<()> {
        let mut archive = tar::Archive::new(r);
        let mut top = None;
        // Directories get their mode and mtime once their entries are in.
        let mut dirs: Vec<(PathBuf, u32, u64)> = Vec::new();
        for entry in archive.entries().context("reading the archive")? {
            let mut entry = entry.context("reading the archive")?;
            let name = entry
                .path()
                .context("an archive entry's name")?
                .into_owned();
            let shown = name.display().to_string();
            let Some(rel) = self.target(&name, &mut top)? else {
                continue;
            };
            self.parents(&rel, &shown)?;
            let path = self.into.join(&rel);
            let h = entry.header();
            let mode = h.mode().unwrap_or(0o644) & 0o1777;
            let mtime = h.mtime().unwrap_or(0);
            match h.entry_type() {
                tar::EntryType::Directory => {
                    match fs::symlink_metadata(&path) {
                        Ok(m) if m.is_dir() => {}
                        Ok(_) => bail!("archive entry {shown:?}: {} is in the way", path.display()),
                        Err(_) => fs::create_dir(&path)
                            .with_context(|| format!("creating {}", path.display()))?,
                    }
                    dirs.push((path, mode, mtime));
                }
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    replace(&path, &shown)?;
                    let mut f = OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .custom_flags(libc::O_NOFOLLOW)
                        .open(&path)
                        .with_context(|| format!("creating {}", path.display()))?;
                    io::copy(&mut entry, &mut f)
                        .with_context(|| format!("writing {}", path.display()))?;
                    f.set_permissions(fs::Permissions::from_mode(mode))?;
                    drop(f);
                    set_mtime(&path, mtime)?;
                }
                tar::EntryType::Symlink => {
                    let target = entry
                        .link_name()
                        .context("a symlink's target")?
                        .ok_or_else(|| anyhow!("archive entry {shown:?}: a symlink without a target"))?
                        .into_owned();
                    replace(&path, &shown)?;
                    std::os::unix::fs::symlink(&target, &path)
                        .with_context(|| format!("creating {}", path.display()))?;
                    set_mtime(&path, mtime)?;
                }
                other => bail!(
                    "archive entry {shown:?} is a {}; only files, directories and symlinks are copied",
                    kind_name(other)
                ),
            }
        }
        for (path, mode, mtime) in dirs.into_iter().rev() {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                .with_context(|| format!("{}", path.display()))?;
            set_mtime(&path, mtime)?;
        }
        Ok(())
    }
}

fn kind_name(t: tar::EntryType) -> &'static str {
    match t {
        tar::EntryType::Link => "hard link",
        tar::EntryType::Char => "character device",
        tar::EntryType::Block => "block device",
        tar::EntryType::Fifo => "fifo",
        _ => "entry of another type",
    }
}

/// Removes what is at `path` (not a directory) for a new file or symlink.
fn replace(path: &Path, shown: &str) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => bail!("archive entry {shown:?}: {} is a directory", path.display()),
        Ok(_) => fs::remove_file(path).with_context(|| format!("replacing {}", path.display())),
        Err(_) => Ok(()),
    }
}

fn set_mtime(path: &Path, mtime: u64) -> Result<()> {
    let t = TimeSpec::new(mtime as i64, 0);
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &t,
        &t,
        UtimensatFlags::NoFollowSymlink,
    )
    .with_context(|| format!("setting {}'s mtime", path.display()))
}
