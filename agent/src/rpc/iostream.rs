//! The io stream server (`kvmpod_api::iostream`): each connection is one
//! `exec`, `attach` or `cp` session. It reads the request line, answers `OK` or
//! `ERR <why>`, and hands the connection to the session, whose data then
//! travels as large frames rather than one RPC message per chunk.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use kvmpod_api::iostream::{self as wire, Reply, Request, MAX_REQUEST_LINE};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio_vsock::{VsockAddr, VsockListener, VsockStream, VMADDR_CID_ANY};

use super::{attach, copy, exec, RpcError};
use crate::pod::{AppRecord, Pod};

/// How long the host has to send its request line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The host's frames are read through a buffer this large, so small
/// frames (keystrokes, resizes) cost no system call each.
const READ_BUFFER: usize = 64 * 1024;

/// Connections the kernel queues before the agent accepts them (at most
/// the guest's `net.core.somaxconn`, 4096 by default).
const BACKLOG: libc::c_int = 1024;

/// Listens on `port` for the life of the agent.
pub fn start(pod: Arc<Pod>, port: u32) -> io::Result<()> {
    let listener = VsockListener::bind(VsockAddr::new(VMADDR_CID_ANY, port))?;
    if let Err(e) = deepen_queue(&listener) {
        log::warn!("io stream: raising the accept queue to {BACKLOG}: {e}");
    }
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(connection(Arc::clone(&pod), stream));
                }
                Err(e) => {
                    log::warn!("io stream: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(())
}

/// Raises a listener's accept queue from tokio-vsock's 128: the guest
/// kernel resets connections beyond it, and a burst of `exec` calls (a
/// script fanning out) was refused in part while the agent's one thread
/// was busy starting commands. Listening again only changes the queue.
/// Through libc: nix's `Backlog` stops at musl's `SOMAXCONN`, 128.
fn deepen_queue(listener: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: listen(2) takes a descriptor, open while `listener` is
    // borrowed, and an int; no memory is passed.
    let ret = unsafe { libc::listen(listener.as_raw_fd(), BACKLOG) };
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

async fn connection(pod: Arc<Pod>, stream: VsockStream) {
    let (r, w) = stream.into_split();
    if let Err(e) = serve(&pod, r, w).await {
        log::debug!("io stream: {e}");
    }
}

/// A request the agent accepted.
enum Session {
    Exec(Arc<AppRecord>, wire::ExecRequest),
    /// The app, and where its output is followed from.
    Attach(Arc<AppRecord>, u64),
    /// The app's root, and what to archive.
    CopyOut(std::os::fd::OwnedFd, wire::CopyRequest),
    /// The app's root, and where to extract.
    CopyIn(std::os::fd::OwnedFd, wire::CopyRequest),
}

/// Serves one connection: the request, the answer, then the session.
pub async fn serve<R, W>(pod: &Pod, r: R, mut w: W) -> Result<(), RpcError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut r = BufReader::with_capacity(READ_BUFFER, r);
    let opened = match tokio::time::timeout(REQUEST_TIMEOUT, read_request(&mut r)).await {
        Ok(req) => req.and_then(|req| open(pod, req)),
        Err(_) => return Ok(()),
    };
    let session = match opened {
        Ok(s) => s,
        Err(e) => {
            let line = format!("{}\n", Reply::Err(e.to_string()));
            let _ = w.write_all(line.as_bytes()).await;
            return Err(e);
        }
    };
    w.write_all(format!("{}\n", Reply::Ok).as_bytes()).await?;
    match session {
        Session::Exec(app, req) => exec::run(pod, &app, &req, r, w).await,
        Session::Attach(app, from) => attach::run(pod, &app, from, r, w).await,
        Session::CopyOut(root, req) => copy::copy_out(root, &req, w).await,
        Session::CopyIn(root, req) => copy::copy_in(root, &req, r, w).await,
    }
}

/// Reads the request line; what follows it are frames, left in `r`.
async fn read_request<R: AsyncRead + Unpin>(r: &mut BufReader<R>) -> Result<Request, RpcError> {
    let mut line = Vec::with_capacity(256);
    let limit = MAX_REQUEST_LINE as u64 + 1;
    (&mut *r).take(limit).read_until(b'\n', &mut line).await?;
    if line.last() != Some(&b'\n') {
        return Err(if line.len() as u64 >= limit {
            RpcError::LineTooLong
        } else {
            RpcError::ClosedEarly
        });
    }
    Ok(Request::parse(&String::from_utf8_lossy(&line))?)
}

/// Checks a request against the pod before anything starts.
fn open(pod: &Pod, req: Request) -> Result<Session, RpcError> {
    match req {
        Request::Exec(req) => Ok(Session::Exec(exec::check(pod, &req)?, req)),
        Request::Attach { app } => {
            let app = attach::open(pod, &app)?;
            // From now on: what the app prints after the host's request.
            let from = app.logs.end();
            Ok(Session::Attach(app, from))
        }
        Request::CopyOut(req) => Ok(Session::CopyOut(copy::open(pod, &req)?, req)),
        Request::CopyIn(req) => Ok(Session::CopyIn(copy::open(pod, &req)?, req)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::Stream;
    use crate::process::{Exit, Reaper};
    use crate::timeline::Timeline;
    use kvmpod_api::config::AgentConfig;
    use kvmpod_api::iostream::HEADER_LEN;
    use kvmpod_api::iostream::{ExitStatus, Output};
    use tokio::net::UnixStream;

    fn pod() -> Arc<Pod> {
        let manifest = kvmpod_api::validate::parse(
            r#"{"apps": [{"name": "a", "rootfs": "/", "exec": ["x"]},
                         {"name": "b", "rootfs": "/", "exec": ["y"]}]}"#,
        )
        .unwrap();
        Pod::new(
            manifest,
            AgentConfig::default(),
            Timeline::default(),
            Reaper::new(),
        )
    }

    /// The host's end of a connection being served.
    struct Host {
        r: BufReader<tokio::net::unix::OwnedReadHalf>,
        w: tokio::net::unix::OwnedWriteHalf,
        server: tokio::task::JoinHandle<Result<(), RpcError>>,
    }

    impl Host {
        /// Sends `request` and returns the agent's answer line.
        async fn connect(pod: &Arc<Pod>, request: &[u8]) -> (Host, String) {
            let (ours, theirs) = UnixStream::pair().unwrap();
            let pod = Arc::clone(pod);
            let server = tokio::spawn(async move {
                let (r, w) = theirs.into_split();
                serve(&pod, r, w).await
            });
            let (r, mut w) = ours.into_split();
            w.write_all(request).await.unwrap();
            let mut r = BufReader::new(r);
            let mut answer = String::new();
            r.read_line(&mut answer).await.unwrap();
            (Host { r, w, server }, answer)
        }

        async fn frame(&mut self) -> (Output, Vec<u8>) {
            let mut h = [0u8; HEADER_LEN];
            self.r.read_exact(&mut h).await.unwrap();
            let f = Output::decode(&h).unwrap();
            let len = match f {
                Output::Stdout(n) | Output::Stderr(n) => n as usize,
                Output::Exit(_) => 0,
            };
            let mut data = vec![0u8; len];
            self.r.read_exact(&mut data).await.unwrap();
            (f, data)
        }
    }

    fn exec_line(json: &str) -> Vec<u8> {
        format!("EXEC {json}\n").into_bytes()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn bad_requests_get_an_err_line() {
        let pod = pod();
        let huge = format!(r#"{{"app":"a","argv":["{}"]}}"#, "y".repeat(300 * 1024));
        for (req, answer) in [
            (exec_line(r#"{"app":"zz","argv":["true"]}"#), "ERR no app named \"zz\" in this pod\n".to_string()),
            (exec_line(r#"{"app":"a","argv":[]}"#), "ERR exec needs a command\n".into()),
            (exec_line(r#"{"app":"a","argv":["true"]}"#), "ERR app \"a\" is not running\n".into()),
            (
                exec_line(r#"{"app":"a","argv":["x"],"env":[{"name":"A=B","value":""}]}"#),
                "ERR invalid environment variable name\n".into(),
            ),
            (
                exec_line(&huge),
                "ERR the command and its environment are 307200 bytes; at most 262144 are accepted\n".into(),
            ),
            (b"ATTACH zz\n".to_vec(), "ERR no app named \"zz\" in this pod (apps: a, b)\n".into()),
            (
                b"COPYOUT {\"app\":\"zz\",\"path\":\"/etc\"}\n".to_vec(),
                "ERR no app named \"zz\" in this pod (apps: a, b)\n".into(),
            ),
            (b"COPYIN {\"app\":\"a\",\"path\":\"/tmp\"}\n".to_vec(), "ERR app \"a\" is not running\n".into()),
            (
                b"GET / HTTP/1.0\n".to_vec(),
                "ERR bad io stream request \"GET / HTTP/1.0\": expected \"EXEC <json>\", \"ATTACH <app>\", \"COPYOUT <json>\" or \"COPYIN <json>\"\n".into(),
            ),
        ] {
            let (host, got) = Host::connect(&pod, &req).await;
            assert_eq!(got, answer);
            assert!(host.server.await.unwrap().is_err());
        }
        let e = Host::connect(&pod, b"EXEC {\"app\": 1}\n").await.1;
        assert!(e.starts_with("ERR bad io stream request"), "{e}");
        let long = vec![b'x'; MAX_REQUEST_LINE + 10];
        let (_host, got) = Host::connect(&pod, &long).await;
        assert_eq!(got, "ERR request line too long\n");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_host_that_closes_early_gets_nothing() {
        let pod = pod();
        let (ours, theirs) = UnixStream::pair().unwrap();
        let (r, w) = theirs.into_split();
        let (mut host_r, mut host_w) = ours.into_split();
        host_w.write_all(b"ATTACH a").await.unwrap();
        drop(host_w);
        let e = serve(&pod, r, w).await.unwrap_err();
        assert!(matches!(e, RpcError::ClosedEarly), "{e}");
        let mut answer = String::new();
        host_r.read_to_string(&mut answer).await.unwrap();
        assert_eq!(answer, "ERR connection closed before the request\n");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn attach_follows_output_from_now_on_then_the_exit() {
        let pod = pod();
        let logs = &pod.apps()[0].logs;
        logs.append(Stream::Stdout, b"before\n", 1);
        let (mut host, ok) = Host::connect(&pod, b"ATTACH a\n").await;
        assert_eq!(ok, "OK\n");
        let big: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        logs.append(Stream::Stdout, b"one\n", 2);
        logs.append(Stream::Stderr, b"oops\n", 3);
        logs.append(Stream::Stdout, &big, 4);
        assert_eq!(host.frame().await, (Output::Stdout(4), b"one\n".to_vec()));
        assert_eq!(host.frame().await, (Output::Stderr(5), b"oops\n".to_vec()));
        let (f, data) = host.frame().await;
        assert_eq!((f, data == big), (Output::Stdout(300_000), true));
        // Stdin to an app without one is dropped, and the session goes on.
        let mut frame = wire::Input::Stdin(2).encode().to_vec();
        frame.extend_from_slice(b"hi");
        host.w.write_all(&frame).await.unwrap();
        logs.append(Stream::Stdout, b"last\n", 5);
        assert_eq!(host.frame().await, (Output::Stdout(5), b"last\n".to_vec()));
        logs.close();
        pod.apps()[0].set_exited(Exit { code: 3, signal: 0 }, 6);
        let (f, _) = host.frame().await;
        assert_eq!(f, Output::Exit(ExitStatus { code: 3, signal: 0 }));
        host.server.await.unwrap().unwrap();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_attached_host_that_leaves_or_misbehaves_ends_its_session() {
        let pod = pod();
        let (host, _) = Host::connect(&pod, b"ATTACH b\n").await;
        drop(host.w);
        host.server.await.unwrap().unwrap();
        let (mut host, _) = Host::connect(&pod, b"ATTACH b\n").await;
        host.w.write_all(&[0xee; HEADER_LEN]).await.unwrap();
        let e = host.server.await.unwrap().unwrap_err();
        assert!(e.to_string().contains("bad io stream frame"), "{e}");
        // An app that is already over: its exit at once.
        pod.apps()[1].logs.close();
        pod.apps()[1].set_exited(Exit { code: 0, signal: 9 }, 1);
        let (mut host, _) = Host::connect(&pod, b"ATTACH b\n").await;
        let (f, _) = host.frame().await;
        assert_eq!(f, Output::Exit(ExitStatus { code: 0, signal: 9 }));
    }
}
