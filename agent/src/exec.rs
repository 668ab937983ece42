//! Commands run in an app's root at the host's request (`host-ctl exec`):
//! with the app's environment, user and cgroup, on pipes or a
//! pseudo-terminal, reaped by the agent's one reaper. Their exit is sent
//! only after their last output byte.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use kvmpod_api::layout;
use kvmpod_api::protocol::{self as pb, exec_input, exec_output};
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::pty::Winsize;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::mpsc;
use ttrpc::r#async::{SSReceiver, SSSender, ServerStream};

use crate::isolation::{Enter, Isolation};
use crate::pod::{AppRecord, Pod};
use crate::resolve::open_root;
use crate::spawn::{exec_error, Launch, SpawnError, Stdio3, EXIT_SETUP_FAILED};
use crate::{pty, users};

/// The most arguments plus environment bytes a command may have.
const MAX_COMMAND_BYTES: usize = 256 * 1024;
/// How long output may still arrive after the command exited.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

fn rpc_error(code: ttrpc::Code, message: impl Into<String>) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, message.into()))
}

/// Checks a signal number from the host: 1 to 64.
pub fn valid_signal(n: i32) -> ttrpc::Result<i32> {
    if (1..=64).contains(&n) {
        Ok(n)
    } else {
        Err(rpc_error(
            ttrpc::Code::INVALID_ARGUMENT,
            format!("{n} is not a signal number (1 to 64)"),
        ))
    }
}

/// Sends signal `n` (already checked) to the process group led by `pid`.
/// Realtime signals have no `nix::Signal`, hence the raw call.
pub fn signal_group(pid: i32, n: i32) {
    // SAFETY: kill(2) with plain integers.
    unsafe {
        libc::kill(-pid, n);
    }
}

/// Checks an `ExecStart` before anything runs.
fn check_start(pod: &Pod, start: &pb::ExecStart) -> ttrpc::Result<Arc<AppRecord>> {
    let app = pod.app(&start.app).cloned().ok_or_else(|| {
        rpc_error(
            ttrpc::Code::NOT_FOUND,
            format!("no app named {:?} in this pod", start.app),
        )
    })?;
    if start.argv.is_empty() || start.argv[0].is_empty() {
        return Err(rpc_error(
            ttrpc::Code::INVALID_ARGUMENT,
            "exec needs a command",
        ));
    }
    let size: usize = start.argv.iter().map(String::len).sum::<usize>()
        + start
            .env
            .iter()
            .map(|e| e.name.len() + e.value.len())
            .sum::<usize>();
    if size > MAX_COMMAND_BYTES {
        return Err(rpc_error(
            ttrpc::Code::INVALID_ARGUMENT,
            format!("the command and its environment are {size} bytes; at most {MAX_COMMAND_BYTES} are accepted"),
        ));
    }
    if start
        .env
        .iter()
        .any(|e| e.name.is_empty() || e.name.contains('='))
    {
        return Err(rpc_error(
            ttrpc::Code::INVALID_ARGUMENT,
            "invalid environment variable name",
        ));
    }
    if pod.is_stopping() {
        return Err(rpc_error(
            ttrpc::Code::FAILED_PRECONDITION,
            "the pod is stopping",
        ));
    }
    if app.running_pid().is_none() {
        return Err(rpc_error(
            ttrpc::Code::FAILED_PRECONDITION,
            format!("app {:?} is not running", start.app),
        ));
    }
    Ok(app)
}

/// Serves one `Exec` stream.
pub async fn serve(
    pod: Arc<Pod>,
    stream: ServerStream<pb::ExecOutput, pb::ExecInput>,
) -> ttrpc::Result<()> {
    let (tx, mut rx) = stream.split();
    let start = match rx.recv().await? {
        Some(pb::ExecInput {
            kind: Some(exec_input::Kind::Start(start)),
            ..
        }) => start,
        _ => {
            return Err(rpc_error(
                ttrpc::Code::INVALID_ARGUMENT,
                "the first message of an exec must say what to start",
            ))
        }
    };
    let app = check_start(&pod, &start)?;
    let io = match Io::new(&start, &app) {
        Ok(io) => io,
        Err(e) => return finish_early(&tx, EXIT_SETUP_FAILED, &e).await,
    };
    let launched = match launch(&pod, &app, &start, io) {
        Ok(l) => l,
        Err(e) => return finish_early(&tx, e.exit_code(), &e.to_string()).await,
    };
    let Launched {
        pid,
        exit,
        outputs,
        input,
        terminal,
    } = launched;

    let pumps: Vec<_> = outputs
        .into_iter()
        .map(|(which, out)| tokio::spawn(pump(out, which, tx.clone())))
        .collect();
    let inputs = tokio::spawn(feed(rx, input, terminal, pid));

    let status = exit.await.unwrap_or(crate::reaper::Exit {
        code: 137,
        signal: 9,
    });
    let _ = tokio::time::timeout(DRAIN_AFTER_EXIT, async {
        for p in pumps {
            let _ = p.await;
        }
    })
    .await;
    inputs.abort();
    let mut done = pb::ExecExit::new();
    done.exit_code = status.code;
    done.signal = status.signal;
    let mut msg = pb::ExecOutput::new();
    msg.kind = Some(exec_output::Kind::Exit(done));
    let _ = tx.send(&msg).await;
    Ok(())
}

/// Reports a command that could not start as a shell would: a message on
/// stderr and status 125, 126 or 127.
async fn finish_early(
    tx: &SSSender<pb::ExecOutput>,
    code: i32,
    message: &str,
) -> ttrpc::Result<()> {
    let mut err = pb::ExecOutput::new();
    err.kind = Some(exec_output::Kind::Stderr(
        format!("kvmpod-agent: {message}\n").into_bytes(),
    ));
    let _ = tx.send(&err).await;
    let mut done = pb::ExecExit::new();
    done.exit_code = code;
    let mut msg = pb::ExecOutput::new();
    msg.kind = Some(exec_output::Kind::Exit(done));
    tx.send(&msg).await
}

/// The command's descriptors, on the agent's side.
enum Io {
    Pipes { stdin: bool },
    Pty { master: OwnedFd, slave: OwnedFd },
}

impl Io {
    fn new(start: &pb::ExecStart, app: &AppRecord) -> Result<Io, String> {
        if !start.tty {
            return Ok(Io::Pipes { stdin: start.stdin });
        }
        let size = start.size.as_ref().map(winsize);
        let root = open_root(&layout::app_rootfs(app.name())).map_err(|e| e.to_string())?;
        let pty = pty::open_in_app(&root, size.as_ref())
            .map_err(|e| format!("allocating a terminal: {e}"))?;
        Ok(Io::Pty {
            master: pty.master,
            slave: pty.slave,
        })
    }
}

fn winsize(s: &pb::WindowSize) -> Winsize {
    Winsize {
        ws_row: s.rows.min(u16::MAX as u32) as u16,
        ws_col: s.cols.min(u16::MAX as u32) as u16,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

/// Where stdin goes.
enum Input {
    None,
    Pipe(pipe::Sender),
    Pty(Arc<AsyncFd<OwnedFd>>),
}

/// A readable output of the command.
enum Output {
    Pipe(pipe::Receiver),
    Pty(Arc<AsyncFd<OwnedFd>>),
}

#[derive(Clone, Copy)]
enum Which {
    Stdout,
    Stderr,
}

struct Launched {
    pid: i32,
    exit: tokio::sync::oneshot::Receiver<crate::reaper::Exit>,
    outputs: Vec<(Which, Output)>,
    input: Input,
    /// The terminal's master side, for window size changes.
    terminal: Option<Arc<AsyncFd<OwnedFd>>>,
}

fn launch(
    pod: &Pod,
    app: &AppRecord,
    start: &pb::ExecStart,
    io: Io,
) -> Result<Launched, SpawnError> {
    let root_path = layout::app_rootfs(app.name());
    let root = open_root(&root_path).map_err(|e| SpawnError::Setup(e.to_string()))?;
    let identity = users::resolve(
        &root,
        app.manifest.user.as_deref(),
        app.manifest.group.as_deref(),
    )
    .map_err(|e| SpawnError::Setup(e.to_string()))?;
    let env: Vec<(String, String)> = start
        .env
        .iter()
        .map(|e| (e.name.clone(), e.value.clone()))
        .collect();
    let launch = Launch::new(&app.manifest, &root, identity, &start.argv, &env)?;
    let procs = app.cgroup.get().and_then(|cg| cg.procs_fd().ok());
    // Joined by the child: held open until it has been spawned.
    let ns = app
        .namespace()
        .ok_or_else(|| SpawnError::Setup(format!("app {:?} is not running", app.name())))?;
    let isolation = Isolation::for_app(&app.manifest, Enter::Join { ns: ns.as_raw_fd() });
    let setup = |e: std::io::Error| SpawnError::Setup(e.to_string());
    match io {
        Io::Pipes { stdin } => {
            let mut prepared = launch.command(Stdio3::Pipes { stdin }, procs, isolation)?;
            let (mut child, exit) = pod
                .reaper
                .spawn(&mut prepared.command)
                .map_err(|e| exec_error(&launch.program, &e))?;
            let input = match child.stdin.take() {
                Some(s) => {
                    Input::Pipe(pipe::Sender::from_owned_fd(OwnedFd::from(s)).map_err(setup)?)
                }
                None => Input::None,
            };
            let mut outputs = Vec::new();
            if let Some(o) = child.stdout.take() {
                outputs.push((
                    Which::Stdout,
                    Output::Pipe(pipe::Receiver::from_owned_fd(OwnedFd::from(o)).map_err(setup)?),
                ));
            }
            if let Some(e) = child.stderr.take() {
                outputs.push((
                    Which::Stderr,
                    Output::Pipe(pipe::Receiver::from_owned_fd(OwnedFd::from(e)).map_err(setup)?),
                ));
            }
            Ok(Launched {
                pid: child.id() as i32,
                exit,
                outputs,
                input,
                terminal: None,
            })
        }
        Io::Pty { master, slave } => {
            let flags =
                fcntl(&master, FcntlArg::F_GETFL).map_err(|e| SpawnError::Setup(e.to_string()))?;
            fcntl(
                &master,
                FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
            )
            .map_err(|e| SpawnError::Setup(e.to_string()))?;
            let mut prepared = launch.command(Stdio3::Pty(slave), procs, isolation)?;
            let (child, exit) = pod
                .reaper
                .spawn(&mut prepared.command)
                .map_err(|e| exec_error(&launch.program, &e))?;
            // The parent's copies of the terminal's slave side must go, or
            // the master never sees the command's end.
            drop(prepared);
            // SAFETY: an OwnedFd stays open, and names the same file, for
            // as long as the AsyncFd owns it.
            let master = unsafe { AsyncFd::register(master) }
                .map_err(|e| SpawnError::Setup(format!("watching the terminal: {e}")))?;
            let master = Arc::new(master);
            Ok(Launched {
                pid: child.id() as i32,
                exit,
                outputs: vec![(Which::Stdout, Output::Pty(Arc::clone(&master)))],
                input: if start.stdin {
                    Input::Pty(Arc::clone(&master))
                } else {
                    Input::None
                },
                terminal: Some(master),
            })
        }
    }
}

/// Copies one output of the command to the host until end of file.
async fn pump(out: Output, which: Which, tx: SSSender<pb::ExecOutput>) {
    let mut buf = vec![0u8; 16 * 1024];
    let (tx_data, mut rx_data) = mpsc::channel::<Vec<u8>>(4);
    let reader = async move {
        match out {
            Output::Pipe(mut p) => loop {
                match p.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if tx_data.send(buf[..n].to_vec()).await.is_err() {
                            return;
                        }
                    }
                }
            },
            Output::Pty(fd) => loop {
                let n = match read_fd(&fd, &mut buf).await {
                    Ok(0) | Err(_) => return, // EIO: every slave is closed
                    Ok(n) => n,
                };
                if tx_data.send(buf[..n].to_vec()).await.is_err() {
                    return;
                }
            },
        }
    };
    let sender = async move {
        while let Some(data) = rx_data.recv().await {
            let mut msg = pb::ExecOutput::new();
            msg.kind = Some(match which {
                Which::Stdout => exec_output::Kind::Stdout(data),
                Which::Stderr => exec_output::Kind::Stderr(data),
            });
            if tx.send(&msg).await.is_err() {
                return;
            }
        }
    };
    tokio::join!(reader, sender);
}

async fn read_fd(fd: &AsyncFd<OwnedFd>, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        let mut guard = fd.readable().await?;
        match guard.try_io(|inner| {
            nix::unistd::read(inner.get_ref().as_fd(), buf).map_err(std::io::Error::from)
        }) {
            Ok(result) => return result,
            Err(_would_block) => continue,
        }
    }
}

async fn write_fd(fd: &AsyncFd<OwnedFd>, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        let mut guard = fd.writable().await?;
        match guard
            .try_io(|inner| nix::unistd::write(inner.get_ref(), data).map_err(std::io::Error::from))
        {
            Ok(Ok(n)) => data = &data[n..],
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
    Ok(())
}

/// Feeds the host's input to the command: stdin, window sizes, signals. A
/// host that goes away takes its command along (SIGKILL to its group).
async fn feed(
    mut rx: SSReceiver<pb::ExecInput>,
    mut input: Input,
    terminal: Option<Arc<AsyncFd<OwnedFd>>>,
    pid: i32,
) {
    loop {
        match rx.recv().await {
            Ok(Some(msg)) => match msg.kind {
                Some(exec_input::Kind::Stdin(data)) => {
                    let ok = match &mut input {
                        Input::Pipe(p) => p.write_all(&data).await.is_ok(),
                        Input::Pty(fd) => write_fd(fd, &data).await.is_ok(),
                        Input::None => true,
                    };
                    if !ok {
                        input = Input::None;
                    }
                }
                Some(exec_input::Kind::CloseStdin(_)) => {
                    if let Input::Pty(fd) = &input {
                        // A terminal has no end of file; ^D is how one says it.
                        let _ = write_fd(fd, b"\x04").await;
                    }
                    input = Input::None;
                }
                Some(exec_input::Kind::Resize(size)) => {
                    if let Some(fd) = &terminal {
                        let ws = winsize(&size);
                        // SAFETY: TIOCSWINSZ reads the winsize we pass.
                        unsafe {
                            libc::ioctl(fd.get_ref().as_raw_fd(), libc::TIOCSWINSZ, &ws);
                        }
                    }
                }
                Some(exec_input::Kind::Signal(n)) if valid_signal(n).is_ok() => {
                    signal_group(pid, n);
                }
                _ => {}
            },
            // The host closed its side: no more input, the command goes on.
            Ok(None) => return,
            Err(_) => {
                let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
                return;
            }
        }
    }
}
