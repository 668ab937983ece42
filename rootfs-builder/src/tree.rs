//! Copies an app's root into the archive, from a host directory or a tar
//! archive (optionally gzip-compressed), keeping modes, owners, symlinks and
//! device nodes as they are.

use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use crate::archive::{Archive, ArchiveError, Data, Entry, Node};

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: file names must be UTF-8", path.display())]
    NotUtf8 { path: PathBuf },
    #[error("{}: entry {entry:?}: {why}", archive.display())]
    TarEntry {
        archive: PathBuf,
        entry: String,
        why: String,
    },
    #[error(transparent)]
    Archive(#[from] ArchiveError),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> TreeError + '_ {
    move |source| TreeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Adds `src` (a directory, or a tar file) under `prefix`. Returns the
/// number of entries added.
pub fn add_root(archive: &mut Archive, src: &Path, prefix: &str) -> Result<usize, TreeError> {
    let meta = fs::metadata(src).map_err(io_err(src))?;
    if meta.is_dir() {
        archive.add(prefix, entry_for(Node::Dir, &meta))?;
        add_dir(archive, src, prefix).map(|n| n + 1)
    } else {
        archive.add(prefix, Entry::dir(0o755))?;
        add_tar(archive, src, prefix).map(|n| n + 1)
    }
}

fn entry_for(node: Node, meta: &fs::Metadata) -> Entry {
    Entry {
        node,
        perm: meta.permissions().mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
    }
}

/// Adds the contents of host directory `dir` under `prefix`, recursively,
/// without following symlinks. Sockets are skipped (they cannot be copied).
pub fn add_dir(archive: &mut Archive, dir: &Path, prefix: &str) -> Result<usize, TreeError> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .map_err(io_err(dir))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(io_err(dir))?;
    names.sort();
    let mut count = 0;
    for name in names {
        let path = dir.join(&name);
        let Some(name) = name.to_str() else {
            return Err(TreeError::NotUtf8 { path });
        };
        let at = format!("{prefix}/{name}");
        let meta = fs::symlink_metadata(&path).map_err(io_err(&path))?;
        let ft = meta.file_type();
        let node = if ft.is_dir() {
            Node::Dir
        } else if ft.is_file() {
            Node::File(Data::HostFile {
                path: path.clone(),
                len: meta.len(),
            })
        } else if ft.is_symlink() {
            let target = fs::read_link(&path).map_err(io_err(&path))?;
            let target = target
                .into_os_string()
                .into_string()
                .map_err(|_| TreeError::NotUtf8 { path: path.clone() })?;
            Node::Symlink(target)
        } else if ft.is_char_device() {
            let (major, minor) = split_dev(meta.rdev());
            Node::CharDev { major, minor }
        } else if ft.is_block_device() {
            let (major, minor) = split_dev(meta.rdev());
            Node::BlockDev { major, minor }
        } else if ft.is_fifo() {
            Node::Fifo
        } else {
            continue;
        };
        let is_dir = node == Node::Dir;
        archive.add(&at, entry_for(node, &meta))?;
        count += 1;
        if is_dir {
            count += add_dir(archive, &path, &at)?;
        }
    }
    Ok(count)
}

/// glibc's `major()`/`minor()` for a 64-bit `dev_t`.
fn split_dev(dev: u64) -> (u32, u32) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major as u32, minor as u32)
}

/// Opens a tar archive, gzip-compressed or not.
fn open_tar(tar_path: &Path) -> Result<tar::Archive<Box<dyn Read>>, TreeError> {
    let mut file = BufReader::new(File::open(tar_path).map_err(io_err(tar_path))?);
    let mut magic = [0u8; 2];
    let n = file.read(&mut magic).map_err(io_err(tar_path))?;
    let file = BufReader::new(File::open(tar_path).map_err(io_err(tar_path))?);
    let reader: Box<dyn Read> = if n == 2 && magic == [0x1f, 0x8b] {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    Ok(tar::Archive::new(reader))
}

/// Adds the entries of a tar archive under `prefix`. Absolute entry names
/// are taken as relative to the root; a name with `..` is refused, so an
/// archive cannot place files outside the app's root.
pub fn add_tar(archive: &mut Archive, tar_path: &Path, prefix: &str) -> Result<usize, TreeError> {
    let mut tar = open_tar(tar_path)?;
    let mut count = 0;
    for item in tar.entries().map_err(io_err(tar_path))? {
        let mut item = item.map_err(io_err(tar_path))?;
        let raw = item.path().map_err(io_err(tar_path))?.into_owned();
        let entry_err = |why: String| TreeError::TarEntry {
            archive: tar_path.to_path_buf(),
            entry: raw.display().to_string(),
            why,
        };
        let Some(rel) = relative_entry_path(&raw).map_err(entry_err)? else {
            continue; // the archive's own root, "./"
        };
        let header = item.header();
        let mode = header.mode().map_err(|e| entry_err(e.to_string()))?;
        let uid = header.uid().map_err(|e| entry_err(e.to_string()))? as u32;
        let gid = header.gid().map_err(|e| entry_err(e.to_string()))? as u32;
        let Some(node) = tar_node(archive, prefix, &mut item).map_err(entry_err)? else {
            continue; // PAX and GNU metadata are applied by the tar reader
        };
        archive.add(
            &format!("{prefix}/{rel}"),
            Entry {
                node,
                perm: mode & 0o7777,
                uid,
                gid,
            },
        )?;
        count += 1;
    }
    Ok(count)
}

/// What a tar entry becomes in the archive; None for entries that carry
/// only metadata.
fn tar_node<R: Read>(
    archive: &Archive,
    prefix: &str,
    item: &mut tar::Entry<'_, R>,
) -> Result<Option<Node>, String> {
    let header = item.header();
    let dev = |h: &tar::Header| {
        let major = h.device_major().ok().flatten().unwrap_or(0);
        let minor = h.device_minor().ok().flatten().unwrap_or(0);
        (major, minor)
    };
    Ok(Some(match header.entry_type() {
        tar::EntryType::Directory => Node::Dir,
        tar::EntryType::Regular | tar::EntryType::Continuous => {
            let mut data = Vec::with_capacity(item.size() as usize);
            item.read_to_end(&mut data).map_err(|e| e.to_string())?;
            Node::File(Data::Bytes(data))
        }
        tar::EntryType::Symlink => {
            let target = item
                .link_name()
                .map_err(|e| e.to_string())?
                .ok_or("symlink without a target")?;
            let target = target.to_str().ok_or("link target is not UTF-8")?;
            Node::Symlink(target.to_string())
        }
        tar::EntryType::Link => hard_link(archive, prefix, item)?,
        tar::EntryType::Char => {
            let (major, minor) = dev(header);
            Node::CharDev { major, minor }
        }
        tar::EntryType::Block => {
            let (major, minor) = dev(header);
            Node::BlockDev { major, minor }
        }
        tar::EntryType::Fifo => Node::Fifo,
        _ => return Ok(None),
    }))
}

/// A hard link: the initramfs gets a copy of the target, which must be an
/// earlier file of the archive.
fn hard_link<R: Read>(
    archive: &Archive,
    prefix: &str,
    item: &tar::Entry<'_, R>,
) -> Result<Node, String> {
    let target = item
        .link_name()
        .map_err(|e| e.to_string())?
        .ok_or("hard link without a target")?;
    let target = relative_entry_path(&target)?.ok_or("hard link to the root")?;
    match archive.get(&format!("{prefix}/{target}")) {
        Some(
            e @ Entry {
                node: Node::File(_),
                ..
            },
        ) => Ok(e.node.clone()),
        _ => Err(format!(
            "hard link to {target:?}, which is not an earlier file"
        )),
    }
}

/// The entry's path relative to the root, or None for the root itself.
fn relative_entry_path(path: &Path) -> Result<Option<String>, String> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(
                p.to_str()
                    .ok_or_else(|| "the name is not UTF-8".to_string())?
                    .to_string(),
            ),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                return Err("the name contains \"..\", which could escape the app's root".into())
            }
            Component::Prefix(_) => return Err("not a Unix path".into()),
        }
    }
    Ok((!parts.is_empty()).then(|| parts.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::read_all;
    use std::os::unix::fs::symlink;

    fn listing(a: &Archive) -> Vec<(String, u32, Vec<u8>)> {
        read_all(&a.write(Vec::new()).unwrap()[..])
            .unwrap()
            .into_iter()
            .map(|e| (e.path, e.mode, e.data))
            .collect()
    }

    #[test]
    fn directory_import_keeps_symlinks_and_modes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::write(root.join("bin/busybox"), b"ELF").unwrap();
        fs::set_permissions(root.join("bin/busybox"), fs::Permissions::from_mode(0o755)).unwrap();
        symlink("busybox", root.join("bin/sh")).unwrap();
        symlink("/etc/passwd", root.join("escape")).unwrap();
        let mut a = Archive::new();
        let n = add_root(&mut a, root, "opt/stage2/a/rootfs").unwrap();
        assert_eq!(n, 5);
        let l = listing(&a);
        let get = |p: &str| l.iter().find(|e| e.0 == p).cloned().unwrap();
        assert_eq!(get("opt/stage2/a/rootfs/bin/busybox").1, 0o100755);
        assert_eq!(get("opt/stage2/a/rootfs/bin/busybox").2, b"ELF");
        assert_eq!(get("opt/stage2/a/rootfs/bin/sh").2, b"busybox");
        // A symlink is copied as a link, never followed on the host.
        assert_eq!(get("opt/stage2/a/rootfs/escape").2, b"/etc/passwd");
        assert_eq!(get("opt/stage2/a/rootfs/escape").1 & 0o170000, 0o120000);
    }

    fn tar_with(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(1000);
        h.set_gid(1000);
        h
    }

    #[test]
    fn tar_import_handles_every_kind_and_gzip() {
        let bytes = tar_with(|b| {
            b.append_data(
                &mut header(tar::EntryType::Directory, 0, 0o755),
                "./",
                &[][..],
            )
            .unwrap();
            b.append_data(
                &mut header(tar::EntryType::Regular, 2, 0o644),
                "./etc/motd",
                &b"hi"[..],
            )
            .unwrap();
            let mut h = header(tar::EntryType::Symlink, 0, 0o777);
            b.append_link(&mut h, "bin/sh", "busybox").unwrap();
            let mut h = header(tar::EntryType::Link, 0, 0o644);
            b.append_link(&mut h, "etc/motd2", "./etc/motd").unwrap();
        });
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("root.tar");
        fs::write(&plain, &bytes).unwrap();
        let gz = dir.path().join("root.tar.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, &bytes).unwrap();
        fs::write(&gz, enc.finish().unwrap()).unwrap();

        for path in [&plain, &gz] {
            let mut a = Archive::new();
            add_root(&mut a, path, "r").unwrap();
            let l = listing(&a);
            let get = |p: &str| l.iter().find(|e| e.0 == p).cloned().unwrap();
            assert_eq!(get("r/etc/motd").2, b"hi");
            assert_eq!(get("r/etc/motd2").2, b"hi");
            assert_eq!(get("r/bin/sh").2, b"busybox");
            let motd = a.get("r/etc/motd").unwrap();
            assert_eq!((motd.uid, motd.gid, motd.perm), (1000, 1000, 0o644));
        }
    }

    #[test]
    fn tar_entries_cannot_escape_the_root() {
        let mut h = header(tar::EntryType::Regular, 1, 0o644);
        // tar::Builder refuses "..", so write the name into the header raw.
        let name = b"../../etc/shadow";
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_cksum();
        let mut bytes = h.as_bytes().to_vec();
        bytes.extend_from_slice(&[b'x'; 512]);
        bytes.extend_from_slice(&[0u8; 1024]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("evil.tar");
        fs::write(&path, &bytes).unwrap();
        let e = add_root(&mut Archive::new(), &path, "r")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("../../etc/shadow") && e.contains("escape"),
            "{e}"
        );
    }

    #[test]
    fn dev_numbers_split_like_glibc() {
        assert_eq!(split_dev(0x0501), (5, 1));
        let makedev = |major: u64, minor: u64| {
            ((major & 0xffff_f000) << 32)
                | ((major & 0xfff) << 8)
                | ((minor & 0xffff_ff00) << 12)
                | (minor & 0xff)
        };
        assert_eq!(split_dev(makedev(259, 1)), (259, 1));
        assert_eq!(split_dev(makedev(4100, 300)), (4100, 300));
    }
}
