//! The log stream server (`kvmpod_api::logstream`): a connection names an
//! app and the first offset it wants, gets the app's output as frames and
//! follows new output until the app's End, and acknowledges what the host
//! has persisted. Acks are what let the agent free an app's buffer (and a
//! blocking app write on), so they come from this stream only.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use kvmpod_api::logstream::{
    decode_ack, FrameHeader, FrameKind, Request, StreamId, ACK_LEN, MAX_FRAME_DATA,
    MAX_REQUEST_LINE,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio_vsock::{VsockAddr, VsockListener, VsockStream, VMADDR_CID_ANY};

use super::RpcError;
use crate::pod::{AppRecord, Item, LogBuffer, Piece, Pod, Stream};
use crate::timeline::boottime_ns;

/// How long the host has to send its request line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Data per frame: large frames mean few system calls per byte.
const FRAME_DATA: usize = 256 * 1024;
/// Output taken from the buffer at once, then written out.
const BATCH: usize = 1 << 20;
/// Writes smaller than this are gathered; larger ones go out directly,
/// without a copy.
const WRITE_BUFFER: usize = 16 * 1024;
/// Chunks read this close together may share a frame, and its time.
const COALESCE_NS: u64 = 50_000_000;

const _: () = assert!(FRAME_DATA <= MAX_FRAME_DATA);

/// Listens on `port` for the life of the agent.
pub fn start(pod: Arc<Pod>, port: u32) -> io::Result<()> {
    let listener = VsockListener::bind(VsockAddr::new(VMADDR_CID_ANY, port))?;
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(connection(Arc::clone(&pod), stream));
                }
                Err(e) => {
                    log::warn!("log stream: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(())
}

async fn connection(pod: Arc<Pod>, stream: VsockStream) {
    let (r, w) = stream.into_split();
    if let Err(e) = serve(&pod, r, w).await {
        log::debug!("log stream: {e}");
    }
}

/// Serves one connection: the request, then the app's output as frames
/// while acks are read, until the host closes the connection or
/// acknowledges the End.
pub async fn serve<R, W>(pod: &Pod, mut r: R, mut w: W) -> Result<(), RpcError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let opened = match tokio::time::timeout(REQUEST_TIMEOUT, read_request(&mut r)).await {
        Ok(req) => req.and_then(|req| open(pod, &req)),
        Err(_) => return Ok(()),
    };
    let (app, start) = match opened {
        Ok(o) => o,
        Err(e) => {
            let _ = w.write_all(format!("ERR {e}\n").as_bytes()).await;
            return Err(e);
        }
    };
    w.write_all(b"OK\n").await?;
    let _reader = app.logs.reader();
    let conn = Conn {
        logs: &app.logs,
        sent: AtomicU64::new(start),
        acked: AtomicU64::new(0),
        ended: AtomicBool::new(false),
    };
    tokio::select! {
        r = conn.send(start, w) => r,
        r = conn.read_acks(r) => r,
    }
}

/// Reads the request line, byte by byte: what follows it are acks.
async fn read_request<R: AsyncRead + Unpin>(r: &mut R) -> Result<Request, RpcError> {
    let mut line = Vec::with_capacity(64);
    loop {
        match r.read_u8().await {
            Ok(b'\n') => break,
            Ok(b) => line.push(b),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(RpcError::ClosedEarly)
            }
            Err(e) => return Err(e.into()),
        }
        if line.len() >= MAX_REQUEST_LINE {
            return Err(RpcError::LineTooLong);
        }
    }
    Ok(Request::parse(&String::from_utf8_lossy(&line))?)
}

/// The app asked for, and where its stream starts: `from`, or the oldest
/// byte still kept when the host already acknowledged past `from`.
fn open(pod: &Pod, req: &Request) -> Result<(Arc<AppRecord>, u64), RpcError> {
    let app = pod
        .app(&req.app)
        .ok_or_else(|| RpcError::unknown_app(pod, &req.app))?;
    let t = app.logs.totals();
    if req.from > t.end {
        return Err(RpcError::OffsetBeyondEnd {
            from: req.from,
            end: t.end,
        });
    }
    Ok((app, req.from.max(t.acked)))
}

/// One connection's progress, shared by its writer and its ack reader
/// (one task, so ordering is moot).
struct Conn<'a> {
    logs: &'a LogBuffer,
    /// Offset just past what this connection sent (or is sending).
    sent: AtomicU64,
    /// The highest offset this connection acknowledged.
    acked: AtomicU64,
    /// The End frame was sent.
    ended: AtomicBool,
}

impl Conn<'_> {
    /// Sends output from `cursor` on, following new output; after the End
    /// frame, waits for the host's last ack or close (never returns Ok
    /// before the End is acknowledged).
    async fn send<W: AsyncWrite + Unpin>(&self, mut cursor: u64, w: W) -> Result<(), RpcError> {
        let mut w = BufWriter::with_capacity(WRITE_BUFFER, w);
        let mut changes = self.logs.subscribe();
        loop {
            let read = self.logs.read(cursor, BATCH);
            if !read.items.is_empty() {
                // Before writing: the host may ack it before the write returns.
                self.sent.store(read.next, Relaxed);
                write_frames(&mut w, &frames(read.items)).await?;
                cursor = read.next;
                continue;
            }
            if read.finished {
                self.ended.store(true, Relaxed);
                let end = end_frame(cursor);
                w.write_all(&end.encode()).await?;
                w.flush().await?;
                if self.acked.load(Relaxed) >= cursor {
                    return Ok(());
                }
                std::future::pending::<()>().await;
            }
            if changes.changed().await.is_err() {
                return Ok(());
            }
        }
    }

    /// Reads acks until the host closes the connection or acknowledges
    /// the End; an ack of more than was sent ends the connection.
    async fn read_acks<R: AsyncRead + Unpin>(&self, mut r: R) -> Result<(), RpcError> {
        let mut b = [0u8; ACK_LEN];
        loop {
            match r.read_exact(&mut b).await {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e.into()),
            }
            let ack = decode_ack(&b)?;
            let sent = self.sent.load(Relaxed);
            if ack > sent {
                return Err(RpcError::AckBeyondSent { ack, sent });
            }
            self.logs.ack(ack)?;
            self.acked.fetch_max(ack, Relaxed);
            if self.ended.load(Relaxed) && ack >= sent {
                return Ok(());
            }
        }
    }
}

fn end_frame(offset: u64) -> FrameHeader {
    FrameHeader {
        kind: FrameKind::End,
        stream: StreamId::Stdout,
        len: 0,
        offset,
        boottime_ns: boottime_ns(),
        count: 0,
    }
}

/// A frame to send: its header, and its data in pieces.
#[derive(Debug)]
struct Frame {
    header: FrameHeader,
    parts: Vec<Piece>,
}

fn stream_id(s: Stream) -> StreamId {
    match s {
        Stream::Stdout => StreamId::Stdout,
        Stream::Stderr => StreamId::Stderr,
    }
}

/// Whether `frame` can take data of `stream` read at `boottime_ns` and
/// starting at `offset`.
fn joins(frame: &Frame, stream: StreamId, offset: u64, boottime_ns: u64) -> bool {
    let h = &frame.header;
    h.kind == FrameKind::Data
        && h.stream == stream
        && h.offset + u64::from(h.len) == offset
        && (h.len as usize) < FRAME_DATA
        && boottime_ns.saturating_sub(h.boottime_ns) <= COALESCE_NS
}

/// Turns buffer items into frames: consecutive chunks of one stream read
/// close together share a frame of up to [`FRAME_DATA`] bytes.
fn frames(items: Vec<Item>) -> Vec<Frame> {
    let mut out: Vec<Frame> = Vec::new();
    for item in items {
        let c = match item {
            Item::Data(c) => c,
            Item::Dropped {
                offset,
                count,
                boottime_ns,
            } => {
                out.push(Frame {
                    header: FrameHeader {
                        kind: FrameKind::Dropped,
                        stream: StreamId::Stdout,
                        len: 0,
                        offset,
                        boottime_ns,
                        count,
                    },
                    parts: Vec::new(),
                });
                continue;
            }
        };
        let stream = stream_id(c.stream);
        let (mut data, mut offset) = (c.data, c.offset);
        while !data.is_empty() {
            match out.last_mut() {
                Some(f) if joins(f, stream, offset, c.boottime_ns) => {
                    let take = (FRAME_DATA - f.header.len as usize).min(data.len());
                    f.parts.push(data.slice(0, take));
                    // At most FRAME_DATA in all, which fits a u32.
                    f.header.len += take as u32;
                    data = data.slice(take, data.len());
                    offset += take as u64;
                }
                _ => out.push(Frame {
                    header: FrameHeader {
                        kind: FrameKind::Data,
                        stream,
                        len: 0,
                        offset,
                        boottime_ns: c.boottime_ns,
                        count: 0,
                    },
                    parts: Vec::new(),
                }),
            }
        }
    }
    out
}

async fn write_frames<W: AsyncWrite + Unpin>(
    w: &mut BufWriter<W>,
    frames: &[Frame],
) -> io::Result<()> {
    for f in frames {
        w.write_all(&f.header.encode()).await?;
        for p in &f.parts {
            w.write_all(p.as_slice()).await?;
        }
    }
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::Reaper;
    use crate::timeline::Timeline;
    use kvmpod_api::config::AgentConfig;
    use kvmpod_api::logstream::{encode_ack, HEADER_LEN};
    use tokio::io::{AsyncBufReadExt, BufReader};
    use tokio::net::UnixStream;

    fn pod() -> Arc<Pod> {
        let manifest = kvmpod_api::validate::parse(
            r#"{"apps": [{"name": "a", "rootfs": "/", "exec": ["x"]},
                         {"name": "nb", "rootfs": "/", "exec": ["y"],
                          "logMode": "non-blocking", "logBufferSize": "64K"}]}"#,
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
        async fn connect(pod: &Arc<Pod>, request: &str) -> (Host, String) {
            let (ours, theirs) = UnixStream::pair().unwrap();
            let pod = Arc::clone(pod);
            let server = tokio::spawn(async move {
                let (r, w) = theirs.into_split();
                serve(&pod, r, w).await
            });
            let (r, mut w) = ours.into_split();
            w.write_all(request.as_bytes()).await.unwrap();
            let mut r = BufReader::new(r);
            let mut answer = String::new();
            r.read_line(&mut answer).await.unwrap();
            (Host { r, w, server }, answer)
        }

        async fn frame(&mut self) -> (FrameHeader, Vec<u8>) {
            let mut h = [0u8; HEADER_LEN];
            self.r.read_exact(&mut h).await.unwrap();
            let h = FrameHeader::decode(&h).unwrap();
            let mut data = vec![0u8; h.len as usize];
            self.r.read_exact(&mut data).await.unwrap();
            (h, data)
        }

        async fn ack(&mut self, offset: u64) {
            self.w.write_all(&encode_ack(offset)).await.unwrap();
        }

        /// Data frames up to `end`: their bytes, checked to be in order.
        async fn data_until(&mut self, mut at: u64, end: u64) -> Vec<u8> {
            let mut got = Vec::new();
            while at < end {
                let (h, data) = self.frame().await;
                assert_eq!((h.kind, h.offset), (FrameKind::Data, at));
                at += data.len() as u64;
                got.extend(data);
            }
            got
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn bad_requests_get_an_err_line() {
        let pod = pod();
        for (req, answer) in [
            (
                "LOGS zz 0\n",
                "ERR no app named \"zz\" in this pod (apps: a, nb)\n",
            ),
            (
                "LOGS a 5\n",
                "ERR offset 5 is beyond the end of the app's output (0)\n",
            ),
            (
                "GET a 0\n",
                "ERR bad log stream request \"GET a 0\": expected \"LOGS <app> <offset>\"\n",
            ),
        ] {
            let (host, got) = Host::connect(&pod, req).await;
            assert_eq!(got, answer);
            assert!(host.server.await.unwrap().is_err());
        }
        let long = format!("LOGS {}\n", "a".repeat(MAX_REQUEST_LINE));
        let (host, got) = Host::connect(&pod, &long).await;
        assert_eq!(got, "ERR request line too long\n");
        drop(host);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn output_is_sent_in_large_frames_followed_acked_and_ended() {
        let pod = pod();
        let logs = &pod.apps()[0].logs;
        let big: Vec<u8> = (0..600_000u32).map(|i| i as u8).collect();
        logs.append(Stream::Stdout, b"hello ", 1);
        logs.append(Stream::Stdout, &big, 2);
        logs.append(Stream::Stderr, b"oops\n", 3);
        let end = logs.end();
        let (mut host, ok) = Host::connect(&pod, "LOGS a 0\n").await;
        assert_eq!(ok, "OK\n");
        // 600006 bytes of stdout in frames of at most 256 KiB, then stderr.
        let mut lens = Vec::new();
        let mut got = Vec::new();
        while got.len() < 600_006 {
            let (h, data) = host.frame().await;
            assert_eq!(
                (h.kind, h.stream, h.offset),
                (FrameKind::Data, StreamId::Stdout, got.len() as u64)
            );
            lens.push(data.len());
            got.extend(data);
        }
        assert_eq!(lens, [FRAME_DATA, FRAME_DATA, 600_006 - 2 * FRAME_DATA]);
        assert_eq!(&got[..6], b"hello ");
        assert_eq!(&got[6..], &big[..]);
        let (h, data) = host.frame().await;
        assert_eq!(
            (h.stream, h.offset, &data[..]),
            (StreamId::Stderr, 600_006, &b"oops\n"[..])
        );
        // Acks free the buffer.
        host.ack(600_000).await;
        while pod.apps()[0].logs.totals().acked != 600_000 {
            tokio::task::yield_now().await;
        }
        // New output is followed; the End comes once the buffer is closed.
        logs.append(Stream::Stdout, b"late", 4);
        assert_eq!(host.data_until(end, end + 4).await, b"late");
        logs.close();
        let (h, _) = host.frame().await;
        assert_eq!((h.kind, h.offset), (FrameKind::End, end + 4));
        // The connection stays until the End is acknowledged.
        assert!(!host.server.is_finished());
        host.ack(end + 4).await;
        host.server.await.unwrap().unwrap();
        assert_eq!(logs.totals().acked, end + 4);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn every_connection_gets_the_whole_stream_from_its_offset() {
        let pod = pod();
        let logs = &pod.apps()[0].logs;
        logs.append(Stream::Stdout, b"0123456789", 1);
        let (mut first, _) = Host::connect(&pod, "LOGS a 0\n").await;
        assert_eq!(first.data_until(0, 10).await, b"0123456789");
        first.ack(4).await;
        while logs.totals().acked != 4 {
            tokio::task::yield_now().await;
        }
        // A successor asking from below what is kept starts at the oldest
        // byte kept; one asking from further on gets that.
        let (mut second, _) = Host::connect(&pod, "LOGS a 2\n").await;
        assert_eq!(second.data_until(4, 10).await, b"456789");
        let (mut third, _) = Host::connect(&pod, "LOGS a 7\n").await;
        assert_eq!(third.data_until(7, 10).await, b"789");
        logs.append(Stream::Stderr, b"ab", 2);
        for host in [&mut first, &mut second, &mut third] {
            assert_eq!(host.data_until(10, 12).await, b"ab");
        }
        // Acks are the highest of all connections'.
        third.ack(8).await;
        second.ack(6).await;
        second.ack(12).await;
        while logs.totals().acked != 12 {
            tokio::task::yield_now().await;
        }
        // An ack beyond what a connection was sent closes it.
        first.ack(13).await;
        let e = first.server.await.unwrap().unwrap_err();
        assert!(
            matches!(e, RpcError::AckBeyondSent { ack: 13, sent: 12 }),
            "{e}"
        );
        // Closing a connection ends its service.
        drop(third.w);
        third.server.await.unwrap().unwrap();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn drops_are_sent_in_sequence() {
        let pod = pod();
        let logs = &pod.apps()[1].logs;
        logs.append(Stream::Stdout, &[b'x'; 60_000], 1);
        logs.append(Stream::Stdout, &[b'y'; 10_000], 2); // 5536 fit
        logs.ack(60_000).unwrap();
        logs.append(Stream::Stderr, b"after", 3);
        let (mut host, _) = Host::connect(&pod, "LOGS nb 0\n").await;
        let (h, data) = host.frame().await;
        assert_eq!((h.offset, data.len()), (60_000, 5536));
        let (h, _) = host.frame().await;
        assert_eq!(
            (h.kind, h.offset, h.count),
            (FrameKind::Dropped, 65_536, 4464)
        );
        let (h, data) = host.frame().await;
        assert_eq!(
            (h.kind, h.offset, &data[..]),
            (FrameKind::Data, 70_000, &b"after"[..])
        );
        assert_eq!(pod.status().apps[1].dropped_bytes, 4464);
    }

    #[test]
    fn frames_join_one_stream_read_close_together() {
        let b = LogBuffer::new(1 << 20, kvmpod_api::manifest::LogMode::Blocking);
        b.append(Stream::Stdout, b"aa", 0);
        b.append(Stream::Stdout, b"bb", 1_000);
        b.append(Stream::Stderr, b"cc", 2_000);
        b.append(Stream::Stderr, b"dd", 2_000 + COALESCE_NS + 1);
        let f = frames(b.read(0, usize::MAX).items);
        let got: Vec<(StreamId, u64, u32, usize)> = f
            .iter()
            .map(|f| {
                (
                    f.header.stream,
                    f.header.offset,
                    f.header.len,
                    f.parts.len(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (StreamId::Stdout, 0, 4, 2),
                (StreamId::Stderr, 4, 2, 1),
                (StreamId::Stderr, 6, 2, 1)
            ]
        );
    }
}
