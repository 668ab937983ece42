//! An entry's attributes (header fields, overridden by PAX records) and
//! how they are put on the created node: owner before mode (chown clears
//! setuid), never following a symbolic link.

use std::ffi::CString;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;

/// xattrs in PAX records: `SCHILY.xattr.<name>`.
const XATTR_PAX_PREFIX: &str = "SCHILY.xattr.";
/// overlayfs's own xattrs mean nothing through 9p and are not stored.
const OVERLAY_XATTR_PREFIX: &[u8] = b"trusted.overlay.";

/// The attributes of one entry.
#[derive(Debug, Default)]
pub struct Meta {
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Meta {
    /// Reads the header and any PAX records of `entry`.
    pub fn of<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Meta> {
        let h = entry.header();
        let mut meta = Meta {
            mode: h.mode()? & 0o7777,
            uid: h.uid()?,
            gid: h.gid()?,
            mtime: i64::try_from(h.mtime()?).unwrap_or(i64::MAX),
            xattrs: Vec::new(),
        };
        let Some(pax) = entry.pax_extensions()? else {
            return Ok(meta);
        };
        for ext in pax {
            let ext = ext?;
            let Ok(key) = ext.key() else { continue };
            let value = ext.value_bytes();
            let number = || {
                std::str::from_utf8(value)
                    .ok()
                    .map(|v| v.trim().to_string())
            };
            match key {
                "uid" => meta.uid = number().and_then(|v| v.parse().ok()).unwrap_or(meta.uid),
                "gid" => meta.gid = number().and_then(|v| v.parse().ok()).unwrap_or(meta.gid),
                "mtime" => {
                    let whole = number().and_then(|v| v.split('.').next()?.parse().ok());
                    meta.mtime = whole.unwrap_or(meta.mtime);
                }
                _ => {
                    if let Some(name) = key.strip_prefix(XATTR_PAX_PREFIX) {
                        meta.xattrs.push((name.as_bytes().to_vec(), value.to_vec()));
                    }
                }
            }
        }
        Ok(meta)
    }

    /// Puts owner, mode (not on symlinks), xattrs and, unless deferred
    /// (directories get theirs once their content is written), the mtime.
    pub fn apply(&self, path: &Path, symlink: bool, with_mtime: bool) -> io::Result<()> {
        let id = |v: u64| {
            u32::try_from(v).map_err(|_| io::Error::other(format!("id {v} is out of range")))
        };
        std::os::unix::fs::lchown(path, Some(id(self.uid)?), Some(id(self.gid)?))?;
        if !symlink {
            fs::set_permissions(path, fs::Permissions::from_mode(self.mode))?;
        }
        for (name, value) in &self.xattrs {
            if name.starts_with(OVERLAY_XATTR_PREFIX) {
                continue;
            }
            lsetxattr(path, name, value).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("setting xattr {}: {e}", String::from_utf8_lossy(name)),
                )
            })?;
        }
        if with_mtime {
            set_mtime(path, self.mtime)?;
        }
        Ok(())
    }
}

/// Sets atime and mtime of `path` itself (not a symlink's target).
pub fn set_mtime(path: &Path, secs: i64) -> io::Result<()> {
    let t = TimeSpec::new(secs, 0);
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &t,
        &t,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(io::Error::from)
}

fn lsetxattr(path: &Path, name: &[u8], value: &[u8]) -> io::Result<()> {
    let path = CString::new(path.as_os_str().as_bytes())?;
    let name = CString::new(name)?;
    // SAFETY: `path` and `name` are NUL-terminated and live across the call;
    // `value` points to `value.len()` readable bytes; lsetxattr only reads them.
    let rc = unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
