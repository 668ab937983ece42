//! A process's stdio on the agent's side, for apps and for commands run
//! in them alike: pipes, or the master side of a terminal, made
//! non-blocking and watched by tokio, with the one input and the outputs
//! they give.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::pty::Winsize;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::unix::pipe;
use tokio::sync::oneshot;

use super::error::exec_error;
use super::start::{Spawn, Started};
use super::{pty, Exit, Reaper, SpawnError};
use crate::error::Context;

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

    /// Resolves once a read may find something (or the end).
    pub async fn readable(&self) -> io::Result<()> {
        match self {
            Output::Pipe(p) => p.readable().await,
            // The guard goes without clearing the readiness: the read that
            // follows clears it if it finds nothing.
            Output::Pty(fd) => fd.readable().await.map(drop),
        }
    }

    /// Reads what is there into `buf`'s spare capacity, without waiting;
    /// 0 at end of file (a terminal's EIO once every slave is closed).
    pub fn try_read_buf(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        match self {
            Output::Pipe(p) => p.try_read_buf(buf),
            Output::Pty(fd) => match fd.try_io(Interest::READABLE, |m| read_spare(m, buf)) {
                Err(e) if e.raw_os_error() == Some(libc::EIO) => Ok(0),
                other => other,
            },
        }
    }
}

/// Reads into `buf`'s spare capacity and extends it by what was read.
fn read_spare(fd: &OwnedFd, buf: &mut Vec<u8>) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    // SAFETY: read writes at most `spare.len()` bytes into the spare
    // capacity, which `buf` owns and nothing else refers to.
    let n = unsafe { libc::read(fd.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    // SAFETY: the kernel initialised the first `n` bytes of the spare
    // capacity, and `n` is at most its length.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
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

/// Makes a terminal's master side non-blocking, as tokio needs it.
pub(super) fn nonblocking(master: &OwnedFd) -> Result<(), SpawnError> {
    let flags =
        fcntl(master, FcntlArg::F_GETFL).context(|| "reading the terminal's flags".into())?;
    fcntl(
        master,
        FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
    )
    .context(|| "making the terminal non-blocking".into())?;
    Ok(())
}

/// Spawns a process (its errors name `program`) whose stdio are pipes;
/// its output pipes get `pipe_size` bytes when given.
pub(super) fn with_pipes(
    reaper: &Reaper,
    program: &str,
    spawn: Spawn,
    pipe_size: Option<i32>,
) -> Result<Launched, SpawnError> {
    let (mut child, exit) = reaper
        .spawn(|| spawn.start())
        .map_err(|e| exec_error(program, &e))?;
    match watch_pipes(&mut child, pipe_size) {
        Ok((input, outputs)) => Ok(Launched {
            pid: child.pid,
            exit,
            outputs,
            input,
            terminal: None,
        }),
        Err(e) => {
            // Nobody could read it or write to it: it must not run on
            // untracked (the reaper collects it).
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            Err(e)
        }
    }
}

/// The child's pipes, watched by tokio.
fn watch_pipes(
    child: &mut Started,
    pipe_size: Option<i32>,
) -> Result<(Input, Vec<(Which, Output)>), SpawnError> {
    let input = match child.stdin.take() {
        Some(s) => Input::Pipe(
            pipe::Sender::from_owned_fd(s).context(|| "watching the command's stdin".into())?,
        ),
        None => Input::None,
    };
    let mut outputs = Vec::new();
    for (which, out) in [
        (Which::Stdout, child.stdout.take()),
        (Which::Stderr, child.stderr.take()),
    ] {
        if let Some(fd) = out {
            if let Some(size) = pipe_size {
                // Best effort: a larger pipe lets the command write on
                // while the agent sends, and lets the agent read more at
                // once.
                let _ = fcntl(&fd, FcntlArg::F_SETPIPE_SZ(size));
            }
            let rx = pipe::Receiver::from_owned_fd(fd)
                .context(|| "watching the command's output".into())?;
            outputs.push((which, Output::Pipe(rx)));
        }
    }
    Ok((input, outputs))
}

/// Spawns a process on the terminal whose master side is `master`.
pub(super) fn on_terminal(
    reaper: &Reaper,
    program: &str,
    spawn: Spawn,
    master: OwnedFd,
    stdin: bool,
) -> Result<Launched, SpawnError> {
    // Watched before the command starts, so no failure leaves it running
    // untracked.
    // SAFETY: an OwnedFd stays open, and names the same file, for as long
    // as the AsyncFd owns it.
    let master = unsafe { AsyncFd::register(master) }
        .map_err(|e| e.into_parts().1)
        .context(|| "watching the terminal".into())?;
    let master = Arc::new(master);
    // Starting it closes the agent's copy of the terminal's slave side,
    // without which the master would never see the process's end.
    let (child, exit) = reaper
        .spawn(|| spawn.start())
        .map_err(|e| exec_error(program, &e))?;
    Ok(Launched {
        pid: child.pid,
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
