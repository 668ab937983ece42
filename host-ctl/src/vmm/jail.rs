//! A filesystem jail for a hypervisor process: a private mount namespace
//! whose root is an empty tmpfs holding only what the process needs, each
//! bound at its own path (its binary, the kernel and initrd, the shared
//! directories, a few device nodes).
//!
//! Why: kvmtool's 9p server resolves a path inside a share with plain
//! system calls on the host, so a symlink in a shared directory (one the
//! user put there, or one the guest created through a writable share) is
//! followed on the host: `/shared/x -> /etc/shadow` would give the guest
//! the host's file. In the jail, every absolute or `..` path resolves
//! inside the jail's root, where the host's files are not.
//!
//! `host-ctl vmm-jail [--ro P]... [--rw P]... [--dev P]... [--env K=V]...
//! --root DIR -- PROGRAM ARGS...` enters the jail and executes PROGRAM;
//! [`Jail::wrap`] builds that command line, so `host-ctl args` prints
//! exactly what `run` starts.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::statvfs::{statvfs, FsFlags};

use super::{Program, VmmError};

/// How a path is bound into the jail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindKind {
    /// Read-only, no devices, no setuid (programs, kernels, images).
    ReadOnly,
    /// Writable unless the source mount is read-only; no devices, no setuid
    /// (shared directories: a device node the guest creates in a share
    /// cannot be opened through it).
    Share,
    /// A device node the process opens.
    Device,
}

impl BindKind {
    fn flag(self) -> &'static str {
        match self {
            BindKind::ReadOnly => "--ro",
            BindKind::Share => "--rw",
            BindKind::Device => "--dev",
        }
    }

    fn from_flag(flag: &str) -> Option<BindKind> {
        [BindKind::ReadOnly, BindKind::Share, BindKind::Device]
            .into_iter()
            .find(|k| k.flag() == flag)
    }
}

/// A path bound into the jail at the same path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub path: PathBuf,
    pub kind: BindKind,
}

/// What a jailed process sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jail {
    /// An empty directory the jail's tmpfs is mounted on (in the private
    /// namespace only).
    pub root: PathBuf,
    pub binds: Vec<Bind>,
    pub env: Vec<(String, String)>,
}

impl Jail {
    /// `host-ctl vmm-jail ... -- program args`, for `host_ctl` (the running
    /// host-ctl's own path).
    pub fn wrap(&self, host_ctl: &Path, inner: Program) -> Program {
        let mut args = vec!["vmm-jail".to_string()];
        for b in &self.binds {
            args.push(b.kind.flag().into());
            args.push(b.path.to_string_lossy().into_owned());
        }
        for (k, v) in &self.env {
            args.push("--env".into());
            args.push(format!("{k}={v}"));
        }
        args.push("--root".into());
        args.push(self.root.to_string_lossy().into_owned());
        args.push("--".into());
        args.push(inner.program.to_string_lossy().into_owned());
        args.extend(inner.args);
        Program {
            program: host_ctl.to_path_buf(),
            args,
        }
    }

    /// Parses what [`Jail::wrap`] wrote (after `vmm-jail`): the jail and the
    /// program to run in it.
    pub fn parse(args: &[OsString]) -> Result<(Jail, Vec<OsString>), VmmError> {
        let bad = |why: String| VmmError::Unsupported(format!("vmm-jail: {why}"));
        let mut jail = Jail {
            root: PathBuf::new(),
            binds: Vec::new(),
            env: Vec::new(),
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let a = a.to_string_lossy();
            if a == "--" {
                let rest: Vec<OsString> = it.cloned().collect();
                if jail.root.as_os_str().is_empty() || rest.is_empty() {
                    return Err(bad("needs --root DIR and a program after --".into()));
                }
                return Ok((jail, rest));
            }
            let value = it.next().ok_or_else(|| bad(format!("{a} needs a value")))?;
            if let Some(kind) = BindKind::from_flag(&a) {
                jail.binds.push(Bind {
                    path: PathBuf::from(value),
                    kind,
                });
            } else if a == "--root" {
                jail.root = PathBuf::from(value);
            } else if a == "--env" {
                let v = value.to_string_lossy();
                let (k, v) = v
                    .split_once('=')
                    .ok_or_else(|| bad(format!("--env {v}: expected KEY=VALUE")))?;
                jail.env.push((k.to_string(), v.to_string()));
            } else {
                return Err(bad(format!("unknown option {a}")));
            }
        }
        Err(bad("no -- before the program".into()))
    }

    /// Enters the jail: this process's mounts become private, its root the
    /// jail's. Call in a process about to exec (it is single-threaded).
    pub fn enter(&self) -> Result<(), VmmError> {
        let fail = |what: String| {
            move |e: nix::errno::Errno| VmmError::Process(format!("{what}: {}", e.desc()))
        };
        fs::create_dir_all(&self.root).map_err(|source| VmmError::Io {
            what: "creating",
            path: self.root.clone(),
            source,
        })?;
        unshare(CloneFlags::CLONE_NEWNS).map_err(fail("creating a mount namespace".into()))?;
        // Slaves, not private: nothing mounted here reaches the host, but
        // what the host mounts later in a shared directory it binds in (a
        // sandbox pod's apps share) reaches the jail.
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_SLAVE,
            None::<&str>,
        )
        .map_err(fail("making mounts slaves".into()))?;
        mount(
            Some("tmpfs"),
            &self.root,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755"),
        )
        .map_err(fail(format!("mounting a tmpfs at {}", self.root.display())))?;
        for b in &self.binds {
            bind(&self.root, b)?;
        }
        let old = self.root.join(".old");
        fs::create_dir(&old).map_err(|source| VmmError::Io {
            what: "creating",
            path: old.clone(),
            source,
        })?;
        nix::unistd::pivot_root(&self.root, &old)
            .map_err(fail("pivot_root into the jail".into()))?;
        nix::unistd::chdir("/").map_err(fail("entering the jail".into()))?;
        umount2("/.old", MntFlags::MNT_DETACH).map_err(fail("detaching the host's root".into()))?;
        let _ = fs::remove_dir("/.old");
        Ok(())
    }
}

/// Binds `b.path` at the same path under `root`, with its flags.
fn bind(root: &Path, b: &Bind) -> Result<(), VmmError> {
    let target = root.join(b.path.strip_prefix("/").unwrap_or(&b.path));
    let io = |what| {
        let path = target.clone();
        move |source| VmmError::Io { what, path, source }
    };
    let is_dir = b.path.is_dir();
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent).map_err(io("creating"))?;
    }
    if is_dir {
        fs::create_dir_all(&target).map_err(io("creating"))?;
    } else {
        fs::File::create(&target).map_err(io("creating"))?;
    }
    let fail = |what: &str, e: nix::errno::Errno| {
        VmmError::Process(format!(
            "{what} {} in the jail: {}",
            b.path.display(),
            e.desc()
        ))
    };
    mount(
        Some(&b.path),
        &target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| fail("binding", e))?;
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID;
    match b.kind {
        BindKind::ReadOnly => flags |= MsFlags::MS_RDONLY | MsFlags::MS_NODEV,
        BindKind::Device => flags |= MsFlags::MS_NOEXEC,
        BindKind::Share => {
            flags |= MsFlags::MS_NODEV;
            // A read-only alias stays read-only.
            let ro = statvfs(&b.path).map_err(|e| fail("inspecting", e))?;
            if ro.flags().contains(FsFlags::ST_RDONLY) {
                flags |= MsFlags::MS_RDONLY;
            }
        }
    }
    mount(None::<&str>, &target, None::<&str>, flags, None::<&str>)
        .map_err(|e| fail("restricting", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jail() -> Jail {
        Jail {
            root: "/pods/x/jail".into(),
            binds: vec![
                Bind {
                    path: "/usr/local/bin/lkvm".into(),
                    kind: BindKind::ReadOnly,
                },
                Bind {
                    path: "/srv/data".into(),
                    kind: BindKind::Share,
                },
                Bind {
                    path: "/dev/kvm".into(),
                    kind: BindKind::Device,
                },
            ],
            env: vec![("HOME".into(), "/".into())],
        }
    }

    #[test]
    fn the_command_line_round_trips() {
        let wrapped = jail().wrap(
            Path::new("/usr/bin/host-ctl"),
            Program {
                program: "/usr/local/bin/lkvm".into(),
                args: vec!["run".into(), "--nodefaults".into()],
            },
        );
        assert_eq!(wrapped.program, Path::new("/usr/bin/host-ctl"));
        assert_eq!(wrapped.args[0], "vmm-jail");
        let rest: Vec<OsString> = wrapped.args[1..].iter().map(OsString::from).collect();
        let (parsed, program) = Jail::parse(&rest).unwrap();
        assert_eq!(parsed, jail());
        assert_eq!(program, ["/usr/local/bin/lkvm", "run", "--nodefaults"]);
    }

    #[test]
    fn malformed_command_lines_are_refused() {
        let args = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        assert!(Jail::parse(&args(&["--ro"])).is_err());
        assert!(Jail::parse(&args(&["--root", "/j"])).is_err());
        assert!(Jail::parse(&args(&["--root", "/j", "--"])).is_err());
        assert!(Jail::parse(&args(&["--bogus", "x", "--", "p"])).is_err());
        assert!(Jail::parse(&args(&["--env", "novalue", "--root", "/j", "--", "p"])).is_err());
    }

    /// Enters a real jail in a child process (it needs root, as `make test`
    /// runs): a symlink in a shared directory that points at a host file
    /// resolves inside the jail, where that file does not exist.
    #[test]
    fn a_symlink_in_a_share_cannot_reach_host_files() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test mounts file systems: run it as root (`make test` does)"
        );
        let dir = tempfile::tempdir().unwrap();
        let share = dir.path().join("share");
        fs::create_dir_all(&share).unwrap();
        let secret = dir.path().join("secret.txt");
        fs::write(&secret, "host secret").unwrap();
        std::os::unix::fs::symlink(&secret, share.join("escape")).unwrap();
        fs::write(share.join("inside.txt"), "shared").unwrap();
        let root = dir.path().join("jail");
        fs::create_dir_all(&root).unwrap();
        let jail = Jail {
            root,
            binds: vec![Bind {
                path: share.clone(),
                kind: BindKind::Share,
            }],
            env: Vec::new(),
        };
        // SAFETY: the child only makes system calls and reads files before
        // it exits; nothing it touches is shared with the parent's threads
        // in a way that fork could break (no locks are taken).
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let ok = jail.enter().is_ok()
                    && fs::read_to_string(share.join("inside.txt")).ok().as_deref()
                        == Some("shared")
                    && fs::read_to_string(share.join("escape")).is_err()
                    && fs::read_to_string(&secret).is_err();
                std::process::exit(if ok { 0 } else { 1 });
            }
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
        // And the host's view is untouched.
        assert_eq!(
            fs::read_to_string(share.join("escape")).unwrap(),
            "host secret"
        );
    }
}
