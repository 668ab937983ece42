//! Terminals for `exec --tty`, allocated from the app's own devpts.
//!
//! Each app has a private devpts instance (see `approot`). A terminal from
//! the agent's instance would work as a file descriptor, but inside the app
//! `/dev/pts/N` would not exist, so `tty`, `ttyname` and job control in
//! shells would say there is no terminal. The master is therefore opened
//! from the app's `/dev/pts/ptmx`, resolved inside its root, and the slave
//! from the master (`TIOCGPTPEER`) without looking up any path.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::pty::Winsize;

use super::SpawnError;
use crate::storage::open_in_root;

/// The two sides of a terminal.
pub(super) struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

/// Allocates a terminal in the devpts of the app whose root is `root`,
/// sized `size` when given.
pub(super) fn open_in_app(root: &OwnedFd, size: Option<&Winsize>) -> Result<Pty, SpawnError> {
    let master = open_in_root(root, "/dev/pts/ptmx", OFlag::O_RDWR | OFlag::O_NOCTTY)
        .map_err(SpawnError::PtyOpen)?;
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int from the pointer, which outlives
    // the call.
    ioctl_result("unlocking the terminal", unsafe {
        libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock)
    })?;
    if let Some(size) = size {
        set_size(&master, size).map_err(|errno| SpawnError::PtyIoctl {
            what: "setting the window size",
            errno,
        })?;
    }
    // SAFETY: TIOCGPTPEER takes open flags by value and returns a new
    // descriptor, which nothing else owns.
    let slave = ioctl_result("opening the terminal's slave side", unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: the ioctl returned a fresh descriptor.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    Ok(Pty { master, slave })
}

/// Sets the window size of the terminal whose master side is `master`.
pub(super) fn set_size(master: &impl AsRawFd, size: &Winsize) -> Result<(), Errno> {
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which outlives
    // the call.
    let ret = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, size) };
    Errno::result(ret).map(drop)
}

fn ioctl_result(what: &'static str, ret: libc::c_int) -> Result<libc::c_int, SpawnError> {
    if ret < 0 {
        Err(SpawnError::PtyIoctl {
            what,
            errno: Errno::last(),
        })
    } else {
        Ok(ret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::open_root;
    use nix::mount::{mount, umount2, MntFlags, MsFlags};

    /// A terminal from a private devpts mounted in a root exists there as
    /// `/dev/pts/N`, and the slave is a terminal.
    #[test]
    fn the_terminal_lives_in_the_apps_devpts() {
        crate::storage::private_mount_namespace();
        let dir = tempfile::tempdir().unwrap();
        let pts = dir.path().join("dev/pts");
        std::fs::create_dir_all(&pts).unwrap();
        mount(
            Some("devpts"),
            &pts,
            Some("devpts"),
            MsFlags::empty(),
            Some("newinstance,ptmxmode=0666,mode=0620"),
        )
        .unwrap();
        let root = open_root(dir.path()).unwrap();
        let size = Winsize {
            ws_row: 33,
            ws_col: 101,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = open_in_app(&root, Some(&size)).unwrap();
        assert!(nix::unistd::isatty(&pty.slave).unwrap());
        let name = std::fs::read_link(format!("/proc/self/fd/{}", pty.slave.as_raw_fd())).unwrap();
        let n = name.file_name().unwrap();
        assert!(
            pts.join(n).exists(),
            "{name:?} is not in the private devpts"
        );
        // SAFETY: Winsize is plain data; zero is a valid value for every
        // field.
        let mut got: Winsize = unsafe { std::mem::zeroed() };
        assert_eq!(
            // SAFETY: TIOCGWINSZ writes one winsize to the pointer, which
            // outlives the call.
            unsafe { libc::ioctl(pty.slave.as_raw_fd(), libc::TIOCGWINSZ, &mut got) },
            0
        );
        assert_eq!((got.ws_row, got.ws_col), (33, 101));
        drop(pty);
        umount2(&pts, MntFlags::MNT_DETACH).unwrap();
    }
}
