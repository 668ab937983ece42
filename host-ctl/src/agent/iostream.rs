//! The host's side of an io stream session (`kvmpod_api::iostream`): one
//! connection to the agent's io port per `exec` or `attach`, the request
//! and the agent's answer, then input frames out (from any task) and
//! output frames in.

use std::io;
use std::sync::Arc;

use kvmpod_api::iostream::{Input, Output, Reply, Request, HEADER_LEN, MAX_FRAME_DATA};
use kvmpod_api::layout::IO_VSOCK_PORT;
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadHalf,
    WriteHalf,
};
use tokio::sync::Mutex;

use super::vsock::{connect_stream, Endpoint, GuestStream};
use super::AgentError;
use crate::ui::detach_keys::DetachKeys;

/// The longest reply line accepted from the agent.
const MAX_REPLY: u64 = 4096;
/// Output is read through a buffer this large: small frames cost no
/// system call each, large ones are read straight into place.
const READ_BUFFER: usize = 256 * 1024;
/// Stdin read at once and sent as one frame.
const STDIN_CHUNK: usize = 64 * 1024;

/// Sends input frames; clones share the connection.
pub struct InputSender<S>(Arc<Mutex<WriteHalf<S>>>);

impl<S> Clone for InputSender<S> {
    fn clone(&self) -> Self {
        InputSender(Arc::clone(&self.0))
    }
}

/// Receives the agent's output frames.
pub struct OutputReceiver<S> {
    r: BufReader<ReadHalf<S>>,
    data: Vec<u8>,
}

/// A session's two directions.
pub type Session<S> = (InputSender<S>, OutputReceiver<S>);

/// Opens a session on the agent at `endpoint`.
pub async fn open(
    endpoint: &Endpoint,
    request: &Request,
) -> Result<Session<Box<dyn GuestStream>>, AgentError> {
    let stream = connect_stream(endpoint, IO_VSOCK_PORT)
        .await
        .map_err(|e| AgentError::Unreachable(format!("{endpoint:?} port {IO_VSOCK_PORT}: {e}")))?;
    start(stream, request).await
}

/// Sends `request` on `stream` and reads the agent's answer.
pub async fn start<S: AsyncRead + AsyncWrite>(
    stream: S,
    request: &Request,
) -> Result<Session<S>, AgentError> {
    let (r, mut w) = tokio::io::split(stream);
    let mut r = BufReader::with_capacity(READ_BUFFER, r);
    w.write_all(format!("{request}\n").as_bytes())
        .await
        .map_err(AgentError::Stream)?;
    w.flush().await.map_err(AgentError::Stream)?;
    let mut line = Vec::new();
    (&mut r)
        .take(MAX_REPLY)
        .read_until(b'\n', &mut line)
        .await
        .map_err(AgentError::Stream)?;
    if line.is_empty() {
        return Err(AgentError::Stream(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the agent closed the connection before answering",
        )));
    }
    match Reply::parse(&String::from_utf8_lossy(&line))? {
        Reply::Ok => Ok((
            InputSender(Arc::new(Mutex::new(w))),
            OutputReceiver {
                r,
                data: Vec::new(),
            },
        )),
        Reply::Err(why) => Err(AgentError::Refused(why)),
    }
}

impl<S: AsyncWrite> InputSender<S> {
    /// Sends a frame without data.
    pub async fn send(&self, frame: Input) -> io::Result<()> {
        let mut w = self.0.lock().await;
        w.write_all(&frame.encode()).await?;
        w.flush().await
    }

    /// Copies `from` (this process's stdin) to the agent until end of
    /// file, then, with `close_at_end`, closes the remote stdin (a
    /// terminal's is left open: the end of a local stdin is not a user
    /// typing ^D); stops when the connection is gone. Each read becomes
    /// one frame, sent with one write.
    pub async fn pump_stdin<R: AsyncRead + Unpin>(&self, from: R, close_at_end: bool) {
        self.pump(from, close_at_end, None).await;
    }

    /// [`InputSender::pump_stdin`] until `keys` are typed: they are not
    /// sent, and the remote stdin stays open for the next attach.
    pub async fn pump_stdin_until<R: AsyncRead + Unpin>(
        &self,
        from: R,
        close_at_end: bool,
        keys: DetachKeys,
    ) -> Pumped {
        self.pump(from, close_at_end, Some(keys)).await
    }

    async fn pump<R: AsyncRead + Unpin>(
        &self,
        mut from: R,
        close_at_end: bool,
        mut keys: Option<DetachKeys>,
    ) -> Pumped {
        let mut buf = vec![0u8; HEADER_LEN + STDIN_CHUNK];
        loop {
            let n = match from.read(&mut buf[HEADER_LEN..]).await {
                Ok(0) | Err(_) => {
                    if close_at_end {
                        let _ = self.send(Input::CloseStdin).await;
                    }
                    return Pumped::Ended;
                }
                Ok(n) => n,
            };
            let sent = match keys.as_mut() {
                None => self.write_frame(&mut buf, n).await,
                Some(k) => {
                    let (typed, detached) = k.feed(&buf[HEADER_LEN..HEADER_LEN + n]);
                    let sent = self.send_stdin(&typed).await;
                    if detached {
                        return Pumped::Detached;
                    }
                    sent
                }
            };
            if sent.is_err() {
                return Pumped::Ended;
            }
        }
    }

    /// Sends the `n` bytes after the header room at the start of `buf` as
    /// one frame, with one write.
    async fn write_frame(&self, buf: &mut [u8], n: usize) -> io::Result<()> {
        // At most STDIN_CHUNK, which fits a u32.
        buf[..HEADER_LEN].copy_from_slice(&Input::Stdin(n as u32).encode());
        let mut w = self.0.lock().await;
        w.write_all(&buf[..HEADER_LEN + n]).await?;
        w.flush().await
    }

    /// Sends `data` for the remote stdin, in frames of at most
    /// STDIN_CHUNK.
    pub async fn send_stdin(&self, data: &[u8]) -> io::Result<()> {
        for chunk in data.chunks(STDIN_CHUNK) {
            let mut frame = Vec::with_capacity(HEADER_LEN + chunk.len());
            frame.extend_from_slice(&[0u8; HEADER_LEN]);
            frame.extend_from_slice(chunk);
            self.write_frame(&mut frame, chunk.len()).await?;
        }
        Ok(())
    }
}

/// How a pump of stdin ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pumped {
    /// Its end of file, or the connection's.
    Ended,
    /// The detach keys were typed.
    Detached,
}

const _: () = assert!(STDIN_CHUNK <= MAX_FRAME_DATA);

impl<S: AsyncRead> OutputReceiver<S> {
    /// The next frame and its data; None when the agent closed the
    /// connection between frames.
    pub async fn next(&mut self) -> Result<Option<(Output, &[u8])>, AgentError> {
        let mut h = [0u8; HEADER_LEN];
        match self.r.read_exact(&mut h).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(AgentError::Stream(e)),
        }
        let frame = Output::decode(&h)?;
        let len = match frame {
            Output::Stdout(n) | Output::Stderr(n) => n as usize,
            Output::Exit(_) => 0,
        };
        self.data.resize(len, 0);
        self.r
            .read_exact(&mut self.data)
            .await
            .map_err(AgentError::Stream)?;
        Ok(Some((frame, &self.data)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvmpod_api::iostream::ExitStatus;
    use tokio::io::{duplex, DuplexStream};

    /// What the fake agent read: the request line, and the rest.
    type Read = tokio::task::JoinHandle<(Vec<u8>, Vec<u8>)>;

    /// A fake agent: reads the request line, writes `answer` (closes at
    /// once if it is empty), and returns the request line and everything
    /// the host sent after it, once the host is gone.
    fn agent(answer: Vec<u8>) -> (DuplexStream, Read) {
        let (host, mut guest) = duplex(1 << 16);
        let fake = tokio::spawn(async move {
            let mut r = BufReader::new(&mut guest);
            let mut line = Vec::new();
            r.read_until(b'\n', &mut line).await.unwrap();
            if answer.is_empty() {
                return (line, Vec::new()); // closes without answering
            }
            r.get_mut().write_all(&answer).await.unwrap();
            let mut rest = Vec::new();
            let _ = r.read_to_end(&mut rest).await;
            (line, rest)
        });
        (host, fake)
    }

    fn attach() -> Request {
        Request::Attach { app: "a".into() }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_refusal_is_the_agents_why() {
        let (host, _fake) = agent(b"ERR no app named \"x\" in this pod\n".to_vec());
        let Err(e) = start(host, &attach()).await else {
            panic!("accepted")
        };
        assert_eq!(e.to_string(), "no app named \"x\" in this pod");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn stdin_goes_out_in_frames_and_output_comes_back() {
        let mut answer = b"OK\n".to_vec();
        answer.extend_from_slice(&Output::Stdout(3).encode());
        answer.extend_from_slice(b"hi\n");
        answer.extend_from_slice(&Output::Exit(ExitStatus { code: 3, signal: 0 }).encode());
        let (host, fake) = agent(answer);
        let (tx, mut rx) = start(host, &attach()).await.unwrap();
        let (f, d) = rx.next().await.unwrap().unwrap();
        assert_eq!((f, d), (Output::Stdout(3), &b"hi\n"[..]));
        let (f, _) = rx.next().await.unwrap().unwrap();
        assert_eq!(f, Output::Exit(ExitStatus { code: 3, signal: 0 }));
        tx.pump_stdin(&b"typed"[..], true).await;
        drop((tx, rx));
        let (line, sent) = fake.await.unwrap();
        assert_eq!(line, b"ATTACH a\n");
        let mut want = Input::Stdin(5).encode().to_vec();
        want.extend_from_slice(b"typed");
        want.extend_from_slice(&Input::CloseStdin.encode());
        assert_eq!(sent, want);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn detach_keys_end_the_pump_and_are_not_sent() {
        let (host, fake) = agent(b"OK\n".to_vec());
        let (tx, rx) = start(host, &attach()).await.unwrap();
        let keys = DetachKeys::parse(crate::ui::detach_keys::DEFAULT)
            .unwrap()
            .unwrap();
        let pumped = tx
            .pump_stdin_until(&b"ls\n\x10\x11after"[..], true, keys)
            .await;
        assert_eq!(pumped, Pumped::Detached);
        drop((tx, rx));
        let (_, sent) = fake.await.unwrap();
        // The typed line, and no end of stdin: the app's stays open.
        let mut want = Input::Stdin(3).encode().to_vec();
        want.extend_from_slice(b"ls\n");
        assert_eq!(sent, want);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn bad_replies_and_frames_are_errors() {
        let (host, _fake) = agent(b"HELLO\n".to_vec());
        let e = start(host, &attach()).await.err().unwrap();
        assert!(e.to_string().contains("bad io stream reply"), "{e}");
        let (host, _fake) = agent(Vec::new());
        let e = start(host, &attach()).await.err().unwrap();
        assert!(e.to_string().contains("before answering"), "{e}");
        let mut answer = b"OK\n".to_vec();
        answer.extend_from_slice(&Input::Stdin(1).encode());
        let (host, _fake) = agent(answer);
        let (_tx, mut rx) = start(host, &attach()).await.unwrap();
        let e = rx.next().await.err().unwrap();
        assert!(e.to_string().contains("bad io stream frame"), "{e}");
    }
}
