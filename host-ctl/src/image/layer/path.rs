//! Entry paths: made relative and normal, refused when they climb out of
//! the layer, and walked component by component with lstat so that no
//! entry is ever written through a symbolic link.

use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// `path` relative to the layer root: leading `/` and `.` dropped, `..`
/// resolved lexically; an error when it would leave the root.
pub fn sanitize(path: &Path) -> Result<PathBuf, &'static str> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                if !out.pop() {
                    return Err("its path climbs out of the layer with ..");
                }
            }
        }
    }
    Ok(out)
}

/// True for overlayfs's whiteout: a character device 0:0.
pub fn is_whiteout(meta: &Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// lstat that maps "not there" to None.
pub fn lstat(path: &Path) -> io::Result<Option<Metadata>> {
    match fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Why an ancestor of an entry cannot be used.
#[derive(Debug, PartialEq, Eq)]
pub enum Ancestor {
    Symlink(PathBuf),
    NotDir(PathBuf),
    Missing(PathBuf),
}

impl Ancestor {
    pub fn reason(&self) -> String {
        match self {
            Ancestor::Symlink(p) => {
                format!("its parent {} is a symbolic link", p.display())
            }
            Ancestor::NotDir(p) => format!("its parent {} is not a directory", p.display()),
            Ancestor::Missing(p) => format!("its parent {} does not exist", p.display()),
        }
    }
}

/// Checks that every ancestor of `rel` under `root` is a real directory.
/// With `create`, missing ones (and whiteouts this layer put in their way)
/// become directories, with the attributes of the same directory in the
/// nearest lower layer that has one (`lowers` bottom first).
pub fn ensure_parents(
    root: &Path,
    rel: &Path,
    create: bool,
    lowers: &[PathBuf],
) -> io::Result<Result<(), Ancestor>> {
    let Some(parent) = rel.parent() else {
        return Ok(Ok(()));
    };
    let mut prefix = PathBuf::new();
    for c in parent.components() {
        prefix.push(c);
        let here = root.join(&prefix);
        match lstat(&here)? {
            Some(m) if m.is_dir() => continue,
            Some(m) if m.file_type().is_symlink() => return Ok(Err(Ancestor::Symlink(prefix))),
            Some(m) if create && is_whiteout(&m) => fs::remove_file(&here)?,
            Some(_) => return Ok(Err(Ancestor::NotDir(prefix))),
            None if !create => return Ok(Err(Ancestor::Missing(prefix))),
            None => {}
        }
        make_implicit_dir(&here, &prefix, lowers)?;
    }
    Ok(Ok(()))
}

/// A directory the layer needs but does not list: it takes the lower
/// layer's attributes so it does not change them in the merged view.
fn make_implicit_dir(here: &Path, rel: &Path, lowers: &[PathBuf]) -> io::Result<()> {
    fs::DirBuilder::new().mode(0o755).create(here)?;
    for lower in lowers.iter().rev() {
        match lookup(lower, rel)? {
            Lookup::Found(m) if m.is_dir() => {
                std::os::unix::fs::lchown(here, Some(m.uid()), Some(m.gid()))?;
                fs::set_permissions(here, fs::Permissions::from_mode(m.mode() & 0o7777))?;
                return Ok(());
            }
            Lookup::Absent => continue,
            _ => return Ok(()),
        }
    }
    Ok(())
}

/// What a lower snapshot holds at a path.
pub enum Lookup {
    /// Not in this snapshot: look further down.
    Absent,
    /// Deleted here (a whiteout or a non-directory ancestor): nothing below counts.
    Hidden,
    Found(Metadata),
}

/// Looks `rel` up in one snapshot without following any symbolic link.
pub fn lookup(snapshot: &Path, rel: &Path) -> io::Result<Lookup> {
    let mut prefix = snapshot.to_path_buf();
    let mut components = rel.components().peekable();
    while let Some(c) = components.next() {
        prefix.push(c);
        let Some(meta) = lstat(&prefix)? else {
            return Ok(Lookup::Absent);
        };
        if is_whiteout(&meta) {
            return Ok(Lookup::Hidden);
        }
        if components.peek().is_none() {
            return Ok(Lookup::Found(meta));
        }
        if !meta.is_dir() {
            return Ok(Lookup::Hidden);
        }
    }
    Ok(Lookup::Absent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(p: &str) -> Result<PathBuf, &'static str> {
        sanitize(Path::new(p))
    }

    #[test]
    fn paths_are_made_relative_and_normal() {
        assert_eq!(s("/etc/passwd"), Ok(PathBuf::from("etc/passwd")));
        assert_eq!(s("./etc/./x"), Ok(PathBuf::from("etc/x")));
        assert_eq!(s("a/b/../c"), Ok(PathBuf::from("a/c")));
        assert_eq!(s("./"), Ok(PathBuf::new()));
        assert_eq!(s("/"), Ok(PathBuf::new()));
    }

    #[test]
    fn climbing_out_is_refused() {
        assert!(s("../x").is_err());
        assert!(s("a/../../x").is_err());
        assert!(s("/../etc").is_err());
    }

    #[test]
    fn ancestors_are_walked_without_following_links() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        fs::create_dir(root.join("d")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("link")).unwrap();
        fs::write(root.join("file"), b"").unwrap();
        let check = |p: &str, create| ensure_parents(root, Path::new(p), create, &[]).unwrap();
        assert_eq!(check("d/x", false), Ok(()));
        assert_eq!(check("link/x", true), Err(Ancestor::Symlink("link".into())));
        assert_eq!(check("file/x", true), Err(Ancestor::NotDir("file".into())));
        assert_eq!(
            check("new/deep/x", false),
            Err(Ancestor::Missing("new".into()))
        );
        assert_eq!(check("new/deep/x", true), Ok(()));
        assert!(root.join("new/deep").is_dir());
    }
}
