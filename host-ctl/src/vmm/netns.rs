//! Network namespaces for hypervisor processes: a persistent one a pod's
//! lkvm runs in (bound on a file, as `ip netns add` does), and joining a
//! namespace before a process execs.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use super::VmmError;

fn sys(what: String) -> impl FnOnce(nix::errno::Errno) -> VmmError {
    move |e| VmmError::Process(format!("{what}: {}", e.desc()))
}

/// Creates a new, empty network namespace and binds it on `path` (a file
/// created here). A thread of its own enters it, so host-ctl's own
/// namespace never changes.
pub fn create(path: &Path) -> Result<(), VmmError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o444)
        .open(path)
        .map_err(|source| VmmError::Io {
            what: "creating",
            path: path.to_path_buf(),
            source,
        })?;
    let target = path.to_path_buf();
    let made = std::thread::spawn(move || -> Result<(), VmmError> {
        unshare(CloneFlags::CLONE_NEWNET).map_err(sys("creating a network namespace".into()))?;
        mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(sys(format!(
            "binding a network namespace on {}",
            target.display()
        )))
    })
    .join()
    .map_err(|_| VmmError::Process("creating a network namespace: the thread panicked".into()))?;
    if made.is_err() {
        let _ = std::fs::remove_file(path);
    }
    made
}

/// Unbinds and deletes a namespace made by [`create`]; the namespace ends
/// with its last process.
pub fn remove(path: &Path) {
    let _ = umount2(path, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW);
    let _ = std::fs::remove_file(path);
}

/// Opens a namespace file, to join in a child about to exec.
pub fn open(path: &Path) -> Result<File, VmmError> {
    File::open(path).map_err(|source| VmmError::Io {
        what: "opening the network namespace",
        path: path.to_path_buf(),
        source,
    })
}

/// Joins the network namespace `ns` (in a child between fork and exec:
/// setns is async-signal-safe).
pub fn join(ns: &File) -> std::io::Result<()> {
    setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
}
