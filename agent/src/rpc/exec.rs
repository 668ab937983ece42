//! The `Exec` stream (`host-ctl exec`): the host's first message says what
//! to run in which app; then its input (stdin, window sizes, signals) goes
//! to the command and the command's output comes back, and last its exit,
//! sent only after its last output byte.

use std::sync::Arc;
use std::time::Duration;

use kvmpod_api::protocol::{self as pb, exec_input, exec_output};
use nix::pty::Winsize;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::sync::mpsc;
use ttrpc::r#async::{SSReceiver, SSSender, ServerStream};

use super::RpcError;
use crate::pod::{AppRecord, Pod};
use crate::process::{
    launch_exec, signal_group, ExecIo, Exit, Input, Launched, Output, Running, SpawnError,
    Terminal, Which,
};

/// The most arguments plus environment bytes a command may have.
const MAX_COMMAND_BYTES: usize = 256 * 1024;
/// How long output may still arrive after the command exited.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// Checks a signal number from the host: 1 to 64.
pub(super) fn valid_signal(n: i32) -> Result<i32, RpcError> {
    if (1..=64).contains(&n) {
        Ok(n)
    } else {
        Err(RpcError::BadSignal(n))
    }
}

/// Checks an `ExecStart` before anything runs.
fn check_start(pod: &Pod, start: &pb::ExecStart) -> Result<Arc<AppRecord>, RpcError> {
    let app = pod
        .app(&start.app)
        .cloned()
        .ok_or_else(|| RpcError::UnknownApp {
            app: start.app.clone(),
            known: None,
        })?;
    if start.argv.first().is_none_or(String::is_empty) {
        return Err(RpcError::NoCommand);
    }
    let size: usize = start.argv.iter().map(String::len).sum::<usize>()
        + start
            .env
            .iter()
            .map(|e| e.name.len() + e.value.len())
            .sum::<usize>();
    if size > MAX_COMMAND_BYTES {
        return Err(RpcError::CommandTooLarge(size, MAX_COMMAND_BYTES));
    }
    if start
        .env
        .iter()
        .any(|e| e.name.is_empty() || e.name.contains('='))
    {
        return Err(RpcError::BadVariableName);
    }
    if pod.is_stopping() {
        return Err(RpcError::Stopping);
    }
    if app.running_pid().is_none() {
        return Err(RpcError::NotRunning(start.app.clone()));
    }
    Ok(app)
}

/// Serves one `Exec` stream.
pub(super) async fn serve(
    pod: Arc<Pod>,
    stream: ServerStream<pb::ExecOutput, pb::ExecInput>,
) -> ttrpc::Result<()> {
    let (tx, mut rx) = stream.split();
    let start = match rx.recv().await? {
        Some(pb::ExecInput {
            kind: Some(exec_input::Kind::Start(start)),
            ..
        }) => start,
        _ => return Err(RpcError::ExecWithoutStart.into()),
    };
    let app = check_start(&pod, &start)?;
    let launched = match start_command(&pod, &app, &start) {
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

    let status = exit.await.unwrap_or(Exit {
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

/// Starts the command `start` asks for in `app`: its terminal or pipes
/// first, then the process.
fn start_command(
    pod: &Pod,
    app: &AppRecord,
    start: &pb::ExecStart,
) -> Result<Launched, SpawnError> {
    let size = start.size.as_ref().map(winsize);
    let io = ExecIo::new(app.name(), start.tty, start.stdin, size)?;
    let env: Vec<(String, String)> = start
        .env
        .iter()
        .map(|e| (e.name.clone(), e.value.clone()))
        .collect();
    let running = Running {
        app: &app.manifest,
        cgroup: app.cgroup.get(),
        namespace: app.namespace(),
    };
    launch_exec(&pod.reaper, running, &start.argv, &env, io)
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

fn winsize(s: &pb::WindowSize) -> Winsize {
    Winsize {
        ws_row: s.rows.min(u16::MAX as u32) as u16,
        ws_col: s.cols.min(u16::MAX as u32) as u16,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

/// Copies one output of the command to the host until end of file.
async fn pump(mut out: Output, which: Which, tx: SSSender<pb::ExecOutput>) {
    let mut buf = vec![0u8; 16 * 1024];
    let (tx_data, mut rx_data) = mpsc::channel::<Vec<u8>>(4);
    let reader = async move {
        loop {
            match out.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx_data.send(buf[..n].to_vec()).await.is_err() {
                        return;
                    }
                }
            }
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

/// Feeds the host's input to the command: stdin, window sizes, signals. A
/// host that goes away takes its command along (SIGKILL to its group).
async fn feed(
    mut rx: SSReceiver<pb::ExecInput>,
    mut input: Input,
    terminal: Option<Terminal>,
    pid: i32,
) {
    loop {
        match rx.recv().await {
            Ok(Some(msg)) => match msg.kind {
                Some(exec_input::Kind::Stdin(data)) => input.write(&data).await,
                Some(exec_input::Kind::CloseStdin(_)) => input.close().await,
                Some(exec_input::Kind::Resize(size)) => {
                    if let Some(t) = &terminal {
                        let _ = t.resize(&winsize(&size));
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
