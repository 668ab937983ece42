//! Commands run in a running app at the host's request (`host-ctl exec`):
//! in the app's mount namespace, with its environment, user and cgroup, on
//! pipes or a terminal from the app's own devpts, reaped by the agent's one
//! reaper. What the host sends and receives is the RPC layer's business;
//! this is the command and its descriptors.

use std::os::fd::{AsRawFd, OwnedFd};

use kvmpod_api::layout;
use kvmpod_api::manifest::App;
use nix::pty::Winsize;

use super::isolation::{Enter, Isolation};
use super::spawn::Launch;
use super::start::Stdio3;
use super::stdio::{self, Launched};
use super::{pty, users, AppCgroup, Reaper, SpawnError};
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
    let identity = users::resolve_app(&root, app)?;
    let launch = Launch::new(app, &root, identity, argv, env)?;
    let procs = running.cgroup.and_then(|cg| cg.procs_fd().ok());
    // Joined by the child: held open until it has been spawned.
    let ns = running
        .namespace
        .ok_or_else(|| SpawnError::NotRunning(app.name.clone()))?;
    let isolation = Isolation::for_app(app, Enter::Join { ns: ns.as_raw_fd() });
    match io {
        ExecIo::Pipes { stdin } => {
            let spawn = launch.prepare_spawn(Stdio3::Pipes { stdin }, procs, isolation)?;
            stdio::with_pipes(reaper, &launch.program, spawn, Some(OUTPUT_PIPE_SIZE))
        }
        ExecIo::Pty {
            master,
            slave,
            stdin,
        } => {
            stdio::nonblocking(&master)?;
            let spawn = launch.prepare_spawn(Stdio3::Pty(slave), procs, isolation)?;
            stdio::on_terminal(reaper, &launch.program, spawn, master, stdin)
        }
    }
}
