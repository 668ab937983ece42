//! `host-ctl cp` in the guest: a tar archive of a path of an app's root
//! (copy out), and the extraction of one into a directory of it (copy in).
//!
//! The path named is resolved with `openat2(RESOLVE_IN_ROOT)` (see
//! `resolve`): a symlink on the way, absolute or `../../..`, resolves
//! inside the app's root, never out of it. Below it everything is done
//! relative to directory descriptors, one name at a time, with
//! `O_NOFOLLOW`: symlinks in the tree are archived as symlinks, and an
//! archive's entry is never created through one (an archive holding
//! `dir -> /` then `dir/file` is refused at `dir/file`). Entry names that
//! are absolute or hold `..` are refused; hard links, devices and fifos
//! are not copied in. Files copied in keep the archive's mode (setuid and
//! setgid included), owner and mtime, as `docker cp` does.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, AtFlags, OFlag};
use nix::sys::stat::{
    fchmod, fstat, fstatat, futimens, mkdirat, utimensat, FileStat, Mode, SFlag, UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};

use super::resolve::open_in_root;
use super::tar::{self, Entry, Kind};
use super::StorageError;

/// The deepest directory tree copied out.
const MAX_DEPTH: usize = 256;
/// Directories whose mtime is set again once their entries are in: each
/// holds a descriptor until the end.
const MAX_DIR_TIMES: usize = 256;

fn sys(what: &[u8], errno: Errno) -> StorageError {
    StorageError::sys(String::from_utf8_lossy(what), errno)
}

fn kind_of(st: &FileStat) -> Option<Kind> {
    let fmt = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    Some(match fmt {
        SFlag::S_IFREG => Kind::File,
        SFlag::S_IFDIR => Kind::Dir,
        SFlag::S_IFLNK => Kind::Symlink,
        SFlag::S_IFCHR => Kind::CharDevice,
        SFlag::S_IFBLK => Kind::BlockDevice,
        SFlag::S_IFIFO => Kind::Fifo,
        _ => return None, // sockets are not archived
    })
}

fn header(name: Vec<u8>, st: &FileStat, kind: Kind) -> Entry {
    let rdev = st.st_rdev;
    Entry {
        name,
        kind,
        mode: st.st_mode & 0o7777,
        uid: u64::from(st.st_uid),
        gid: u64::from(st.st_gid),
        size: if kind == Kind::File {
            st.st_size.max(0) as u64
        } else {
            0
        },
        mtime: st.st_mtime.max(0) as u64,
        link: Vec::new(),
        dev: (libc::major(rdev), libc::minor(rdev)),
    }
}

/// Writes a tar archive of `path` (resolved inside `root`) to `w`; its
/// entries are named after the path's last component (`.` for `/`).
pub fn copy_out<W: Write>(root: &OwnedFd, path: &str, w: &mut W) -> Result<(), StorageError> {
    let top = open_in_root(root, path, OFlag::O_PATH | OFlag::O_NOFOLLOW)?;
    let st = fstat(&top).map_err(|e| StorageError::sys(path, e))?;
    let name = path
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
        .unwrap_or(".");
    let name = name.as_bytes().to_vec();
    match kind_of(&st) {
        Some(Kind::Dir) => {
            let dir = openat(&top, ".", dir_flags(), Mode::empty())
                .map_err(|e| StorageError::sys(path, e))?;
            archive_dir(w, dir, &st, name, 0)?;
        }
        Some(Kind::File) => {
            let f = open_in_root(
                root,
                path,
                OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK,
            )?;
            let st = fstat(&f).map_err(|e| StorageError::sys(path, e))?;
            archive_file(w, f, &st, name)?;
        }
        Some(Kind::Symlink) => {
            let target = readlinkat(&top, "").map_err(|e| StorageError::sys(path, e))?;
            archive_symlink(w, &st, name, target)?;
        }
        Some(kind) => tar::write_header(w, &header(name, &st, kind))?,
        None => {
            return Err(StorageError::NotCopied {
                path: path.into(),
                what: "socket",
            })
        }
    }
    tar::finish(w)
}

fn dir_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

fn archive_file<W: Write>(
    w: &mut W,
    f: OwnedFd,
    st: &FileStat,
    name: Vec<u8>,
) -> Result<(), StorageError> {
    let e = header(name, st, Kind::File);
    tar::write_header(w, &e)?;
    tar::write_data(w, &mut File::from(f), e.size)
}

fn archive_symlink<W: Write>(
    w: &mut W,
    st: &FileStat,
    name: Vec<u8>,
    target: OsString,
) -> Result<(), StorageError> {
    let mut e = header(name, st, Kind::Symlink);
    e.link = target.into_vec();
    tar::write_header(w, &e)
}

/// Archives directory `dir` as `name`, then its entries, depth first.
fn archive_dir<W: Write>(
    w: &mut W,
    dir: OwnedFd,
    st: &FileStat,
    name: Vec<u8>,
    depth: usize,
) -> Result<(), StorageError> {
    if depth > MAX_DEPTH {
        return Err(StorageError::TooDeep(
            String::from_utf8_lossy(&name).into_owned(),
        ));
    }
    let mut dir_name = name.clone();
    dir_name.push(b'/');
    tar::write_header(w, &header(dir_name, st, Kind::Dir))?;
    let handle = nix::unistd::dup(&dir).map_err(|e| sys(&name, e))?;
    let mut listing = Dir::from_fd(handle).map_err(|e| sys(&name, e))?;
    let mut names: Vec<OsString> = Vec::new();
    for ent in listing.iter() {
        let ent = ent.map_err(|e| sys(&name, e))?;
        let n = ent.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(OsStr::from_bytes(n).to_os_string());
        }
    }
    names.sort();
    for child in names {
        let mut path = name.clone();
        path.push(b'/');
        path.extend_from_slice(child.as_bytes());
        let st = match fstatat(&dir, child.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => continue, // gone meanwhile
            Err(e) => return Err(sys(&path, e)),
        };
        match kind_of(&st) {
            Some(Kind::Dir) => {
                let sub = openat(&dir, child.as_os_str(), dir_flags(), Mode::empty())
                    .map_err(|e| sys(&path, e))?;
                let st = fstat(&sub).map_err(|e| sys(&path, e))?;
                archive_dir(w, sub, &st, path, depth + 1)?;
            }
            Some(Kind::File) => {
                let flags =
                    OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
                let f = openat(&dir, child.as_os_str(), flags, Mode::empty())
                    .map_err(|e| sys(&path, e))?;
                let st = fstat(&f).map_err(|e| sys(&path, e))?;
                archive_file(w, f, &st, path)?;
            }
            Some(Kind::Symlink) => {
                let target = readlinkat(&dir, child.as_os_str()).map_err(|e| sys(&path, e))?;
                archive_symlink(w, &st, path, target)?;
            }
            Some(kind) => tar::write_header(w, &header(path, &st, kind))?,
            None => {}
        }
    }
    Ok(())
}

/// The components of an entry's name, refused when it is absolute or
/// goes up; `.` and empty components are dropped.
fn components(name: &[u8]) -> Result<Vec<&[u8]>, StorageError> {
    let shown = || String::from_utf8_lossy(name).into_owned();
    if name.first() == Some(&b'/') {
        return Err(StorageError::BadEntryName {
            name: shown(),
            why: "is an absolute path",
        });
    }
    let parts: Vec<&[u8]> = name
        .split(|b| *b == b'/')
        .filter(|p| !p.is_empty() && *p != b".")
        .collect();
    if parts.iter().any(|p| *p == b"..") {
        return Err(StorageError::BadEntryName {
            name: shown(),
            why: "has a \"..\" component",
        });
    }
    Ok(parts)
}

/// Where an archive goes: an existing directory, or a new name in one.
fn destination(root: &OwnedFd, path: &str) -> Result<(OwnedFd, Option<Vec<u8>>), StorageError> {
    // The path named may end in a symlink: it resolves inside the root.
    let followed = OFlag::O_RDONLY | OFlag::O_DIRECTORY;
    match open_in_root(root, path, followed) {
        Err(StorageError::Sys(crate::error::SysError {
            errno: Errno::ENOENT,
            ..
        })) => {}
        r => return r.map(|d| (d, None)),
    }
    let trimmed = path.trim_end_matches('/');
    let (parent, name) = trimmed.rsplit_once('/').unwrap_or(("", trimmed));
    if name.is_empty() || name == "." || name == ".." {
        return Err(StorageError::sys(path, Errno::ENOENT));
    }
    let parent = if parent.is_empty() { "/" } else { parent };
    let dir = open_in_root(root, parent, followed)?;
    // A name that is there but did not resolve is a symlink to nothing in
    // the root: replacing it would surprise, following it is refused.
    match fstatat(&dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Err(Errno::ENOENT) => Ok((dir, Some(name.as_bytes().to_vec()))),
        Ok(_) => Err(StorageError::DanglingSymlink { path: path.into() }),
        Err(errno) => Err(StorageError::sys(path, errno)),
    }
}

/// Extracts the tar archive read from `r` into the directory `path`
/// (resolved inside `root`); when `path` does not exist but its parent
/// does, the archive's one top entry is extracted as `path` (as `docker
/// cp` does: the copy gets the new name).
pub fn copy_in<R: Read>(root: &OwnedFd, path: &str, r: R) -> Result<(), StorageError> {
    let (dest, rename) = destination(root, path)?;
    let mut reader = tar::Reader::new(r);
    let mut dir_times: Vec<(OwnedFd, u64)> = Vec::new();
    let mut top: Option<Vec<u8>> = None;
    while let Some(e) = reader.next_entry()? {
        let shown = String::from_utf8_lossy(&e.name).into_owned();
        let mut parts = components(&e.name)?;
        if let Some(new) = &rename {
            // Every entry must be under the same top entry, renamed.
            let first = parts.first().copied().unwrap_or(b".");
            if top.get_or_insert_with(|| first.to_vec()) != first {
                return Err(StorageError::BadEntryName {
                    name: shown,
                    why: "is a second top entry for a new name",
                });
            }
            match parts.first_mut() {
                Some(p) => *p = new.as_slice(),
                None => parts.push(new.as_slice()),
            }
        }
        let Some((last, parents)) = parts.split_last() else {
            continue; // "." itself: the destination, which exists
        };
        let parent = walk(&dest, parents, &shown)?;
        match e.kind {
            Kind::Dir => {
                let d = make_dir(&parent, last, &e, &shown)?;
                if dir_times.len() < MAX_DIR_TIMES {
                    dir_times.push((d, e.mtime));
                }
            }
            Kind::File => {
                let f = create(&parent, last, &shown, |name| {
                    openat(
                        &parent,
                        name,
                        OFlag::O_WRONLY
                            | OFlag::O_CREAT
                            | OFlag::O_EXCL
                            | OFlag::O_NOFOLLOW
                            | OFlag::O_CLOEXEC,
                        Mode::from_bits_truncate(0o600),
                    )
                })?;
                let mut file = File::from(f);
                reader.data_to(&mut file)?;
                let f = OwnedFd::from(file);
                set_attributes(&f, &e, &shown)?;
            }
            Kind::Symlink => {
                create(&parent, last, &shown, |name| {
                    symlinkat(e.link.as_slice(), &parent, name)
                })?;
                let name = OsStr::from_bytes(last);
                fchownat(
                    &parent,
                    name,
                    Some(Uid::from_raw(e.uid as u32)),
                    Some(Gid::from_raw(e.gid as u32)),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(|errno| StorageError::sys(&shown, errno))?;
                let t = TimeSpec::new(e.mtime as i64, 0);
                utimensat(&parent, name, &t, &t, UtimensatFlags::NoFollowSymlink)
                    .map_err(|errno| StorageError::sys(&shown, errno))?;
            }
            kind => {
                return Err(StorageError::NotCopied {
                    path: shown,
                    what: kind.describe(),
                });
            }
        }
    }
    for (d, mtime) in dir_times {
        let t = TimeSpec::new(mtime as i64, 0);
        futimens(&d, &t, &t)
            .map_err(|errno| StorageError::sys("setting a directory's mtime", errno))?;
    }
    Ok(())
}

/// Opens the directories `parts` below `dest` one at a time, creating
/// those missing, never following a symlink.
fn walk(dest: &OwnedFd, parts: &[&[u8]], shown: &str) -> Result<OwnedFd, StorageError> {
    let mut cur = nix::unistd::dup(dest).map_err(|errno| StorageError::sys(shown, errno))?;
    for part in parts {
        let name = OsStr::from_bytes(part);
        let next = match openat(&cur, name, dir_flags(), Mode::empty()) {
            Err(Errno::ENOENT) => {
                match mkdirat(&cur, name, Mode::from_bits_truncate(0o755)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(errno) => return Err(StorageError::sys(shown, errno)),
                }
                openat(&cur, name, dir_flags(), Mode::empty())
            }
            r => r,
        };
        cur = next.map_err(|errno| match errno {
            Errno::ELOOP | Errno::ENOTDIR => StorageError::NotDirInArchive {
                name: shown.to_string(),
                part: String::from_utf8_lossy(part).into_owned(),
            },
            errno => StorageError::sys(shown, errno),
        })?;
    }
    Ok(cur)
}

/// Creates `name` in `parent` with `make`; what was there (not a
/// directory) is replaced, never followed.
fn create<T>(
    parent: &OwnedFd,
    name: &[u8],
    shown: &str,
    make: impl Fn(&OsStr) -> Result<T, Errno>,
) -> Result<T, StorageError> {
    let name = OsStr::from_bytes(name);
    match make(name) {
        Err(Errno::EEXIST) => {
            unlinkat(parent, name, UnlinkatFlags::NoRemoveDir).map_err(|errno| match errno {
                Errno::EISDIR => StorageError::IsDirInArchive {
                    name: shown.to_string(),
                },
                errno => StorageError::sys(shown, errno),
            })?;
            make(name).map_err(|errno| StorageError::sys(shown, errno))
        }
        r => r.map_err(|errno| StorageError::sys(shown, errno)),
    }
}

/// Makes (or reuses) directory `name` in `parent`; its descriptor.
fn make_dir(
    parent: &OwnedFd,
    name: &[u8],
    e: &Entry,
    shown: &str,
) -> Result<OwnedFd, StorageError> {
    let name = OsStr::from_bytes(name);
    match mkdirat(parent, name, Mode::from_bits_truncate(0o700)) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(errno) => return Err(StorageError::sys(shown, errno)),
    }
    let d = openat(parent, name, dir_flags(), Mode::empty()).map_err(|errno| match errno {
        Errno::ELOOP | Errno::ENOTDIR => StorageError::NotDirInArchive {
            name: shown.to_string(),
            part: String::from_utf8_lossy(name.as_bytes()).into_owned(),
        },
        errno => StorageError::sys(shown, errno),
    })?;
    set_attributes(&d, e, shown)?;
    Ok(d)
}

/// The archive's owner, then mode (a change of owner clears setuid), then
/// mtime.
fn set_attributes(fd: &OwnedFd, e: &Entry, shown: &str) -> Result<(), StorageError> {
    let err = |errno| StorageError::sys(shown, errno);
    fchown(
        fd.as_fd(),
        Some(Uid::from_raw(e.uid as u32)),
        Some(Gid::from_raw(e.gid as u32)),
    )
    .map_err(err)?;
    fchmod(fd.as_fd(), Mode::from_bits_truncate(e.mode & 0o7777)).map_err(err)?;
    let t = TimeSpec::new(e.mtime as i64, 0);
    futimens(fd.as_fd(), &t, &t).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::resolve::open_root;
    use std::fs;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
    use std::path::Path;

    fn tree() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let base = fs::canonicalize(d.path()).unwrap();
        let root = base.join("root");
        let outside = base.join("outside");
        fs::create_dir_all(root.join("src/sub")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("secret"), "outside").unwrap();
        (d, root, outside)
    }

    fn out(root: &Path, path: &str) -> Result<Vec<u8>, StorageError> {
        let r = open_root(root).unwrap();
        let mut v = Vec::new();
        copy_out(&r, path, &mut v).map(|()| v)
    }

    fn into(root: &Path, path: &str, archive: &[u8]) -> Result<(), StorageError> {
        let r = open_root(root).unwrap();
        copy_in(&r, path, archive)
    }

    fn raw_entry(name: &str, kind: Kind, link: &str, data: &[u8]) -> Vec<u8> {
        let e = Entry {
            name: name.as_bytes().to_vec(),
            kind,
            mode: 0o644,
            uid: nix::unistd::geteuid().as_raw().into(),
            gid: nix::unistd::getegid().as_raw().into(),
            size: data.len() as u64,
            mtime: 1_600_000_000,
            link: link.as_bytes().to_vec(),
            dev: (0, 0),
        };
        let mut v = Vec::new();
        tar::write_header(&mut v, &e).unwrap();
        if kind == Kind::File {
            tar::write_data(&mut v, &mut &data[..], e.size).unwrap();
        }
        v
    }

    fn ended(mut v: Vec<u8>) -> Vec<u8> {
        tar::finish(&mut v).unwrap();
        v
    }

    #[test]
    fn a_tree_round_trips_with_modes_symlinks_and_mtimes() {
        let (_d, root, _) = tree();
        fs::write(root.join("src/sub/run.sh"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(
            root.join("src/sub/run.sh"),
            fs::Permissions::from_mode(0o750),
        )
        .unwrap();
        let big: Vec<u8> = (0..1_200_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(root.join("src/big"), &big).unwrap();
        symlink("sub/run.sh", root.join("src/link")).unwrap();
        let long = "n".repeat(150);
        fs::write(root.join("src/sub").join(&long), "long").unwrap();
        let archive = out(&root, "/src").unwrap();
        fs::create_dir(root.join("dst")).unwrap();
        into(&root, "/dst", &archive).unwrap();
        let got = root.join("dst/src");
        assert_eq!(fs::read(got.join("big")).unwrap(), big);
        assert_eq!(
            fs::read_link(got.join("link")).unwrap(),
            Path::new("sub/run.sh")
        );
        let m = fs::metadata(got.join("sub/run.sh")).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o750);
        let orig = fs::metadata(root.join("src/sub/run.sh")).unwrap();
        assert_eq!(m.mtime(), orig.mtime());
        assert_eq!(
            fs::read_to_string(got.join("sub").join(&long)).unwrap(),
            "long"
        );
        // A new name: the top entry is renamed.
        into(&root, "/dst/renamed", &archive).unwrap();
        assert_eq!(fs::read(root.join("dst/renamed/big")).unwrap(), big);
        // A file by itself, and over what is there.
        let one = out(&root, "/src/sub/run.sh").unwrap();
        into(&root, "/dst", &one).unwrap();
        into(&root, "/dst", &one).unwrap();
        assert_eq!(fs::read(root.join("dst/run.sh")).unwrap(), b"#!/bin/sh\n");
    }

    #[test]
    fn copy_out_through_escaping_symlinks_stays_in_the_root() {
        let (_d, root, outside) = tree();
        symlink("../../../../../../../", root.join("up")).unwrap();
        symlink("/", root.join("abs")).unwrap();
        let rel = outside.strip_prefix("/").unwrap();
        for link in ["up", "abs"] {
            let path = format!("/{link}/{}/secret", rel.display());
            let e = out(&root, &path).unwrap_err();
            assert!(e.to_string().contains("No such file"), "{e}");
        }
        // With the same path inside the root, that file is what comes back.
        fs::create_dir_all(root.join(rel)).unwrap();
        fs::write(root.join(rel).join("secret"), "inside").unwrap();
        let a = out(&root, &format!("/up/{}/secret", rel.display())).unwrap();
        let text = String::from_utf8_lossy(&a);
        assert!(text.contains("inside") && !text.contains("outside"));
        // A symlink named itself is archived as a symlink, not followed.
        let a = out(&root, "/abs").unwrap();
        let e = tar::Reader::new(&a[..]).next_entry().unwrap().unwrap();
        assert_eq!((e.kind, e.link), (Kind::Symlink, b"/".to_vec()));
    }

    #[test]
    fn copy_in_never_writes_through_symlinks() {
        let (_d, root, outside) = tree();
        // An archive's own symlink, then an entry through it.
        let mut a = raw_entry("dir", Kind::Symlink, outside.to_str().unwrap(), b"");
        a.extend(raw_entry("dir/file", Kind::File, "", b"pwned"));
        let e = into(&root, "/src", &ended(a)).unwrap_err();
        assert!(e.to_string().contains("dir/file"), "{e}");
        assert!(!outside.join("file").exists());
        // A symlink already in the destination, out of the root.
        symlink(&outside, root.join("src/there")).unwrap();
        let e = into(
            &root,
            "/src",
            &ended(raw_entry("there/file", Kind::File, "", b"x")),
        )
        .unwrap_err();
        assert!(e.to_string().contains("there/file"), "{e}");
        assert!(!outside.join("file").exists());
        // A destination that is a symlink out of the root resolves inside.
        symlink("../../../../../../..", root.join("up")).unwrap();
        let rel = outside.strip_prefix("/").unwrap();
        let dest = format!("/up/{}", rel.display());
        assert!(into(
            &root,
            &dest,
            &ended(raw_entry("file", Kind::File, "", b"x"))
        )
        .is_err());
        fs::create_dir_all(root.join(rel)).unwrap();
        into(
            &root,
            &dest,
            &ended(raw_entry("file", Kind::File, "", b"x")),
        )
        .unwrap();
        assert!(root.join(rel).join("file").exists());
        assert!(!outside.join("file").exists());
        // So does one named itself, relative or absolute.
        symlink(
            format!("../../../../../../..{}", outside.display()),
            root.join("last"),
        )
        .unwrap();
        symlink(&outside, root.join("abs")).unwrap();
        for dest in ["/last", "/abs"] {
            let a = ended(raw_entry(&dest[1..], Kind::File, "", b"x"));
            into(&root, dest, &a).unwrap();
            assert!(root.join(rel).join(&dest[1..]).exists(), "{dest}");
        }
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 1);
        // One to nothing inside the root is refused, not replaced.
        symlink(outside.join("nothing"), root.join("dangling")).unwrap();
        let e = into(
            &root,
            "/dangling",
            &ended(raw_entry("f", Kind::File, "", b"x")),
        );
        assert_eq!(
            e.unwrap_err(),
            StorageError::DanglingSymlink {
                path: "/dangling".into()
            }
        );
        assert!(fs::symlink_metadata(root.join("dangling"))
            .unwrap()
            .is_symlink());
        // Replacing a symlink by a file replaces the link, not its target.
        symlink(outside.join("secret"), root.join("src/s")).unwrap();
        into(
            &root,
            "/src",
            &ended(raw_entry("s", Kind::File, "", b"new")),
        )
        .unwrap();
        assert_eq!(
            fs::read_to_string(outside.join("secret")).unwrap(),
            "outside"
        );
        assert_eq!(fs::read_to_string(root.join("src/s")).unwrap(), "new");
    }

    #[test]
    fn bad_names_and_kinds_are_refused_by_name() {
        let (_d, root, _) = tree();
        for (name, why) in [
            ("/etc/x", "absolute"),
            ("a/../../x", "\"..\""),
            ("..", "\"..\""),
        ] {
            let e = into(&root, "/src", &ended(raw_entry(name, Kind::File, "", b""))).unwrap_err();
            let e = e.to_string();
            assert!(e.contains(name) && e.contains(why), "{e}");
        }
        let e = into(
            &root,
            "/src",
            &ended(raw_entry("h", Kind::HardLink, "x", b"")),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("\"h\"") && e.to_string().contains("hard link"),
            "{e}"
        );
        let e = into(
            &root,
            "/src",
            &raw_entry("f", Kind::File, "", b"abc")[..600],
        )
        .unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
        let e = out(&root, "/nothing/here").unwrap_err();
        assert!(e.to_string().contains("/nothing/here"), "{e}");
    }
}
