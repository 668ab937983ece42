//! Host directories as the hypervisor sees them. QEMU takes every source as
//! it is (`readonly=on` where no app writes). lkvm's `--9p` has neither a
//! read-only option nor a way to carry a comma, so such sources are shared
//! through an alias: a bind mount at `<pod>/shares/<tag>`, read-only where
//! the volume is (rkt's fix for "KVM readOnly=true host volumes aren't
//! read-only"). Aliases are removed when the pod ends.

use std::fs;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use kvmpod_api::mountapi::{self, Target};
use nix::errno::Errno;
use nix::mount::{umount2, MntFlags};

use crate::vmm::{Share, VmmError};

/// A share that needs an alias bind mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    pub source: PathBuf,
    pub path: PathBuf,
    pub read_only: bool,
}

pub fn alias_dir(pod_dir: &Path) -> PathBuf {
    pod_dir.join("shares")
}

/// The shares to give lkvm, and the aliases to mount first.
pub fn for_lkvm(shares: &[Share], pod_dir: &Path) -> (Vec<Share>, Vec<Alias>) {
    let mut out = Vec::new();
    let mut aliases = Vec::new();
    for s in shares {
        if s.read_only || s.source.as_os_str().as_bytes().contains(&b',') {
            let path = alias_dir(pod_dir).join(&s.tag);
            aliases.push(Alias {
                source: s.source.clone(),
                path: path.clone(),
                read_only: s.read_only,
            });
            // The protection is the alias mount itself.
            out.push(Share {
                tag: s.tag.clone(),
                source: path,
                read_only: false,
            });
        } else {
            out.push(s.clone());
        }
    }
    (out, aliases)
}

/// Mounts one alias: a recursive clone of the source, made read-only
/// (with everything under it) before it is attached.
fn mount(alias: &Alias) -> Result<(), VmmError> {
    fs::create_dir_all(&alias.path).map_err(|source| VmmError::Io {
        what: "creating",
        path: alias.path.clone(),
        source,
    })?;
    let fail = |what: &str, e: Errno| -> VmmError {
        let hint = if e == Errno::ENOSYS {
            " (read-only lkvm shares need Linux 5.12 or later)"
        } else {
            ""
        };
        VmmError::Alias(format!(
            "{what} {} at {}: {}{hint}",
            alias.source.display(),
            alias.path.display(),
            e.desc()
        ))
    };
    let tree = mountapi::clone_tree(&alias.source).map_err(|e| fail("cloning", e))?;
    if alias.read_only {
        mountapi::make_tree_read_only(tree.as_fd()).map_err(|e| fail("making read-only", e))?;
    }
    mountapi::attach(tree.as_fd(), Target::Path(&alias.path)).map_err(|e| fail("mounting", e))
}

/// Mounts every alias; on failure, what was mounted is taken down again.
/// A source that is not a directory is refused before anything is mounted.
pub fn mount_all(aliases: &[Alias]) -> Result<(), VmmError> {
    for a in aliases {
        if !a.source.is_dir() {
            return Err(VmmError::Alias(format!(
                "{} is not a directory",
                a.source.display()
            )));
        }
    }
    for (i, a) in aliases.iter().enumerate() {
        if let Err(e) = mount(a) {
            for done in &aliases[..i] {
                let _ = umount2(&done.path, MntFlags::MNT_DETACH);
                let _ = fs::remove_dir(&done.path);
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Unmounts every alias of a pod (lazily: a pod whose VM just died may
/// still have it open) and removes their directories.
pub fn unmount_all(pod_dir: &Path) {
    unmount_in(&alias_dir(pod_dir));
}

/// Unmounts (lazily) whatever is mounted on the entries of `dir`, removes
/// them and `dir`. An entry still mounted is left: it is never removed
/// through.
pub fn unmount_in(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let _ = umount2(&p, MntFlags::MNT_DETACH);
        let _ = fs::remove_dir(&p);
    }
    let _ = fs::remove_dir(dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(tag: &str, source: &str, read_only: bool) -> Share {
        Share {
            tag: tag.into(),
            source: source.into(),
            read_only,
        }
    }

    #[test]
    fn lkvm_gets_aliases_for_read_only_and_comma_paths() {
        let shares = [
            share("rw", "/srv/rw", false),
            share("ro", "/srv/ro", true),
            share("comma", "/srv/a,b", false),
        ];
        let (lkvm, aliases) = for_lkvm(&shares, Path::new("/pods/x"));
        assert_eq!(lkvm[0], shares[0]);
        assert_eq!(lkvm[1], share("ro", "/pods/x/shares/ro", false));
        assert_eq!(lkvm[2], share("comma", "/pods/x/shares/comma", false));
        assert_eq!(
            aliases,
            [
                Alias {
                    source: "/srv/ro".into(),
                    path: "/pods/x/shares/ro".into(),
                    read_only: true
                },
                Alias {
                    source: "/srv/a,b".into(),
                    path: "/pods/x/shares/comma".into(),
                    read_only: false
                }
            ]
        );
    }

    /// Mounts for real: needs root (as `make test` runs) and works in a
    /// mount namespace of its own thread.
    #[test]
    fn a_read_only_alias_refuses_writes_even_below_it() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test mounts file systems: run it as root (`make test` does)"
        );
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).unwrap();
        nix::mount::mount(
            None::<&str>,
            "/",
            None::<&str>,
            nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("keep.txt"), "original").unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            &src.join("sub"),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        let pod = dir.path().join("pod");
        let alias = Alias {
            source: src.clone(),
            path: alias_dir(&pod).join("data"),
            read_only: true,
        };
        mount_all(std::slice::from_ref(&alias)).unwrap();
        let erofs =
            |p: &Path| matches!(fs::write(p, "x"), Err(e) if e.raw_os_error() == Some(libc::EROFS));
        assert!(erofs(&alias.path.join("keep.txt")));
        assert!(
            erofs(&alias.path.join("sub/new.txt")),
            "a mount below the share stayed writable"
        );
        assert_eq!(
            fs::read_to_string(alias.path.join("keep.txt")).unwrap(),
            "original"
        );
        // The source itself stays writable for the host.
        fs::write(src.join("host.txt"), "host").unwrap();
        unmount_all(&pod);
        assert!(!alias_dir(&pod).exists());
        let _ = umount2(&src.join("sub"), MntFlags::MNT_DETACH);
    }
}
