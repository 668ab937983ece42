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

use crate::resolve::{open_in_root, ResolveError};

/// The two sides of a terminal.
pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

#[derive(Debug, thiserror::Error)]
pub enum PtyError {
    #[error("opening the app's /dev/pts/ptmx: {0}")]
    Open(#[from] ResolveError),
    #[error("{what}: {errno}")]
    Ioctl { what: &'static str, errno: Errno },
}

/// Allocates a terminal in the devpts of the app whose root is `root`,
/// sized `size` when given.
pub fn open_in_app(root: &OwnedFd, size: Option<&Winsize>) -> Result<Pty, PtyError> {
    let master = open_in_root(root, "/dev/pts/ptmx", OFlag::O_RDWR | OFlag::O_NOCTTY)?;
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int from the pointer, which outlives
    // the call.
    ioctl_result("unlocking the terminal", unsafe {
        libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock)
    })?;
    if let Some(size) = size {
        // SAFETY: TIOCSWINSZ reads one winsize from the pointer.
        ioctl_result("setting the window size", unsafe {
            libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, size)
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

fn ioctl_result(what: &'static str, ret: libc::c_int) -> Result<libc::c_int, PtyError> {
    if ret < 0 {
        Err(PtyError::Ioctl {
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
    use crate::resolve::open_root;
    use nix::mount::{mount, umount2, MntFlags, MsFlags};

    /// A terminal from a private devpts mounted in a root exists there as
    /// `/dev/pts/N`, and the slave is a terminal.
    #[test]
    fn the_terminal_lives_in_the_apps_devpts() {
        crate::mounts::private_mount_namespace();
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
        let mut got: Winsize = unsafe { std::mem::zeroed() };
        assert_eq!(
            unsafe { libc::ioctl(pty.slave.as_raw_fd(), libc::TIOCGWINSZ, &mut got) },
            0
        );
        assert_eq!((got.ws_row, got.ws_col), (33, 101));
        drop(pty);
        umount2(&pts, MntFlags::MNT_DETACH).unwrap();
    }
}
