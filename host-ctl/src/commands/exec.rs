//! `host-ctl exec [-i] [-t] <pod> <app> -- cmd...`: runs a command in an
//! app's root, with the app's environment and user. stdin (with `-i`),
//! stdout and stderr are streamed; `-t` gives it a terminal that follows
//! this one's size. host-ctl exits with the command's status.

use std::io::Write;
use std::os::fd::AsFd;
use std::path::Path;

use anyhow::{anyhow, Result};
use kvmpod_api::protocol::{exec_input, exec_output, ExecInput, ExecStart, WindowSize};
use tokio::signal::unix::{signal, SignalKind};
use ttrpc::r#async::CSSender;

use crate::agent;
use crate::pod::StoredPod;
use crate::ui::terminal::{self, RawMode};

pub struct Options {
    pub app: String,
    pub argv: Vec<String>,
    pub interactive: bool,
    pub tty: bool,
}

fn input(kind: exec_input::Kind) -> ExecInput {
    let mut m = ExecInput::new();
    m.kind = Some(kind);
    m
}

fn window() -> Option<WindowSize> {
    terminal::size().map(|(rows, cols)| {
        let mut w = WindowSize::new();
        w.rows = rows.into();
        w.cols = cols.into();
        w
    })
}

/// Copies this process's stdin to the command; end of file closes its stdin.
async fn feed_stdin(tx: CSSender<ExecInput>) {
    agent::stdin::pump(
        tx,
        |data| input(exec_input::Kind::Stdin(data)),
        || input(exec_input::Kind::CloseStdin(true)),
    )
    .await;
}

/// Keeps the remote terminal's size in step with this one.
async fn follow_resizes(tx: CSSender<ExecInput>) {
    let Ok(mut winch) = signal(SignalKind::window_change()) else {
        return;
    };
    while winch.recv().await.is_some() {
        if let Some(w) = window() {
            if tx.send(&input(exec_input::Kind::Resize(w))).await.is_err() {
                return;
            }
        }
    }
}

/// Without a terminal, Ctrl-C and SIGTERM are passed on to the command.
async fn forward_signals(tx: CSSender<ExecInput>) {
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
        if tx.send(&input(exec_input::Kind::Signal(n))).await.is_err() {
            return;
        }
    }
}

pub async fn run(state_dir: &Path, id: &str, o: Options) -> Result<i32> {
    let pod = StoredPod::open(state_dir, id)?;
    let client = pod.client().await?;
    let stream = client
        .exec(agent::no_deadline())
        .await
        .map_err(|e| anyhow!("starting exec: {e}"))?;
    let (tx, mut rx) = stream.split();
    let mut start = ExecStart::new();
    start.app = o.app.clone();
    start.argv = o.argv.clone();
    start.tty = o.tty;
    start.stdin = o.interactive;
    if o.tty {
        start.size = window().into();
    }
    tx.send(&input(exec_input::Kind::Start(start)))
        .await
        .map_err(|e| anyhow!("starting exec: {e}"))?;

    let _raw = (o.tty && o.interactive && terminal::is_terminal(std::io::stdin().as_fd()))
        .then(RawMode::enter)
        .flatten();
    let mut tasks = Vec::new();
    if o.interactive {
        tasks.push(tokio::spawn(feed_stdin(tx.clone())));
    }
    if o.tty {
        tasks.push(tokio::spawn(follow_resizes(tx.clone())));
    } else {
        tasks.push(tokio::spawn(forward_signals(tx.clone())));
    }

    let result = loop {
        let msg = match rx.recv().await {
            Ok(m) => m,
            Err(ttrpc::Error::RpcStatus(s)) => break Err(anyhow!("exec: {}", s.message())),
            Err(e) => break Err(anyhow!("exec: the connection to the agent ended: {e}")),
        };
        match msg.kind {
            Some(exec_output::Kind::Stdout(d)) => {
                let mut o = std::io::stdout().lock();
                let _ = o.write_all(&d);
                let _ = o.flush();
            }
            Some(exec_output::Kind::Stderr(d)) => {
                let mut e = std::io::stderr().lock();
                let _ = e.write_all(&d);
                let _ = e.flush();
            }
            Some(exec_output::Kind::Exit(x)) => break Ok(x.exit_code),
            _ => {}
        }
    };
    for t in tasks {
        t.abort();
    }
    result
}
