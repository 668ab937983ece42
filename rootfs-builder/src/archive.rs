//! An in-memory table of initramfs entries and its newc cpio writer.
//!
//! Entries are kept sorted by path and written with fixed inode numbers and
//! timestamps, so the same inputs always give the same bytes. Sorting also
//! puts every directory before its contents, as the kernel's unpacker needs.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::PathBuf;

/// `S_IF*` file-type bits of a cpio mode.
const S_IFIFO: u32 = 0o010000;
const S_IFCHR: u32 = 0o020000;
const S_IFDIR: u32 = 0o040000;
const S_IFBLK: u32 = 0o060000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

/// Where a regular file's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    Bytes(Vec<u8>),
    /// Streamed from the host at write time; `len` was read when the file
    /// was added, and a file that changed size since is an error.
    HostFile {
        path: PathBuf,
        len: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir,
    File(Data),
    Symlink(String),
    CharDev { major: u32, minor: u32 },
    BlockDev { major: u32, minor: u32 },
    Fifo,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub node: Node,
    /// Permission bits (including setuid, setgid and sticky).
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
}

impl Entry {
    pub fn dir(perm: u32) -> Self {
        Entry::root_owned(Node::Dir, perm)
    }

    pub fn file(data: Vec<u8>, perm: u32) -> Self {
        Entry::root_owned(Node::File(Data::Bytes(data)), perm)
    }

    /// `/dev/console` (5:1), which the kernel opens for init's stdio before
    /// init runs: every initramfs needs it.
    pub fn console() -> Self {
        Entry::root_owned(Node::CharDev { major: 5, minor: 1 }, 0o600)
    }

    fn root_owned(node: Node, perm: u32) -> Self {
        Entry {
            node,
            perm,
            uid: 0,
            gid: 0,
        }
    }

    fn mode(&self) -> u32 {
        let kind = match self.node {
            Node::Dir => S_IFDIR,
            Node::File(_) => S_IFREG,
            Node::Symlink(_) => S_IFLNK,
            Node::CharDev { .. } => S_IFCHR,
            Node::BlockDev { .. } => S_IFBLK,
            Node::Fifo => S_IFIFO,
        };
        kind | (self.perm & 0o7777)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("invalid archive path {path:?}: {why}")]
    BadPath { path: String, why: &'static str },
    #[error("cannot add {path:?}: its parent {parent:?} is not a directory")]
    ParentNotDir { path: String, parent: String },
    #[error("cannot replace directory {0:?} with a non-directory")]
    ReplacesDir(String),
    #[error("{path:?} is {len} bytes; a newc archive holds at most 4 GiB per file")]
    TooLarge { path: String, len: u64 },
    #[error("{} changed size while the initramfs was written (was {expected} bytes)", path.display())]
    Changed { path: PathBuf, expected: u64 },
    #[error("reading {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("writing the archive: {0}")]
    Write(#[source] io::Error),
}

/// The initramfs contents, keyed by path relative to `/`.
#[derive(Debug, Default, Clone)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

impl Archive {
    pub fn new() -> Self {
        Archive::default()
    }

    /// Adds `entry` at `path` (relative, `/`-separated; a leading `/` is
    /// dropped), creating missing parent directories (0755, root). A later
    /// entry replaces an earlier one, except that a directory is never
    /// replaced by something else.
    pub fn add(&mut self, path: &str, entry: Entry) -> Result<(), ArchiveError> {
        let path = clean(path)?;
        let mut end = 0;
        while let Some(slash) = path[end..].find('/') {
            let parent = &path[..end + slash];
            match self.entries.get(parent) {
                Some(Entry {
                    node: Node::Dir, ..
                }) => {}
                Some(_) => {
                    return Err(ArchiveError::ParentNotDir {
                        path: path.clone(),
                        parent: parent.to_string(),
                    })
                }
                None => {
                    self.entries.insert(parent.to_string(), Entry::dir(0o755));
                }
            }
            end += slash + 1;
        }
        if let Some(old) = self.entries.get(&path) {
            if old.node == Node::Dir && entry.node != Node::Dir {
                return Err(ArchiveError::ReplacesDir(path));
            }
        }
        if let Node::File(Data::HostFile { len, .. }) = &entry.node {
            if *len > u64::from(u32::MAX) {
                return Err(ArchiveError::TooLarge { path, len: *len });
            }
        }
        if let Node::File(Data::Bytes(b)) = &entry.node {
            if b.len() as u64 > u64::from(u32::MAX) {
                let len = b.len() as u64;
                return Err(ArchiveError::TooLarge { path, len });
            }
        }
        self.entries.insert(path, entry);
        Ok(())
    }

    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.entries.get(path.trim_start_matches('/'))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries.iter().map(|(p, e)| (p.as_str(), e))
    }

    /// Writes the archive as newc cpio, ending with the trailer.
    pub fn write<W: Write>(&self, mut w: W) -> Result<W, ArchiveError> {
        for (i, (path, entry)) in self.entries.iter().enumerate() {
            let (major, minor) = match entry.node {
                Node::CharDev { major, minor } | Node::BlockDev { major, minor } => (major, minor),
                _ => (0, 0),
            };
            let header = cpio::newc::Builder::new(path)
                .ino(i as u32 + 1)
                .mode(entry.mode())
                .uid(entry.uid)
                .gid(entry.gid)
                .nlink(if entry.node == Node::Dir { 2 } else { 1 })
                .mtime(0)
                .rdev_major(major)
                .rdev_minor(minor);
            w = match &entry.node {
                Node::File(Data::Bytes(bytes)) => {
                    write_body(header, w, bytes.len() as u32, &mut &bytes[..])?
                }
                Node::File(Data::HostFile { path: host, len }) => {
                    let mut body = header.write(w, *len as u32);
                    copy_host_file(host, *len, &mut body)?;
                    body.finish().map_err(ArchiveError::Write)?
                }
                Node::Symlink(target) => {
                    write_body(header, w, target.len() as u32, &mut target.as_bytes())?
                }
                _ => header.write(w, 0).finish().map_err(ArchiveError::Write)?,
            };
        }
        cpio::newc::trailer(w).map_err(ArchiveError::Write)
    }
}

/// Copies exactly `len` bytes of `path` into `out`, failing if the file is
/// now shorter or longer: the header already promised `len` bytes.
fn copy_host_file(path: &PathBuf, len: u64, out: &mut impl Write) -> Result<(), ArchiveError> {
    let read_err = |source| ArchiveError::Read {
        path: path.clone(),
        source,
    };
    let changed = || ArchiveError::Changed {
        path: path.clone(),
        expected: len,
    };
    let mut file = File::open(path).map_err(read_err)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = len;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = match file.read(&mut buf[..want]) {
            Ok(0) => return Err(changed()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_err(e)),
        };
        out.write_all(&buf[..n]).map_err(ArchiveError::Write)?;
        left -= n as u64;
    }
    match file.read(&mut buf[..1]) {
        Ok(0) => Ok(()),
        Ok(_) => Err(changed()),
        Err(e) => Err(read_err(e)),
    }
}

fn write_body<W: Write>(
    header: cpio::newc::Builder,
    w: W,
    len: u32,
    data: &mut &[u8],
) -> Result<W, ArchiveError> {
    let mut body = header.write(w, len);
    io::copy(data, &mut body).map_err(ArchiveError::Write)?;
    body.finish().map_err(ArchiveError::Write)
}

/// Normalises an archive path: no leading `/`, no empty, `.` or `..` parts.
fn clean(path: &str) -> Result<String, ArchiveError> {
    let bad = |why| ArchiveError::BadPath {
        path: path.to_string(),
        why,
    };
    let trimmed = path.trim_start_matches('/').trim_end_matches('/');
    if trimmed.is_empty() {
        return Err(bad("it names the root"));
    }
    if trimmed.contains('\0') {
        return Err(bad("it contains NUL"));
    }
    let mut out = String::with_capacity(trimmed.len());
    for part in trimmed.split('/') {
        match part {
            "" | "." => continue,
            ".." => return Err(bad("it contains \"..\"")),
            p => {
                if !out.is_empty() {
                    out.push('/');
                }
                out.push_str(p);
            }
        }
    }
    if out.is_empty() {
        return Err(bad("it names the root"));
    }
    Ok(out)
}

/// One entry read back from a newc archive (for listings and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadEntry {
    pub path: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: (u32, u32),
    pub data: Vec<u8>,
}

/// Reads every entry of an uncompressed newc archive.
pub fn read_all<R: Read>(mut r: R) -> io::Result<Vec<ReadEntry>> {
    let mut out = Vec::new();
    loop {
        let mut reader = cpio::newc::Reader::new(r)?;
        let e = reader.entry();
        if e.is_trailer() {
            return Ok(out);
        }
        let mut entry = ReadEntry {
            path: e.name().to_string(),
            mode: e.mode(),
            uid: e.uid(),
            gid: e.gid(),
            rdev: (e.rdev_major(), e.rdev_minor()),
            data: Vec::new(),
        };
        reader.read_to_end(&mut entry.data)?;
        out.push(entry);
        r = reader.finish()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_every_kind_and_creates_parents() {
        let mut a = Archive::new();
        a.add("/init", Entry::file(b"agent".to_vec(), 0o755))
            .unwrap();
        a.add(
            "dev/console",
            Entry::root_owned(Node::CharDev { major: 5, minor: 1 }, 0o600),
        )
        .unwrap();
        a.add(
            "opt/stage2/web/rootfs/bin/sh",
            Entry {
                node: Node::Symlink("busybox".into()),
                perm: 0o777,
                uid: 0,
                gid: 0,
            },
        )
        .unwrap();
        a.add(
            "opt/stage2/web/rootfs/home/u/f",
            Entry {
                node: Node::File(Data::Bytes(b"hi".to_vec())),
                perm: 0o4750,
                uid: 1000,
                gid: 100,
            },
        )
        .unwrap();
        a.add("run/fifo", Entry::root_owned(Node::Fifo, 0o644))
            .unwrap();

        let bytes = a.write(Vec::new()).unwrap();
        let back = read_all(&bytes[..]).unwrap();
        let names: Vec<&str> = back.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            names,
            [
                "dev",
                "dev/console",
                "init",
                "opt",
                "opt/stage2",
                "opt/stage2/web",
                "opt/stage2/web/rootfs",
                "opt/stage2/web/rootfs/bin",
                "opt/stage2/web/rootfs/bin/sh",
                "opt/stage2/web/rootfs/home",
                "opt/stage2/web/rootfs/home/u",
                "opt/stage2/web/rootfs/home/u/f",
                "run",
                "run/fifo"
            ]
        );
        let get = |p: &str| back.iter().find(|e| e.path == p).unwrap();
        assert_eq!(get("init").data, b"agent");
        assert_eq!(get("init").mode, S_IFREG | 0o755);
        assert_eq!(get("dev/console").mode, S_IFCHR | 0o600);
        assert_eq!(get("dev/console").rdev, (5, 1));
        assert_eq!(get("opt/stage2/web/rootfs/bin/sh").data, b"busybox");
        assert_eq!(get("opt/stage2/web/rootfs/bin/sh").mode, S_IFLNK | 0o777);
        let f = get("opt/stage2/web/rootfs/home/u/f");
        assert_eq!((f.mode, f.uid, f.gid), (S_IFREG | 0o4750, 1000, 100));
        assert_eq!(get("opt").mode, S_IFDIR | 0o755);
        assert_eq!(get("run/fifo").mode, S_IFIFO | 0o644);
    }

    #[test]
    fn same_entries_give_same_bytes_whatever_the_order() {
        let mut a = Archive::new();
        a.add("b/x", Entry::file(b"1".to_vec(), 0o644)).unwrap();
        a.add("a", Entry::file(b"2".to_vec(), 0o644)).unwrap();
        let mut b = Archive::new();
        b.add("a", Entry::file(b"2".to_vec(), 0o644)).unwrap();
        b.add("b/x", Entry::file(b"1".to_vec(), 0o644)).unwrap();
        assert_eq!(a.write(Vec::new()).unwrap(), b.write(Vec::new()).unwrap());
    }

    #[test]
    fn host_files_stream_and_a_size_change_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"hello").unwrap();
        let mut a = Archive::new();
        let host = |len| {
            Entry::root_owned(
                Node::File(Data::HostFile {
                    path: p.clone(),
                    len,
                }),
                0o644,
            )
        };
        a.add("f", host(5)).unwrap();
        let back = read_all(&a.write(Vec::new()).unwrap()[..]).unwrap();
        assert_eq!(back[0].data, b"hello");

        a.add("f", host(3)).unwrap();
        assert!(matches!(
            a.write(Vec::new()),
            Err(ArchiveError::Changed { .. })
        ));
        a.add("f", host(9)).unwrap();
        assert!(matches!(
            a.write(Vec::new()),
            Err(ArchiveError::Changed { .. })
        ));
    }

    #[test]
    fn bad_paths_and_conflicts_are_refused() {
        let mut a = Archive::new();
        assert!(matches!(
            a.add("/", Entry::dir(0o755)),
            Err(ArchiveError::BadPath { .. })
        ));
        assert!(matches!(
            a.add("a/../b", Entry::dir(0o755)),
            Err(ArchiveError::BadPath { .. })
        ));
        a.add("f", Entry::file(vec![], 0o644)).unwrap();
        assert!(matches!(
            a.add("f/g", Entry::file(vec![], 0o644)),
            Err(ArchiveError::ParentNotDir { .. })
        ));
        a.add("d/e", Entry::file(vec![], 0o644)).unwrap();
        assert!(matches!(
            a.add("d", Entry::file(vec![], 0o644)),
            Err(ArchiveError::ReplacesDir(_))
        ));
        // `.` parts and doubled slashes are harmless and normalised away.
        a.add("./x//y/", Entry::file(vec![], 0o644)).unwrap();
        assert!(a.get("x/y").is_some());
    }
}
