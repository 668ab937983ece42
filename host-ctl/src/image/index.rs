//! `images/index.json`: the images in the store. Written whole and
//! atomically, under an exclusive flock on `images/lock`, so readers never
//! see half an index and writers never lose each other's changes.

use std::fs::{self, File, OpenOptions};
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::error::{ImageError, IoContext};
use super::fsutil;

/// One image in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageRecord {
    /// The manifest's digest (`sha256:<hex>`): the image's identity.
    pub digest: String,
    pub config_digest: String,
    /// Normalised names (`busybox:latest`); may be empty.
    pub names: Vec<String>,
    /// The layers' chain IDs, bottom first; each names a snapshot.
    pub chain_ids: Vec<String>,
    /// Bytes of the uncompressed layers.
    pub size: u64,
    /// RFC 3339: when the image was built (its config), else imported.
    pub created: String,
}

/// The whole index file.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Index {
    pub images: Vec<ImageRecord>,
}

impl Index {
    /// Reads the index; a missing file is an empty store.
    pub fn load(path: &Path) -> Result<Index, ImageError> {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Index::default()),
            Err(e) => return Err(ImageError::io("reading", path, e)),
        };
        serde_json::from_slice(&bytes).map_err(|e| ImageError::json("parsing", path, e))
    }

    /// Writes the index atomically, after flushing the store's file system:
    /// an image in the index never names layers a crash could lose.
    pub fn save(&self, path: &Path) -> Result<(), ImageError> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let d = fs::File::open(dir).map_err(|e| ImageError::io("opening", dir, e))?;
        nix::unistd::syncfs(&d)
            .map_err(|e| ImageError::io("flushing the file system of", dir, e.into()))?;
        let mut bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| ImageError::json("serialising", path, e))?;
        bytes.push(b'\n');
        fsutil::write_atomic(path, &bytes)
    }
}

/// Holds the store's exclusive lock until dropped.
pub struct StoreLock {
    _lock: Flock<File>,
}

impl StoreLock {
    /// Waits for the exclusive lock on `path`.
    pub fn acquire(path: &Path) -> Result<StoreLock, ImageError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .ctx("opening lock file", path)?;
        let lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| ImageError::io("locking", path, errno.into()))?;
        Ok(StoreLock { _lock: lock })
    }
}
