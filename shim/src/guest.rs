//! The shim's own io streams to a pod's agent (host-ctl's client, port
//! 1027): an attach session that feeds the app's stdin and sizes its
//! terminal, and one session per exec, whose output frames go to the
//! exec's FIFOs and whose last frame is its exit status. Signals and
//! terminal sizes travel as frames of the same session.

use host_ctl::agent::iostream::{self, InputSender, OutputReceiver};
use host_ctl::agent::vsock::GuestStream;
use host_ctl::agent::Endpoint;
use kvmpod_api::iostream::{ExecRequest, Input, Output, Request, WindowSize};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;

use crate::error::ShimError;
use crate::spec::Process;
use crate::stdio;

pub type Sender = InputSender<Box<dyn GuestStream>>;
type Receiver = OutputReceiver<Box<dyn GuestStream>>;

fn refused(what: &str, e: impl std::fmt::Display) -> ShimError {
    ShimError::Guest(format!("{what}: {e}"))
}

/// Attaches to `app`: its stdin and terminal size from now on (its
/// output is followed through the pod's logs, and drained here).
pub async fn attach(endpoint: &Endpoint, app: &str) -> Result<Sender, ShimError> {
    let request = Request::Attach { app: app.into() };
    let (tx, mut rx) = iostream::open(endpoint, &request)
        .await
        .map_err(|e| refused("attaching", e))?;
    tokio::spawn(async move { while let Ok(Some(_)) = rx.next().await {} });
    Ok(tx)
}

/// Starts `process` in `app`, on a terminal with `tty`.
pub async fn exec(
    endpoint: &Endpoint,
    app: &str,
    process: &Process,
    interactive: bool,
) -> Result<(Sender, Receiver), ShimError> {
    let request = Request::Exec(ExecRequest {
        app: app.into(),
        argv: process.args.clone(),
        env: process.env_vars(),
        tty: process.terminal,
        interactive,
        size: None,
        user: Some(process.user.uid.to_string()),
        group: Some(process.user.gid.to_string()),
        working_directory: Some(process.cwd.clone()).filter(|c| !c.is_empty()),
    });
    iostream::open(endpoint, &request)
        .await
        .map_err(|e| refused("exec", e))
}

/// Feeds the stdin FIFO `path` to the session until its end, which ends
/// the process's stdin when `close_at_end`.
pub fn feed(tx: Sender, path: &str, close_at_end: bool) -> Result<(), ShimError> {
    let fifo = pipe::OpenOptions::new()
        .open_receiver(path)
        .map_err(|source| ShimError::Io {
            what: format!("opening {path}"),
            source,
        })?;
    tokio::spawn(async move { tx.pump_stdin(fifo, close_at_end).await });
    Ok(())
}

/// An output FIFO as an async pipe.
fn output(path: &str) -> Result<Option<pipe::Sender>, ShimError> {
    let Some(file) = stdio::open_output(path)? else {
        return Ok(None);
    };
    pipe::Sender::from_file(file)
        .map(Some)
        .map_err(|source| ShimError::Io {
            what: format!("opening {path}"),
            source,
        })
}

/// An exec's output FIFOs, opened before it starts.
pub struct Outputs {
    stdout: Option<pipe::Sender>,
    stderr: Option<pipe::Sender>,
}

pub fn outputs(stdout: &str, stderr: &str) -> Result<Outputs, ShimError> {
    Ok(Outputs {
        stdout: output(stdout)?,
        stderr: output(stderr)?,
    })
}

/// Writes the session's output into the FIFOs until its exit frame; the
/// exit status (255 when the session broke).
pub async fn deliver(mut rx: Receiver, mut to: Outputs) -> u32 {
    loop {
        let (fifo, data) = match rx.next().await {
            Ok(Some((Output::Stdout(_), data))) => (&mut to.stdout, data),
            Ok(Some((Output::Stderr(_), data))) => (&mut to.stderr, data),
            Ok(Some((Output::Exit(x), _))) => return u32::try_from(x.code).unwrap_or(255),
            Ok(None) | Err(_) => return 255,
        };
        if let Some(f) = fifo {
            if f.write_all(data).await.is_err() {
                // Nobody reads it any more: the rest goes nowhere.
                *fifo = None;
            }
        }
    }
}

/// The terminal's new size.
pub async fn resize(tx: &Sender, width: u32, height: u32) -> Result<(), ShimError> {
    let size = WindowSize {
        rows: u16::try_from(height).unwrap_or(u16::MAX),
        cols: u16::try_from(width).unwrap_or(u16::MAX),
    };
    tx.send(Input::Resize(size))
        .await
        .map_err(|e| refused("resizing the terminal", e))
}

/// Ends the process's stdin (a terminal gets ^D).
pub async fn close_stdin(tx: &Sender) -> Result<(), ShimError> {
    tx.send(Input::CloseStdin)
        .await
        .map_err(|e| refused("closing stdin", e))
}

/// A signal for an exec'd command's process group.
pub async fn signal(tx: &Sender, signal: u32) -> Result<(), ShimError> {
    let n = i32::try_from(signal).map_err(|_| ShimError::Spec(format!("no signal {signal}")))?;
    tx.send(Input::Signal(n))
        .await
        .map_err(|e| refused("signalling", e))
}
