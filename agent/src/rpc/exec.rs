//! `host-ctl exec` on the io stream: the request says what to run in which
//! app; the host's frames (stdin, window sizes, signals) go to the command,
//! its output goes back in large frames, and last its exit, sent only
//! after its last output byte. A host that goes away takes its command
//! along, unless it detached first (`Detach`): then the command runs on,
//! its output read and dropped so that it never blocks on it.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use futures::FutureExt;
use kvmpod_api::iostream::{self as wire, ExecRequest, ExitStatus, HEADER_LEN};
use kvmpod_api::manifest::App;
use kvmpod_api::validate::normalize_guest_path;
use nix::pty::Winsize;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::Mutex;

use super::input::read_input;
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
/// Output read at once and sent as one frame: large frames mean few
/// system calls per byte.
const FRAME_DATA: usize = 256 * 1024;
/// Output read this soon after the last frame was sent is streaming...
const STREAMING: Duration = Duration::from_millis(5);
/// ...and when a read of it is smaller than this...
const SMALL_READ: usize = 32 * 1024;
/// ...the command gets this long to write more before the frame goes.
const GATHER: Duration = Duration::from_millis(2);
/// What a command's end is reported as when its exit was lost.
const KILLED: Exit = Exit {
    code: 137,
    signal: 9,
};

const _: () = assert!(FRAME_DATA <= wire::MAX_FRAME_DATA);

/// Checks a signal number from the host: 1 to 64.
pub(super) fn valid_signal(n: i32) -> Result<i32, RpcError> {
    if (1..=64).contains(&n) {
        Ok(n)
    } else {
        Err(RpcError::BadSignal(n))
    }
}

/// Checks an exec request before anything runs.
pub(super) fn check(pod: &Pod, req: &ExecRequest) -> Result<Arc<AppRecord>, RpcError> {
    let app = pod.app(&req.app).ok_or_else(|| RpcError::UnknownApp {
        app: req.app.clone(),
        known: None,
    })?;
    if req.argv.first().is_none_or(String::is_empty) {
        return Err(RpcError::NoCommand);
    }
    let size: usize = req.argv.iter().map(String::len).sum::<usize>()
        + req
            .env
            .iter()
            .map(|e| e.name.len() + e.value.len())
            .sum::<usize>();
    if size > MAX_COMMAND_BYTES {
        return Err(RpcError::CommandTooLarge(size, MAX_COMMAND_BYTES));
    }
    if req
        .env
        .iter()
        .any(|e| e.name.is_empty() || e.name.contains('='))
    {
        return Err(RpcError::BadVariableName);
    }
    if let Some(dir) = &req.working_directory {
        if normalize_guest_path(dir).is_err() {
            return Err(RpcError::BadWorkingDirectory(dir.clone()));
        }
    }
    if pod.is_stopping() {
        return Err(RpcError::Stopping);
    }
    if app.running_pid().is_none() {
        return Err(RpcError::NotRunning(req.app.clone()));
    }
    Ok(app)
}

/// Runs the command `req` asks for, after the host was told OK.
pub(super) async fn run<R, W>(
    pod: &Pod,
    app: &AppRecord,
    req: &ExecRequest,
    mut r: R,
    w: W,
) -> Result<(), RpcError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let Launched {
        pid,
        mut exit,
        outputs,
        input,
        terminal,
    } = match start_command(pod, app, req) {
        Ok(l) => l,
        Err(e) => return finish_early(w, e.exit_code(), &e.to_string()).await,
    };
    // None once the host detached: output is then read and dropped.
    let w = Mutex::new(Some(w));
    let pumps = join_all(outputs.into_iter().map(|(which, out)| pump(out, which, &w)));
    let feed = feed(&mut r, input, terminal.as_ref(), pid);
    tokio::pin!(pumps, feed);
    let mut drained = false;
    let mut detached = false;
    let status = loop {
        tokio::select! {
            status = &mut exit => break status.unwrap_or(KILLED),
            _ = &mut pumps, if !drained => drained = true,
            end = &mut feed, if !detached => match end {
                Ok(HostEnd::Detached) => {
                    *w.lock().await = None;
                    detached = true;
                }
                // The host is gone, or broke the protocol: its command
                // goes too (unless it just ended, and its pid may be
                // reused).
                gone => {
                    if exit.try_recv().is_err() {
                        let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
                    }
                    return gone.map(|_| ());
                }
            },
        }
    };
    if !drained {
        let _ = tokio::time::timeout(DRAIN_AFTER_EXIT, &mut pumps).await;
    }
    if let Some(w) = w.lock().await.as_mut() {
        w.write_all(&exit_frame(status)).await?;
        w.flush().await?;
    }
    Ok(())
}

/// How the host's side of an exec ended.
#[derive(Debug, PartialEq, Eq)]
enum HostEnd {
    /// It closed the connection.
    Gone,
    /// It detached: the command runs on without it.
    Detached,
}

fn exit_frame(x: Exit) -> [u8; HEADER_LEN] {
    wire::Output::Exit(ExitStatus {
        code: x.code,
        signal: x.signal,
    })
    .encode()
}

/// Starts the command `req` asks for in `app`: its terminal or pipes
/// first, then the process.
fn start_command(pod: &Pod, app: &AppRecord, req: &ExecRequest) -> Result<Launched, SpawnError> {
    let size = req.size.map(winsize);
    let io = ExecIo::new(app.name(), req.tty, req.interactive, size)?;
    let env: Vec<(String, String)> = req
        .env
        .iter()
        .map(|e| (e.name.clone(), e.value.clone()))
        .collect();
    let manifest = as_requested(&app.manifest, req);
    let running = Running {
        app: &manifest,
        cgroup: app.cgroup.get(),
        namespace: app.namespace(),
    };
    launch_exec(&pod.reaper, running, &req.argv, &env, io)
}

/// The app as the command runs in it: its user, group and working
/// directory unless the request names others. A user without a group
/// gets that user's own group, as `docker exec --user` does.
fn as_requested<'a>(app: &'a App, req: &ExecRequest) -> Cow<'a, App> {
    if req.user.is_none() && req.group.is_none() && req.working_directory.is_none() {
        return Cow::Borrowed(app);
    }
    let mut app = app.clone();
    if let Some(user) = &req.user {
        app.user = Some(user.clone());
        app.group = None;
    }
    if let Some(group) = &req.group {
        app.group = Some(group.clone());
    }
    if let Some(dir) = &req.working_directory {
        app.working_directory = Some(dir.clone());
    }
    Cow::Owned(app)
}

/// Reports a command that could not start as a shell would: a message on
/// stderr and status 125, 126 or 127.
async fn finish_early<W: AsyncWrite + Unpin>(
    mut w: W,
    code: i32,
    message: &str,
) -> Result<(), RpcError> {
    let text = format!("kvmpod-agent: {message}\n");
    let mut out = wire::Output::Stderr(text.len() as u32).encode().to_vec();
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&exit_frame(Exit { code, signal: 0 }));
    w.write_all(&out).await?;
    w.flush().await?;
    Ok(())
}

fn winsize(s: wire::WindowSize) -> Winsize {
    Winsize {
        ws_row: s.rows,
        ws_col: s.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

/// Copies one output of the command to the host until end of file: each
/// read lands behind room for the header, so a frame is one write.
async fn pump<W: AsyncWrite + Unpin>(mut out: Output, which: Which, w: &Mutex<Option<W>>) {
    let mut buf = vec![0u8; HEADER_LEN + FRAME_DATA];
    let mut last_sent = None;
    loop {
        let (n, ended) = read_frame(&mut out, &mut buf[HEADER_LEN..], last_sent).await;
        if n > 0 {
            // At most FRAME_DATA, which fits a u32.
            let header = match which {
                Which::Stdout => wire::Output::Stdout(n as u32),
                Which::Stderr => wire::Output::Stderr(n as u32),
            };
            buf[..HEADER_LEN].copy_from_slice(&header.encode());
            let mut w = w.lock().await;
            // Detached: the output is dropped, and read on.
            if let Some(w) = w.as_mut() {
                let sent = match w.write_all(&buf[..HEADER_LEN + n]).await {
                    Ok(()) => w.flush().await,
                    Err(e) => Err(e),
                };
                if sent.is_err() {
                    return;
                }
            }
            last_sent = Some(Instant::now());
        }
        if ended {
            return;
        }
    }
}

/// Reads the command's next output into `buf`: what the read returns,
/// unless the output streams in small writes (shortly after the last
/// frame), when the command gets [`GATHER`] to write more first, so that
/// a frame carries many of its writes. Sparse output (a prompt, an echo)
/// goes at once. The bytes read, and whether the output ended.
async fn read_frame(out: &mut Output, buf: &mut [u8], last_sent: Option<Instant>) -> (usize, bool) {
    let mut n = match out.read(buf).await {
        Ok(0) | Err(_) => return (0, true),
        Ok(n) => n,
    };
    let streaming = last_sent.is_some_and(|t| t.elapsed() < STREAMING);
    if n >= SMALL_READ || !streaming {
        return (n, false);
    }
    tokio::time::sleep(GATHER).await;
    while n < buf.len() {
        match out.read(&mut buf[n..]).now_or_never() {
            Some(Ok(0) | Err(_)) => return (n, true),
            Some(Ok(m)) => n += m,
            None => break,
        }
    }
    (n, false)
}

/// Feeds the host's frames to the command (stdin, window sizes, signals)
/// until the host is gone or detaches.
async fn feed<R: AsyncRead + Unpin>(
    r: &mut R,
    mut input: Input,
    terminal: Option<&Terminal>,
    pid: i32,
) -> Result<HostEnd, RpcError> {
    let mut data = Vec::new();
    loop {
        match read_input(r, &mut data).await? {
            None => return Ok(HostEnd::Gone),
            Some(wire::Input::Detach) => return Ok(HostEnd::Detached),
            Some(wire::Input::Stdin(_)) => input.write(&data).await,
            Some(wire::Input::CloseStdin) => input.close().await,
            Some(wire::Input::Resize(size)) => {
                if let Some(t) = terminal {
                    let _ = t.resize(&winsize(size));
                }
            }
            Some(wire::Input::Signal(n)) => {
                if valid_signal(n).is_ok() {
                    signal_group(pid, n);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::Reaper;
    use crate::timeline::Timeline;
    use kvmpod_api::config::AgentConfig;
    use tokio::io::AsyncReadExt;
    use tokio::net::unix::pipe;
    use tokio::net::UnixStream;

    #[test]
    fn an_exec_runs_as_the_app_unless_it_asks_otherwise() {
        let app = App {
            name: "web".into(),
            user: Some("www".into()),
            group: Some("www".into()),
            working_directory: Some("/srv".into()),
            ..App::default()
        };
        let plain = ExecRequest::default();
        assert!(matches!(as_requested(&app, &plain), Cow::Borrowed(_)));
        let root = ExecRequest {
            user: Some("0".into()),
            working_directory: Some("/tmp".into()),
            ..ExecRequest::default()
        };
        let got = as_requested(&app, &root);
        assert_eq!(got.user.as_deref(), Some("0"));
        // The user's own group, not the app's.
        assert_eq!(got.group, None);
        assert_eq!(got.working_directory.as_deref(), Some("/tmp"));
        let both = ExecRequest {
            user: Some("1000".into()),
            group: Some("100".into()),
            ..ExecRequest::default()
        };
        let got = as_requested(&app, &both);
        assert_eq!(
            (got.user.as_deref(), got.group.as_deref()),
            (Some("1000"), Some("100"))
        );
        assert_eq!(got.working_directory.as_deref(), Some("/srv"));
    }

    /// Splits frames written by the agent into (frame, data).
    fn frames(mut b: &[u8]) -> Vec<(wire::Output, Vec<u8>)> {
        let mut out = Vec::new();
        while !b.is_empty() {
            let h: [u8; HEADER_LEN] = b[..HEADER_LEN].try_into().unwrap();
            let f = wire::Output::decode(&h).unwrap();
            let len = match f {
                wire::Output::Stdout(n) | wire::Output::Stderr(n) => n as usize,
                wire::Output::Exit(_) => 0,
            };
            out.push((f, b[HEADER_LEN..HEADER_LEN + len].to_vec()));
            b = &b[HEADER_LEN + len..];
        }
        out
    }

    /// Detached, a command's output is still read to its end (so that it
    /// never blocks on a full pipe), and dropped.
    #[tokio::test(flavor = "current_thread")]
    async fn detached_output_is_read_and_dropped() {
        let (mut tx, rx) = pipe::pipe().unwrap();
        let writer = tokio::spawn(async move { tx.write_all(&vec![7u8; 1 << 20]).await.unwrap() });
        let detached: Mutex<Option<Vec<u8>>> = Mutex::new(None);
        pump(Output::Pipe(rx), Which::Stdout, &detached).await;
        writer.await.unwrap();
        assert!(detached.into_inner().is_none());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn output_goes_out_in_large_frames() {
        let (mut tx, rx) = pipe::pipe().unwrap();
        let data: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
        let writer = {
            let data = data.clone();
            tokio::spawn(async move { tx.write_all(&data).await.unwrap() })
        };
        let sink = Mutex::new(Some(Vec::new()));
        pump(Output::Pipe(rx), Which::Stderr, &sink).await;
        writer.await.unwrap();
        let got = frames(&sink.into_inner().unwrap());
        assert!(got
            .iter()
            .all(|(f, d)| *f == wire::Output::Stderr(d.len() as u32) && d.len() <= FRAME_DATA));
        let all: Vec<u8> = got.into_iter().flat_map(|(_, d)| d).collect();
        assert_eq!(all, data);
    }

    /// Writes `data` to `tx` after `delay`, then gives `tx` back.
    fn write_later(
        mut tx: pipe::Sender,
        delay: Duration,
        data: &'static [u8],
    ) -> tokio::task::JoinHandle<pipe::Sender> {
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            tx.write_all(data).await.unwrap();
            tx
        })
    }

    #[tokio::test(flavor = "current_thread")]
    async fn streaming_output_is_gathered_and_sparse_output_is_not() {
        let (mut tx, rx) = pipe::pipe().unwrap();
        let mut out = Output::Pipe(rx);
        let mut buf = vec![0u8; 1024];
        // Sparse: what is there goes at once.
        tx.write_all(b"a").await.unwrap();
        let later = write_later(tx, Duration::from_millis(50), b"b");
        assert_eq!(read_frame(&mut out, &mut buf, None).await, (1, false));
        let mut tx = later.await.unwrap();
        assert_eq!(read_frame(&mut out, &mut buf, None).await, (1, false));
        assert_eq!(&buf[..1], b"b");
        // Streaming: what the command writes within GATHER joins the
        // frame, and its end is seen.
        tx.write_all(b"c").await.unwrap();
        let later = write_later(tx, GATHER / 2, b"de");
        let recent = Some(Instant::now());
        let (n, _) = read_frame(&mut out, &mut buf, recent).await;
        assert_eq!(&buf[..n], b"cde");
        drop(later.await.unwrap());
        assert_eq!(read_frame(&mut out, &mut buf, recent).await, (0, true));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn input_frames_reach_the_command_until_the_host_is_gone() {
        let (tx, mut rx) = pipe::pipe().unwrap();
        let mut host = Vec::new();
        for (frame, data) in [
            (wire::Input::Stdin(3), &b"abc"[..]),
            // Not a signal: ignored. No terminal: a resize is ignored.
            (wire::Input::Signal(0), b""),
            (
                wire::Input::Resize(wire::WindowSize { rows: 1, cols: 1 }),
                b"",
            ),
            (wire::Input::Stdin(2), b"de"),
            (wire::Input::CloseStdin, b""),
            (wire::Input::Stdin(3), b"zzz"),
        ] {
            host.extend_from_slice(&frame.encode());
            host.extend_from_slice(data);
        }
        feed(&mut &host[..], Input::Pipe(tx), None, 1)
            .await
            .unwrap();
        let mut got = Vec::new();
        rx.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"abcde");
        // A frame that is not one ends the feed with an error.
        let bad = [0xffu8; HEADER_LEN];
        let e = feed(&mut &bad[..], Input::None, None, 1).await.unwrap_err();
        assert!(matches!(e, RpcError::IoStream(_)), "{e}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_command_that_cannot_start_gets_a_message_and_a_status() {
        let manifest = kvmpod_api::validate::parse(
            r#"{"apps": [{"name": "no-such-root", "rootfs": "/", "exec": ["x"]}]}"#,
        )
        .unwrap();
        let pod = Pod::new(
            manifest,
            AgentConfig::default(),
            Timeline::default(),
            Reaper::new(),
        );
        let req = ExecRequest {
            app: "no-such-root".into(),
            argv: vec!["true".into()],
            env: Vec::new(),
            ..ExecRequest::default()
        };
        let (ours, theirs) = UnixStream::pair().unwrap();
        let (r, w) = theirs.into_split();
        run(&pod, &pod.apps()[0], &req, r, w).await.unwrap();
        let mut got = Vec::new();
        let (mut ours, _) = ours.into_split();
        ours.read_to_end(&mut got).await.unwrap();
        let got = frames(&got);
        let [(wire::Output::Stderr(_), msg), (wire::Output::Exit(x), _)] = &got[..] else {
            panic!("{got:?}")
        };
        let msg = String::from_utf8_lossy(msg);
        assert!(
            msg.starts_with("kvmpod-agent: ") && msg.ends_with('\n'),
            "{msg}"
        );
        assert_eq!(x.code, crate::process::EXIT_SETUP_FAILED, "{msg}");
    }
}
