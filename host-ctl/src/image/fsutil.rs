//! File-system helpers: atomic writes (a crash leaves the old file or the
//! new one, never half of one) and sizes of trees being removed.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::error::{ImageError, IoContext};

/// Writes `bytes` to `path` through a temporary file in the same directory,
/// fsyncs it, renames it into place and fsyncs the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    let dir = path
        .parent()
        .ok_or_else(|| ImageError::Invalid(format!("{} has no parent", path.display())))?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .ctx("creating", &tmp)?;
        f.write_all(bytes).ctx("writing", &tmp)?;
        f.sync_all().ctx("syncing", &tmp)?;
        fs::rename(&tmp, path).ctx("renaming into place", path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Makes a rename or creation in `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<(), ImageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx("syncing directory", dir)
}

/// Removes a file or a whole tree; a missing path is not an error.
pub fn remove_any(path: &Path) -> Result<(), ImageError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ImageError::io("inspecting", path, e)),
    };
    if meta.is_dir() {
        fs::remove_dir_all(path).ctx("removing", path)
    } else {
        fs::remove_file(path).ctx("removing", path)
    }
}

/// Counts the bytes that removing a set of trees frees: a file's size counts
/// once, and only when all its hard links are inside the set.
#[derive(Default)]
pub struct FreedBytes {
    inodes: HashMap<(u64, u64), (u64, u64, u64)>,
}

impl FreedBytes {
    /// Adds every file under `path` (or `path` itself).
    pub fn add(&mut self, path: &Path) -> Result<(), ImageError> {
        let meta = match fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(ImageError::io("inspecting", path, e)),
        };
        let entry =
            self.inodes
                .entry((meta.dev(), meta.ino()))
                .or_insert((meta.len(), meta.nlink(), 0));
        entry.2 += 1;
        if meta.is_dir() {
            for child in fs::read_dir(path).ctx("listing", path)? {
                let child = child.ctx("listing", path)?;
                self.add(&child.path())?;
            }
        }
        Ok(())
    }

    pub fn total(&self) -> u64 {
        self.inodes
            .values()
            .filter(|(_, nlink, seen)| seen >= nlink || *nlink == 0)
            .map(|(size, _, _)| size)
            .sum()
    }
}
