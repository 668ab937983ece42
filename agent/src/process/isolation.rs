//! What confines a process started in an app: its own mount namespace
//! pivoted into the app's root (or, for `exec`, the running app's
//! namespace), its capability set, `no_new_privs`, rlimits and OOM score.
//!
//! Everything is prepared before the clone (see `vfork`);
//! [`Isolation::apply_as_root`] and [`Isolation::apply_after_identity`] run
//! in the child before `exec` and only make system calls (through nix
//! where its wrappers do not allocate: a path given as a `CStr` is passed
//! on as it is), none of them a libc call that acts on every thread.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{BorrowedFd, RawFd};

use kvmpod_api::limits::{capability_set, rlimit};
use kvmpod_api::manifest::App;
use nix::fcntl::{open, OFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::prctl::set_no_new_privs;
use nix::sys::stat::Mode;
use nix::unistd::{chdir, pivot_root, write};

/// How the process reaches the app's root.
#[derive(Debug, Clone)]
pub(super) enum Enter {
    /// A new mount namespace, pivoted into `root` (a mount point) with the
    /// rest of the guest detached: the app's main process.
    Pivot { root: CString },
    /// The mount namespace of the app's running process (an `exec`).
    Join { ns: RawFd },
}

#[derive(Debug, Clone)]
pub(super) struct Isolation {
    pub enter: Enter,
    /// Capabilities kept, as a bit mask.
    pub caps: u64,
    pub no_new_privs: bool,
    /// (resource, soft, hard)
    pub rlimits: Vec<(u32, u64, u64)>,
    /// Written to /proc/self/oom_score_adj.
    pub oom_score_adj: Vec<u8>,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

impl Isolation {
    /// The isolation the manifest asks for, entering the app by `enter`.
    pub fn for_app(app: &App, enter: Enter) -> Self {
        Isolation {
            enter,
            caps: capability_set(&app.capabilities.add, &app.capabilities.drop),
            no_new_privs: app.no_new_privileges,
            rlimits: app
                .rlimits
                .iter()
                .filter_map(|r| Some((rlimit(&r.kind)?, r.soft, r.hard.unwrap_or(r.soft))))
                .collect(),
            // See `set_oom_score_adj`.
            oom_score_adj: app.oom_score_adj.unwrap_or(0).to_string().into_bytes(),
        }
    }

    /// Applies everything before the identity change (runs in the child,
    /// as root, before `setgroups`/`setgid`/`setuid`).
    ///
    /// # Safety
    /// Only for a child before its exec (see `vfork`): it changes the
    /// process's namespaces, root and limits. It makes only system calls
    /// and does not allocate.
    pub unsafe fn apply_as_root(&self) -> io::Result<()> {
        self.set_oom_score_adj()?;
        for &(resource, soft, hard) in &self.rlimits {
            let lim = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            // SAFETY: prlimit64 reads the rlimit on our stack. The raw
            // system call: musl's setrlimit may fall back to acting on every
            // thread (see `vfork`).
            check(unsafe {
                libc::syscall(
                    libc::SYS_prlimit64,
                    0,
                    resource as libc::c_long,
                    &lim as *const libc::rlimit,
                    std::ptr::null_mut::<libc::rlimit>(),
                )
            } as libc::c_int)?;
        }
        match &self.enter {
            Enter::Pivot { root } => pivot_into(root)?,
            Enter::Join { ns } => {
                // SAFETY: the caller keeps the namespace descriptor open
                // until the child has been spawned.
                let ns = unsafe { BorrowedFd::borrow_raw(*ns) };
                setns(ns, CloneFlags::CLONE_NEWNS)?;
            }
        }
        chdir(c"/")?;
        // The bounding set: what no exec can bring back.
        for cap in 0..64u64 {
            if self.caps & (1 << cap) == 0 {
                // SAFETY: PR_CAPBSET_DROP takes plain integers. EINVAL past
                // the kernel's last capability: nothing to drop.
                unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
            }
        }
        Ok(())
    }

    /// The agent shields itself from the OOM killer (-1000) and children
    /// inherit that: without this an app over its memory limit is
    /// unkillable and stalls the guest instead.
    fn set_oom_score_adj(&self) -> io::Result<()> {
        let adj = open(
            c"/proc/self/oom_score_adj",
            OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        write(&adj, &self.oom_score_adj)?;
        Ok(())
    }

    /// Applies what must follow the identity change.
    ///
    /// # Safety
    /// As for [`Isolation::apply_as_root`].
    pub unsafe fn apply_after_identity(&self, uid: u32) -> io::Result<()> {
        if uid == 0 {
            // Root keeps its capabilities across setuid(0): cut them down
            // to the app's set. (A non-root uid has none left.)
            let header = CapHeader {
                version: LINUX_CAPABILITY_VERSION_3,
                pid: 0,
            };
            let lo = self.caps as u32;
            let hi = (self.caps >> 32) as u32;
            let data = [
                CapData {
                    effective: lo,
                    permitted: lo,
                    inheritable: 0,
                },
                CapData {
                    effective: hi,
                    permitted: hi,
                    inheritable: 0,
                },
            ];
            // SAFETY: capset reads the header and the two data structs of
            // version 3, all on our stack and laid out as the kernel's.
            let ret = unsafe {
                libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr())
            };
            if ret != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        if self.no_new_privs {
            set_no_new_privs()?;
        }
        Ok(())
    }
}

/// A new mount namespace, pivoted into `root` (a mount point) with the rest
/// of the guest detached.
fn pivot_into(root: &CStr) -> io::Result<()> {
    unshare(CloneFlags::CLONE_NEWNS)?;
    // Nothing done here may propagate back to the guest.
    mount(
        None::<&CStr>,
        c"/",
        None::<&CStr>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&CStr>,
    )?;
    chdir(root)?;
    // pivot_root(".", "."): the old root ends up stacked on the new one,
    // and is then detached with everything under it (the guest's files,
    // the other apps' roots).
    pivot_root(c".", c".")?;
    umount2(c".", MntFlags::MNT_DETACH)?;
    Ok(())
}

/// A libc return value as a result: non-zero is the error in `errno`.
fn check(ret: libc::c_int) -> io::Result<()> {
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvmpod_api::manifest::Rlimit;

    #[test]
    fn the_manifest_becomes_an_isolation() {
        let app = App {
            no_new_privileges: true,
            oom_score_adj: Some(-500),
            rlimits: vec![Rlimit {
                kind: "nofile".into(),
                soft: 64,
                hard: None,
            }],
            capabilities: kvmpod_api::manifest::Capabilities {
                add: vec![],
                drop: vec!["NET_RAW".into()],
            },
            ..App::default()
        };
        let iso = Isolation::for_app(&app, Enter::Join { ns: 3 });
        assert!(iso.no_new_privs);
        assert_eq!(iso.oom_score_adj, b"-500");
        assert_eq!(iso.rlimits, [(7, 64, 64)]);
        assert_eq!(iso.caps & (1 << 13), 0);
        assert_ne!(iso.caps & (1 << 0), 0);
        let plain = Isolation::for_app(&App::default(), Enter::Join { ns: 3 });
        assert_eq!(plain.oom_score_adj, b"0");
    }
}
