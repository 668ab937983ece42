//! What confines a process started in an app: its own mount namespace
//! pivoted into the app's root (or, for `exec`, the running app's
//! namespace), its capability set, `no_new_privs`, rlimits and OOM score.
//!
//! Everything is prepared before `fork`; [`Isolation::apply`] runs in the
//! child between `fork` and `exec` and only makes system calls.

use std::ffi::CString;
use std::os::fd::RawFd;

use kvmpod_api::limits::{capability_set, rlimit};
use kvmpod_api::manifest::App;

/// How the process reaches the app's root.
#[derive(Debug, Clone)]
pub enum Enter {
    /// A new mount namespace, pivoted into `root` (a mount point) with the
    /// rest of the guest detached: the app's main process.
    Pivot { root: CString },
    /// The mount namespace of the app's running process (an `exec`).
    Join { ns: RawFd },
}

#[derive(Debug, Clone)]
pub struct Isolation {
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
            // The agent shields itself from the OOM killer (-1000) and
            // children inherit that: without this an app over its memory
            // limit is unkillable and stalls the guest instead.
            oom_score_adj: app.oom_score_adj.unwrap_or(0).to_string().into_bytes(),
        }
    }

    /// Applies everything before the identity change (runs in the child,
    /// as root, before `setgroups`/`setgid`/`setuid`).
    ///
    /// # Safety
    /// Only for the forked child of a `Command`: it changes the process's
    /// namespaces, root and limits.
    pub unsafe fn apply_as_root(&self) -> std::io::Result<()> {
        let err = std::io::Error::last_os_error;
        let adj = libc::open(
            c"/proc/self/oom_score_adj".as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC,
        );
        if adj < 0
            || libc::write(
                adj,
                self.oom_score_adj.as_ptr().cast(),
                self.oom_score_adj.len(),
            ) < 0
        {
            return Err(err());
        }
        libc::close(adj);
        for &(resource, soft, hard) in &self.rlimits {
            let lim = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            if libc::setrlimit(resource as _, &lim) != 0 {
                return Err(err());
            }
        }
        match &self.enter {
            Enter::Pivot { root } => {
                if libc::unshare(libc::CLONE_NEWNS) != 0 {
                    return Err(err());
                }
                // Nothing done here may propagate back to the guest.
                if libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(err());
                }
                if libc::chdir(root.as_ptr()) != 0 {
                    return Err(err());
                }
                // pivot_root(".", "."): the old root ends up stacked on the
                // new one, and is then detached with everything under it
                // (the guest's files, the other apps' roots).
                if libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) != 0 {
                    return Err(err());
                }
                if libc::umount2(c".".as_ptr(), libc::MNT_DETACH) != 0 {
                    return Err(err());
                }
            }
            Enter::Join { ns } => {
                if libc::setns(*ns, libc::CLONE_NEWNS) != 0 {
                    return Err(err());
                }
            }
        }
        if libc::chdir(c"/".as_ptr()) != 0 {
            return Err(err());
        }
        // The bounding set: what no exec can bring back.
        for cap in 0..64u64 {
            if self.caps & (1 << cap) == 0 {
                // EINVAL past the kernel's last capability: nothing to drop.
                libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0);
            }
        }
        Ok(())
    }

    /// Applies what must follow the identity change.
    ///
    /// # Safety
    /// As for [`Isolation::apply_as_root`].
    pub unsafe fn apply_after_identity(&self, uid: u32) -> std::io::Result<()> {
        let err = std::io::Error::last_os_error;
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
            if libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) != 0 {
                return Err(err());
            }
        }
        if self.no_new_privs && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(err());
        }
        Ok(())
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
