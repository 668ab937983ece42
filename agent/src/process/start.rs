//! A process ready to start, and its start: the descriptors it gets (pipes
//! to the agent, or a terminal), what its child does before `execve`, and
//! the clone itself (see `vfork`). Below both the app's launch (`spawn`)
//! and the agent's side of its stdio (`stdio`).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::fcntl::OFlag;
use nix::unistd::setsid;

use super::isolation::Isolation;
use super::vfork::{self, BeforeExec, Exec};
use super::SpawnError;
use crate::error::Context;

/// Where a process's stdin, stdout and stderr go.
pub(super) enum Stdio3 {
    /// stdout and stderr piped to the agent; stdin piped too, or
    /// `/dev/null`.
    Pipes { stdin: bool },
    /// All three on this pseudo-terminal, which becomes the process's
    /// controlling terminal.
    Pty(OwnedFd),
}

/// A process ready to start: everything it is started with prepared, so
/// that its child only makes system calls (see `vfork`).
pub(super) struct Spawn {
    exec: Exec,
    fds: ChildFds,
    setup: ChildSetup,
}

/// A started process and the agent's ends of its pipes.
pub(super) struct Started {
    pub pid: i32,
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

impl Spawn {
    /// `exec` on `io`, set up by `setup`: its pipes are made now.
    pub(super) fn new(exec: Exec, io: Stdio3, setup: ChildSetup) -> Result<Spawn, SpawnError> {
        Ok(Spawn {
            exec,
            fds: ChildFds::new(io)?,
            setup,
        })
    }

    /// Starts the process; returns once it has called `execve` (an error
    /// before that, its `exec` included, is returned). The child's ends of
    /// its descriptors are closed here, on either path.
    pub(super) fn start(self) -> io::Result<Started> {
        let pid = vfork::spawn(&self.exec, self.fds.stdio(), &self.setup)?;
        let ChildFds { agent, .. } = self.fds;
        let [stdin, stdout, stderr] = agent;
        Ok(Started {
            pid: pid.as_raw(),
            stdin,
            stdout,
            stderr,
        })
    }
}

/// A process's descriptors 0, 1 and 2: the child's ends and the agent's.
struct ChildFds {
    child: ChildStdio,
    /// The agent's ends of the pipes: stdin's writer, stdout's and
    /// stderr's readers.
    agent: [Option<OwnedFd>; 3],
}

/// What the child gets as 0, 1 and 2.
enum ChildStdio {
    /// A descriptor each: pipes, or `/dev/null` for stdin.
    Each([OwnedFd; 3]),
    /// One terminal, three times.
    Terminal(OwnedFd),
}

impl ChildFds {
    fn new(io: Stdio3) -> Result<ChildFds, SpawnError> {
        match io {
            Stdio3::Pipes { stdin } => {
                let input = if stdin {
                    let (r, w) = pipe()?;
                    (r, Some(w))
                } else {
                    let null = nix::fcntl::open(
                        "/dev/null",
                        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                        nix::sys::stat::Mode::empty(),
                    )
                    .context(|| "opening /dev/null".into())?;
                    (above_stdio(null)?, None)
                };
                let (out_r, out_w) = pipe()?;
                let (err_r, err_w) = pipe()?;
                Ok(ChildFds {
                    child: ChildStdio::Each([input.0, out_w, err_w]),
                    agent: [input.1, Some(out_r), Some(err_r)],
                })
            }
            Stdio3::Pty(slave) => Ok(ChildFds {
                child: ChildStdio::Terminal(above_stdio(slave)?),
                agent: [None, None, None],
            }),
        }
    }

    fn stdio(&self) -> [Option<RawFd>; 3] {
        match &self.child {
            ChildStdio::Each(fds) => fds.each_ref().map(|fd| Some(fd.as_raw_fd())),
            ChildStdio::Terminal(t) => [Some(t.as_raw_fd()); 3],
        }
    }
}

/// A pipe, both ends close-on-exec and above the standard descriptors.
fn pipe() -> Result<(OwnedFd, OwnedFd), SpawnError> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).context(|| "creating a pipe".into())?;
    Ok((above_stdio(r)?, above_stdio(w)?))
}

/// `fd`, or a close-on-exec copy of it numbered 3 or above when it is one
/// of the standard descriptors (the agent's are the console, so this is
/// for tests that run without them).
fn above_stdio(fd: OwnedFd) -> Result<OwnedFd, SpawnError> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    let n = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3))
        .context(|| "moving a descriptor".into())?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else
    // owns.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

/// What the child does between the clone and `exec`, prepared before.
/// `run` makes only system calls on this data, without allocating or
/// locking, and never through a libc function that acts on every thread
/// (see `vfork`): identity changes are raw system calls.
pub(super) struct ChildSetup {
    /// The app's `cgroup.procs`, which the child joins by writing "0".
    pub cgroup_procs: Option<OwnedFd>,
    pub isolation: Isolation,
    pub cwd: CString,
    /// Whether descriptor 0 is a terminal, to become the controlling one.
    pub tty: bool,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

impl BeforeExec for ChildSetup {
    fn run(&self) -> io::Result<()> {
        if let Some(procs) = &self.cgroup_procs {
            if nix::unistd::write(procs, b"0")? != 1 {
                return Err(io::Error::last_os_error());
            }
        }
        // SAFETY: this is the child before exec, which is what
        // `apply_as_root` is for.
        unsafe { self.isolation.apply_as_root() }?;
        // Mark every inherited descriptor close-on-exec: the process gets
        // its stdio and nothing of the agent's.
        // SAFETY: close_range takes plain integers and only sets a flag on
        // the process's own descriptors.
        unsafe {
            libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            )
        };
        nix::unistd::chdir(self.cwd.as_c_str())?;
        setsid()?;
        // SAFETY: TIOCSCTTY takes an int by value; descriptor 0 is the
        // terminal the process was given.
        if self.tty && unsafe { libc::ioctl(0, libc::TIOCSCTTY as _, 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: raw system calls on integers and on `groups`, which
        // outlives them; they change this process's credentials only.
        unsafe {
            sys(libc::syscall(
                libc::SYS_setgroups,
                self.groups.len(),
                self.groups.as_ptr(),
            ))?;
            sys(libc::syscall(libc::SYS_setgid, self.gid))?;
            sys(libc::syscall(libc::SYS_setuid, self.uid))?;
        }
        // SAFETY: as above, the child before exec.
        unsafe { self.isolation.apply_after_identity(self.uid) }
    }
}

/// A raw system call's result as an `io::Result`.
fn sys(ret: libc::c_long) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
