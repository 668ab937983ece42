//! Commands run in a running app at the host's request (`host-ctl exec`):
//! in the app's mount namespace, with its environment, user and cgroup, on
//! pipes or a terminal from the app's own devpts, reaped by the agent's one
//! reaper. What the host sends and receives is the RPC layer's business;
//! this is the command and its descriptors.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::Child;
use std::sync::Arc;

use kvmpod_api::layout;
use kvmpod_api::manifest::App;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::pty::Winsize;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::oneshot;

use super::error::exec_error;
use super::isolation::{Enter, Isolation};
use super::spawn::{Launch, Stdio3};
use super::{pty, users, AppCgroup, Exit, Reaper, SpawnError};
use crate::error::Context;
use crate::storage::open_root;

/// The capacity asked for the pipes of a command's stdout and stderr (the
/// default is 64 KiB): what it may write ahead of the host.
const OUTPUT_PIPE_SIZE: i32 = 1 << 20;

/// The command's descriptors on the agent's side, chosen before anything
/// starts.
pub enum ExecIo {
    Pipes {
        stdin: bool,
    },
    Pty {
        master: OwnedFd,
        slave: OwnedFd,
        /// Whether the host feeds the terminal's input.
        stdin: bool,
    },
}

impl ExecIo {
    /// Pipes, or (with `tty`) a terminal of app `app`, sized `size`.
    pub fn new(
        app: &str,
        tty: bool,
        stdin: bool,
        size: Option<Winsize>,
    ) -> Result<Self, SpawnError> {
        if !tty {
            return Ok(ExecIo::Pipes { stdin });
        }
        let root = open_root(&layout::app_rootfs(app)).map_err(SpawnError::Root)?;
        let pty = pty::open_in_app(&root, size.as_ref())?;
        Ok(ExecIo::Pty {
            master: pty.master,
            slave: pty.slave,
            stdin,
        })
    }
}

/// The running app a command joins.
pub struct Running<'a> {
    pub app: &'a App,
    pub cgroup: Option<&'a AppCgroup>,
    /// Its mount namespace; None once it has exited.
    pub namespace: Option<OwnedFd>,
}

/// Where the host's input goes.
pub enum Input {
    None,
    Pipe(pipe::Sender),
    Pty(Arc<AsyncFd<OwnedFd>>),
}

impl Input {
    /// Writes all of `data`. A command that no longer reads its input
    /// gets no more.
    pub async fn write(&mut self, data: &[u8]) {
        let written = match self {
            Input::Pipe(p) => p.write_all(data).await,
            Input::Pty(fd) => write_fd(fd, data).await,
            Input::None => Ok(()),
        };
        if written.is_err() {
            *self = Input::None;
        }
    }

    /// Ends the input: a pipe is closed; a terminal has no end of file, so
    /// it gets ^D, which is how one says it there.
    pub async fn close(&mut self) {
        if let Input::Pty(fd) = self {
            let _ = write_fd(fd, b"\x04").await;
        }
        *self = Input::None;
    }
}

/// A readable output of the command.
pub enum Output {
    Pipe(pipe::Receiver),
    Pty(Arc<AsyncFd<OwnedFd>>),
}

impl Output {
    /// Reads what is there; 0 at end of file. A terminal reports EIO once
    /// every slave is closed.
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Output::Pipe(p) => p.read(buf).await,
            Output::Pty(fd) => read_fd(fd, buf).await,
        }
    }
}

/// Which of the command's outputs.
#[derive(Debug, Clone, Copy)]
pub enum Which {
    Stdout,
    Stderr,
}

/// The terminal's master side, for window size changes.
pub struct Terminal(Arc<AsyncFd<OwnedFd>>);

impl Terminal {
    /// Sets the window size; the command gets SIGWINCH.
    pub fn resize(&self, size: &Winsize) -> Result<(), nix::errno::Errno> {
        pty::set_size(self.0.get_ref(), size)
    }
}

/// A started command.
pub struct Launched {
    pub pid: i32,
    pub exit: oneshot::Receiver<Exit>,
    pub outputs: Vec<(Which, Output)>,
    pub input: Input,
    pub terminal: Option<Terminal>,
}

/// Starts `argv`, with `env` added to the app's environment, in the
/// running app; errors carry the exit status a shell would give.
pub fn launch(
    reaper: &Reaper,
    running: Running<'_>,
    argv: &[String],
    env: &[(String, String)],
    io: ExecIo,
) -> Result<Launched, SpawnError> {
    let app = running.app;
    let root = open_root(&layout::app_rootfs(&app.name)).map_err(SpawnError::Root)?;
    let identity = users::resolve(&root, app.user.as_deref(), app.group.as_deref())?;
    let launch = Launch::new(app, &root, identity, argv, env)?;
    let procs = running.cgroup.and_then(|cg| cg.procs_fd().ok());
    // Joined by the child: held open until it has been spawned.
    let ns = running
        .namespace
        .ok_or_else(|| SpawnError::NotRunning(app.name.clone()))?;
    let isolation = Isolation::for_app(app, Enter::Join { ns: ns.as_raw_fd() });
    match io {
        ExecIo::Pipes { stdin } => {
            let command = launch.command(Stdio3::Pipes { stdin }, procs, isolation)?;
            with_pipes(reaper, &launch, command)
        }
        ExecIo::Pty {
            master,
            slave,
            stdin,
        } => {
            let flags = fcntl(&master, FcntlArg::F_GETFL)
                .context(|| "reading the terminal's flags".into())?;
            fcntl(
                &master,
                FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
            )
            .context(|| "making the terminal non-blocking".into())?;
            let command = launch.command(Stdio3::Pty(slave), procs, isolation)?;
            on_terminal(reaper, &launch, command, master, stdin)
        }
    }
}

/// Spawns a command whose stdio are pipes.
fn with_pipes(
    reaper: &Reaper,
    launch: &Launch,
    mut command: std::process::Command,
) -> Result<Launched, SpawnError> {
    let (mut child, exit) = reaper
        .spawn(&mut command)
        .map_err(|e| exec_error(&launch.program, &e))?;
    let input = match child.stdin.take() {
        Some(s) => Input::Pipe(
            pipe::Sender::from_owned_fd(OwnedFd::from(s))
                .context(|| "watching the command's stdin".into())?,
        ),
        None => Input::None,
    };
    let mut outputs = Vec::new();
    for (which, out) in [
        (Which::Stdout, child.stdout.take().map(OwnedFd::from)),
        (Which::Stderr, child.stderr.take().map(OwnedFd::from)),
    ] {
        if let Some(fd) = out {
            // Best effort: a larger pipe lets the command write on while
            // the agent sends, and lets the agent read more at once.
            let _ = fcntl(&fd, FcntlArg::F_SETPIPE_SZ(OUTPUT_PIPE_SIZE));
            let rx = pipe::Receiver::from_owned_fd(fd)
                .context(|| "watching the command's output".into())?;
            outputs.push((which, Output::Pipe(rx)));
        }
    }
    Ok(Launched {
        pid: pid(&child),
        exit,
        outputs,
        input,
        terminal: None,
    })
}

/// Spawns a command on the terminal whose master side is `master`.
fn on_terminal(
    reaper: &Reaper,
    launch: &Launch,
    mut command: std::process::Command,
    master: OwnedFd,
    stdin: bool,
) -> Result<Launched, SpawnError> {
    let (child, exit) = reaper
        .spawn(&mut command)
        .map_err(|e| exec_error(&launch.program, &e))?;
    // The parent's copies of the terminal's slave side must go, or the
    // master never sees the command's end.
    drop(command);
    // SAFETY: an OwnedFd stays open, and names the same file, for as long
    // as the AsyncFd owns it.
    let master = unsafe { AsyncFd::register(master) }
        .map_err(|e| e.into_parts().1)
        .context(|| "watching the terminal".into())?;
    let master = Arc::new(master);
    Ok(Launched {
        pid: pid(&child),
        exit,
        outputs: vec![(Which::Stdout, Output::Pty(Arc::clone(&master)))],
        input: if stdin {
            Input::Pty(Arc::clone(&master))
        } else {
            Input::None
        },
        terminal: Some(Terminal(master)),
    })
}

fn pid(child: &Child) -> i32 {
    child.id() as i32
}

async fn read_fd(fd: &AsyncFd<OwnedFd>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        let mut guard = fd.readable().await?;
        match guard.try_io(|inner| {
            nix::unistd::read(inner.get_ref().as_fd(), buf).map_err(io::Error::from)
        }) {
            Ok(result) => return result,
            Err(_would_block) => continue,
        }
    }
}

async fn write_fd(fd: &AsyncFd<OwnedFd>, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        let mut guard = fd.writable().await?;
        match guard
            .try_io(|inner| nix::unistd::write(inner.get_ref(), data).map_err(io::Error::from))
        {
            Ok(Ok(n)) => data = &data[n..],
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
    Ok(())
}
