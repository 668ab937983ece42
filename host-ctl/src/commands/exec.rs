//! `host-ctl exec [-i] [-t] <pod> <app> -- cmd...`: runs a command in an
//! app's root, with the app's environment and user. stdin (with `-i`),
//! stdout and stderr travel on an io stream of their own (one vsock
//! connection per exec); `-t` gives it a terminal that follows this one's
//! size. host-ctl exits with the command's status.

use std::future::Future;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::Path;

use anyhow::{anyhow, bail, Result};
use futures_util::future::OptionFuture;
use kvmpod_api::iostream::{ExecRequest, Input, Output, Request, WindowSize};

use crate::launch::image_run::env_vars;
use tokio::io::AsyncRead;
use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinHandle;

use crate::agent::iostream::{self, InputSender, OutputReceiver, Pumped};
use crate::agent::Endpoint;
use crate::pod::{State, StoredPod};
use crate::ui::detach_keys::DetachKeys;
use crate::ui::terminal::{self, RawMode};

pub struct Options {
    pub app: String,
    pub argv: Vec<String>,
    /// `-e K=V` (or `-e K`: this host's value).
    pub env: Vec<String>,
    pub interactive: bool,
    pub tty: bool,
    /// `-u USER[:GROUP]`.
    pub user: Option<String>,
    /// `-w DIR`.
    pub workdir: Option<String>,
    /// `--detach-keys`: with `-i -t` on a terminal, they leave the command
    /// running.
    pub detach_keys: String,
}

/// The status host-ctl exits with when its stdout is closed (as a process
/// killed by SIGPIPE); the command goes with the connection.
const BROKEN_STDOUT: i32 = 128 + libc::SIGPIPE;

/// Where a running pod's agent is reached.
pub(super) fn agent_endpoint(pod: &StoredPod) -> Result<&Endpoint> {
    if pod.record.state != State::Running {
        bail!("pod {} is {}", pod.record.id, pod.record.describe_state());
    }
    pod.record
        .endpoint
        .as_ref()
        .ok_or_else(|| anyhow!("pod {} has no vsock endpoint", pod.record.id))
}

/// This terminal's size, if stdout or stdin is one.
pub(super) fn window() -> Option<WindowSize> {
    terminal::size().map(|(rows, cols)| WindowSize { rows, cols })
}

/// Keeps the remote terminal's size in step with this one.
pub(super) async fn follow_resizes<S: tokio::io::AsyncWrite>(tx: InputSender<S>) {
    let Ok(mut winch) = signal(SignalKind::window_change()) else {
        return;
    };
    while winch.recv().await.is_some() {
        if let Some(w) = window() {
            if tx.send(Input::Resize(w)).await.is_err() {
                return;
            }
        }
    }
}

/// Without a terminal, Ctrl-C and SIGTERM are passed on to the command.
async fn forward_signals<S: tokio::io::AsyncWrite>(tx: InputSender<S>) {
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    loop {
        let n = tokio::select! {
            _ = int.recv() => libc::SIGINT,
            _ = term.recv() => libc::SIGTERM,
        };
        if tx.send(Input::Signal(n)).await.is_err() {
            return;
        }
    }
}

fn put(mut w: impl Write, data: &[u8]) -> std::io::Result<()> {
    w.write_all(data)?;
    w.flush()
}

/// Prints the session's output until its exit frame; its status. `what`
/// names the session in errors ("exec", "attach").
pub(super) async fn print_output<S: AsyncRead>(
    rx: &mut OutputReceiver<S>,
    what: &str,
) -> Result<i32> {
    loop {
        match rx.next().await {
            Ok(Some((Output::Stdout(_), data))) => {
                if put(std::io::stdout().lock(), data).is_err() {
                    return Ok(BROKEN_STDOUT);
                }
            }
            Ok(Some((Output::Stderr(_), data))) => {
                let _ = put(std::io::stderr().lock(), data);
            }
            Ok(Some((Output::Exit(x), _))) => return Ok(x.code),
            Ok(None) => bail!("{what}: the agent closed the connection before the exit status"),
            Err(e) => bail!("{what}: {e}"),
        }
    }
}

/// Prints the session's output until its exit status (`Some`), or until
/// the detach keys end `pump` or `leave` resolves (`None`: the session is
/// left). A pump that ends at stdin's end leaves the session to the
/// output's end. The pump is stopped either way.
pub(super) async fn output_until_detached<S: AsyncRead>(
    rx: &mut OutputReceiver<S>,
    what: &str,
    mut pump: Option<JoinHandle<Pumped>>,
    leave: impl Future<Output = ()>,
) -> Option<Result<i32>> {
    let mut pumping = pump.is_some();
    let output = print_output(rx, what);
    tokio::pin!(output, leave);
    let ended = loop {
        tokio::select! {
            status = &mut output => break Some(status),
            () = &mut leave => break None,
            pumped = OptionFuture::from(pump.as_mut()), if pumping => {
                if matches!(pumped, Some(Ok(Pumped::Detached))) {
                    break None;
                }
                pumping = false;
            }
        }
    };
    if let Some(p) = pump {
        p.abort();
    }
    ended
}

pub async fn run(state_dir: &Path, id: &str, o: Options) -> Result<i32> {
    let keys = DetachKeys::parse(&o.detach_keys).map_err(|e| anyhow!("--detach-keys: {e}"))?;
    let pod = StoredPod::open(state_dir, id)?;
    let (user, group) = match o.user.as_deref() {
        Some(spec) => match spec.split_once(':') {
            Some((u, g)) => (Some(u), Some(g)),
            None => (Some(spec), None),
        },
        None => (None, None),
    };
    let request = Request::Exec(ExecRequest {
        app: o.app,
        argv: o.argv,
        env: env_vars(&o.env, o.tty),
        tty: o.tty,
        interactive: o.interactive,
        size: if o.tty { window() } else { None },
        user: user.map(str::to_string),
        group: group.map(str::to_string),
        working_directory: o.workdir,
    });
    let (tx, mut rx) = iostream::open(agent_endpoint(&pod)?, &request)
        .await
        .map_err(|e| anyhow!("exec: {e}"))?;

    let typed = o.tty && o.interactive && terminal::is_terminal(std::io::stdin().as_fd());
    let raw = typed.then(RawMode::enter).flatten();
    let mut tasks = Vec::new();
    // On a terminal, the detach keys end the pump: the command runs on.
    let mut detacher = None;
    if o.interactive {
        let tx = tx.clone();
        match keys.filter(|_| typed) {
            Some(keys) => {
                detacher = Some(tokio::spawn(async move {
                    tx.pump_stdin_until(tokio::io::stdin(), true, keys).await
                }));
            }
            None => tasks.push(tokio::spawn(async move {
                tx.pump_stdin(tokio::io::stdin(), true).await;
            })),
        }
    }
    if o.tty {
        tasks.push(tokio::spawn(follow_resizes(tx.clone())));
    } else {
        tasks.push(tokio::spawn(forward_signals(tx.clone())));
    }
    let result = output_until_detached(&mut rx, "exec", detacher, std::future::pending()).await;
    for t in tasks {
        t.abort();
    }
    match result {
        Some(status) => status,
        None => {
            // The agent lets the command run on once told; then the
            // connection goes.
            let told = tx.send(Input::Detach).await;
            drop(raw);
            told.map_err(|e| anyhow!("exec: detaching: {e}"))?;
            eprintln!("host-ctl: detached; the command keeps running");
            Ok(0)
        }
    }
}
