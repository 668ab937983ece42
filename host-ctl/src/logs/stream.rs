//! One connection of an app's log stream (`kvmpod_api::logstream`): ask
//! for the output after what the log file holds, then turn frames into
//! records, gathered into batches. A batch is written when it is 1 MiB,
//! 50 ms old, or (past 64 KiB) when the connection has nothing more to
//! read at once; only then is the agent told, with one acknowledgement,
//! that it may forget everything before the batch's end.
//!
//! Bytes the file already holds (a resumed stream may send them again)
//! are skipped, so nothing is ever written twice; bytes missing without a
//! Dropped frame are a protocol error.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use kvmpod_api::logstream::{encode_ack, FrameHeader, FrameKind, Request};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use super::frames::FrameReader;
use super::{wall_time, LogError, Printer, Stream, Writer};

type Result<T> = std::result::Result<T, LogError>;

/// A batch is written once it holds this many bytes of records...
pub const MAX_BATCH: usize = 1 << 20;
/// ...or its first record is this old...
pub const MAX_DELAY: Duration = Duration::from_millis(50);
/// ...or it holds this much and nothing more can be read at once: a fast
/// app then never waits for the timer, while a trickle is still gathered.
pub const EAGER_BATCH: usize = 64 << 10;

/// The longest reply line accepted from the agent.
const MAX_REPLY: usize = 4096;

/// Where a stream's output goes besides the log file, and how its times
/// are read.
#[derive(Clone)]
pub struct Tee {
    /// The terminal of an attached `host-ctl run`.
    pub printer: Option<Arc<Mutex<Printer>>>,
    /// Wall-clock time of the guest's boot, for the records' times.
    pub guest_boot: SystemTime,
    /// Counts batches written (by every collector of a pod): how the
    /// monitor sees that output is still moving.
    pub progress: Arc<AtomicU64>,
}

impl Tee {
    pub fn new(printer: Option<Arc<Mutex<Printer>>>, guest_boot: SystemTime) -> Self {
        Tee {
            printer,
            guest_boot,
            progress: Arc::new(AtomicU64::new(0)),
        }
    }

    fn with_printer(&self, f: impl FnOnce(&mut Printer)) {
        if let Some(p) = &self.printer {
            f(&mut p.lock().unwrap_or_else(|e| e.into_inner()));
        }
    }

    /// Prints what is left of the app's unfinished lines.
    pub fn flush_app(&self, app: &str) {
        self.with_printer(|p| p.flush_app(app));
    }
}

/// How a stream ended, when not with an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// An End frame: the app's output is all in the file.
    Complete,
    /// The monitor said the pod is over.
    Stopped,
}

/// Streams `app`'s output from a connection to the agent's log port into
/// `writer`, from `writer.end()`, until its End frame, an error, or
/// `stop` becomes true. Whatever was received is in the file when this
/// returns (written, not synced).
pub async fn stream_app<S: AsyncRead + AsyncWrite + Unpin>(
    conn: S,
    app: &str,
    writer: &mut Writer,
    tee: &Tee,
    stop: &mut watch::Receiver<bool>,
) -> Result<Ended> {
    let mut s = Session {
        reader: FrameReader::new(conn, app),
        app,
        writer,
        tee,
        acked: 0,
    };
    let result = match s.handshake().await {
        Ok(()) => s.pump(stop).await,
        Err(e) => Err(e),
    };
    if result.is_err() {
        // Keep what arrived; it is not acknowledged, so a new stream may
        // send it again, and it will be skipped then.
        s.writer.flush()?;
    }
    result
}

struct Session<'a, S> {
    reader: FrameReader<S>,
    app: &'a str,
    writer: &'a mut Writer,
    tee: &'a Tee,
    /// The last acknowledged offset.
    acked: u64,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<'_, S> {
    fn broken(&self, source: io::Error) -> LogError {
        LogError::Broken {
            app: self.app.to_string(),
            source,
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        let conn = self.reader.get_mut();
        let sent = match conn.write_all(bytes).await {
            Ok(()) => conn.flush().await,
            Err(e) => Err(e),
        };
        sent.map_err(|e| self.broken(e))
    }

    /// Sends the request and reads the agent's answer; then acknowledges
    /// what the file already holds, which a collector that died may not
    /// have done.
    async fn handshake(&mut self) -> Result<()> {
        let from = self.writer.end();
        let req = Request {
            app: self.app.to_string(),
            from,
        };
        self.send(format!("{req}\n").as_bytes()).await?;
        let line = self.reader.read_line(MAX_REPLY).await?;
        if let Some(why) = line.strip_prefix("ERR") {
            return Err(LogError::Refused {
                app: self.app.to_string(),
                why: why.trim().to_string(),
            });
        }
        if line != "OK" {
            return Err(LogError::Protocol {
                app: self.app.to_string(),
                what: format!("the agent answered {line:?} to {req:?}, not OK"),
            });
        }
        if from > 0 {
            self.ack(from).await?;
        }
        Ok(())
    }

    async fn ack(&mut self, upto: u64) -> Result<()> {
        self.send(&encode_ack(upto)).await?;
        self.acked = upto;
        Ok(())
    }

    /// Writes the batch, then acknowledges it.
    async fn persist(&mut self) -> Result<()> {
        let upto = self.writer.flush()?;
        self.tee.progress.fetch_add(1, Ordering::Relaxed);
        if upto > self.acked {
            self.ack(upto).await?;
        }
        Ok(())
    }

    /// The next frame, or `None` when the batch is due first (or `stop`).
    async fn next_or_due(
        &mut self,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Option<Option<FrameHeader>>> {
        let Some(since) = self.writer.pending_since() else {
            return tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => Ok(None),
                h = self.reader.next() => h.map(Some),
            };
        };
        let deadline = if self.writer.pending_len() >= EAGER_BATCH {
            Instant::now()
        } else {
            since + MAX_DELAY
        };
        match tokio::time::timeout_at(deadline.into(), self.reader.next()).await {
            Ok(h) => h.map(Some),
            Err(_) => Ok(None),
        }
    }

    async fn pump(&mut self, stop: &mut watch::Receiver<bool>) -> Result<Ended> {
        loop {
            let header = match self.next_or_due(stop).await? {
                Some(h) => h,
                None if self.writer.pending_since().is_some() => {
                    self.persist().await?;
                    continue;
                }
                None => return Ok(Ended::Stopped),
            };
            let Some(h) = header else {
                return Err(self.broken(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the agent closed the stream before the app's output ended",
                )));
            };
            if take(self.app, self.writer, self.tee, &h, self.reader.data())? {
                let upto = self.writer.flush()?;
                // The agent may close as soon as it reads this; a lost ack
                // only means it keeps the tail a little longer.
                let _ = self.ack(upto).await;
                return Ok(Ended::Complete);
            }
            let due = self
                .writer
                .pending_since()
                .is_some_and(|t| t.elapsed() >= MAX_DELAY);
            if due || self.writer.pending_len() >= MAX_BATCH {
                self.persist().await?;
            }
        }
    }
}

/// Adds a frame to the batch (and the terminal), skipping what the log
/// already holds; whether it was the End frame.
fn take(app: &str, writer: &mut Writer, tee: &Tee, h: &FrameHeader, data: &[u8]) -> Result<bool> {
    let end = writer.end();
    let protocol = |what: String| LogError::Protocol {
        app: app.to_string(),
        what,
    };
    let span = match h.kind {
        FrameKind::Data => data.len() as u64,
        FrameKind::Dropped => h.count,
        FrameKind::End => 0,
    };
    let last = h.offset.checked_add(span).ok_or_else(|| {
        protocol(format!(
            "a {:?} frame at offset {} overflows",
            h.kind, h.offset
        ))
    })?;
    if h.offset > end {
        return Err(protocol(format!(
            "output {end}..{} is missing: the stream went on at offset {} without a Dropped frame",
            h.offset, h.offset
        )));
    }
    if h.kind == FrameKind::End {
        return Ok(true);
    }
    if last <= end {
        return Ok(false); // already in the file
    }
    let time = wall_time(tee.guest_boot, h.boottime_ns);
    let stream = Stream::from(h.stream);
    if h.kind == FrameKind::Dropped {
        writer.push_dropped(time, stream, last - end)?;
        tee.with_printer(|p| p.print_dropped(app, last - end));
    } else {
        let new = &data[(end - h.offset) as usize..];
        writer.push_data(time, stream, new)?;
        tee.with_printer(|p| p.print(app, stream, new));
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::store::tests::{files, records};
    use crate::logs::testing::{all_bytes, data, end, file_end, frame, read_ack, read_line, text};
    use crate::logs::{LogFiles, Rotation};
    use tokio::io::AsyncWriteExt;
    use tokio::net::UnixStream;

    struct Host {
        _dir: tempfile::TempDir,
        files: LogFiles,
        writer: Writer,
        tee: Tee,
        stop: watch::Sender<bool>,
    }

    fn host(rotation: Rotation) -> Host {
        let dir = tempfile::tempdir().unwrap();
        let files = files(dir.path(), "web", rotation.max_files);
        Host {
            writer: Writer::open(&files, rotation).unwrap(),
            _dir: dir,
            files,
            tee: Tee::new(None, SystemTime::now()),
            stop: watch::Sender::new(false),
        }
    }

    impl Host {
        async fn stream(&mut self, conn: UnixStream) -> Result<Ended> {
            let mut stop = self.stop.subscribe();
            stream_app(conn, "web", &mut self.writer, &self.tee, &mut stop).await
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn batches_are_written_before_they_are_acknowledged() {
        let mut h = host(Rotation {
            max_size: 4 << 20,
            max_files: 5,
        });
        let expected = text(8 << 20);
        let total = expected.len() as u64;
        let (conn, agent) = UnixStream::pair().unwrap();
        let (mut rd, mut wr) = agent.into_split();
        let sent = expected.clone();
        let sender = tokio::spawn(async move {
            wr.write_all(b"OK\n").await.unwrap();
            let mut off = 0;
            for piece in sent.chunks(4000) {
                wr.write_all(&data(off, piece)).await.unwrap();
                off += piece.len() as u64;
            }
            wr.write_all(&end(off)).await.unwrap();
            wr
        });
        let files = h.files.clone();
        let acks = tokio::spawn(async move {
            assert_eq!(read_line(&mut rd).await, "LOGS web 0");
            let mut acks = Vec::new();
            while let Some(a) = read_ack(&mut rd).await {
                assert!(file_end(&files) >= a, "ack {a} before the write");
                acks.push(a);
            }
            acks
        });
        assert_eq!(h.stream(conn).await.unwrap(), Ended::Complete);
        drop(sender.await.unwrap());
        let acks = acks.await.unwrap();
        assert_eq!(*acks.last().unwrap(), total);
        assert!(acks.windows(2).all(|w| w[0] < w[1]), "{acks:?}");
        assert!(acks.len() < 2100 / 4, "{} acks for 2100 frames", acks.len());
        assert_eq!(all_bytes(&h.files), expected);
        assert!(h.files.rotated[0].exists(), "8 MiB rotated at 4 MiB");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn every_ack_is_already_in_the_file() {
        let mut h = host(Rotation::default());
        let files = h.files.clone();
        let (conn, mut agent) = UnixStream::pair().unwrap();
        let fake = tokio::spawn(async move {
            assert_eq!(read_line(&mut agent).await, "LOGS web 0");
            agent.write_all(b"OK\n").await.unwrap();
            let mut off = 0u64;
            let mut acked = Vec::new();
            // Bursts of frames; after each, wait for the acknowledgement
            // and check the file holds everything before it.
            for burst in 0..20u64 {
                let mut bytes = Vec::new();
                for _ in 0..(1 + burst * 13) {
                    let piece = text(700 + burst as usize);
                    bytes.extend(data(off, &piece));
                    off += piece.len() as u64;
                }
                agent.write_all(&bytes).await.unwrap();
                loop {
                    let a = read_ack(&mut agent).await.unwrap();
                    assert!(file_end(&files) >= a, "ack {a} before the write");
                    acked.push(a);
                    if a == off {
                        break;
                    }
                }
            }
            agent.write_all(&end(off)).await.unwrap();
            assert_eq!(read_ack(&mut agent).await, Some(off));
            (acked, off)
        });
        assert_eq!(h.stream(conn).await.unwrap(), Ended::Complete);
        let (acked, total) = fake.await.unwrap();
        assert!((20..100).contains(&acked.len()), "{acked:?}");
        assert_eq!(all_bytes(&h.files).len() as u64, total);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_trickle_is_gathered_for_up_to_50_ms() {
        let mut h = host(Rotation::default());
        let (conn, mut agent) = UnixStream::pair().unwrap();
        let fake = tokio::spawn(async move {
            read_line(&mut agent).await;
            agent.write_all(b"OK\n").await.unwrap();
            let start = Instant::now();
            for i in 0..4u64 {
                agent.write_all(&data(i * 3, b"ab\n")).await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let first = read_ack(&mut agent).await.unwrap();
            let waited = start.elapsed();
            agent.write_all(&end(12)).await.unwrap();
            (first, waited, read_ack(&mut agent).await)
        });
        assert_eq!(h.stream(conn).await.unwrap(), Ended::Complete);
        let (first, waited, last) = fake.await.unwrap();
        assert!(waited >= MAX_DELAY, "acknowledged after {waited:?}");
        assert!(first >= 3, "{first}");
        assert_eq!(last, Some(12));
        assert!(records(&h.files.current).len() <= 4);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_resumed_stream_skips_what_the_file_holds() {
        let mut h = host(Rotation::default());
        h.writer
            .push_data(SystemTime::now(), Stream::Stdout, b"0123456789")
            .unwrap();
        h.writer.flush().unwrap();
        let (conn, mut agent) = UnixStream::pair().unwrap();
        let fake = tokio::spawn(async move {
            assert_eq!(read_line(&mut agent).await, "LOGS web 10");
            agent.write_all(b"OK\n").await.unwrap();
            // What the file holds is acknowledged at once.
            assert_eq!(read_ack(&mut agent).await, Some(10));
            let mut bytes = data(0, b"01234");
            bytes.extend(data(5, b"56789abcdef"));
            bytes.extend(data(16, b"gh"));
            bytes.extend(end(18));
            agent.write_all(&bytes).await.unwrap();
            let mut last = 0;
            while let Some(a) = read_ack(&mut agent).await {
                last = a;
            }
            last
        });
        assert_eq!(h.stream(conn).await.unwrap(), Ended::Complete);
        drop(h.writer);
        assert_eq!(fake.await.unwrap(), 18);
        assert_eq!(all_bytes(&h.files), b"0123456789abcdefgh");
        let offsets: Vec<u64> = records(&h.files.current).iter().map(|r| r.offset).collect();
        assert_eq!(offsets, [0, 10, 16]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_gap_without_a_dropped_frame_is_a_protocol_error() {
        let mut h = host(Rotation::default());
        let (conn, mut agent) = UnixStream::pair().unwrap();
        tokio::spawn(async move {
            read_line(&mut agent).await;
            let mut bytes = b"OK\n".to_vec();
            bytes.extend(data(0, b"abc"));
            bytes.extend(data(5, b"x"));
            agent.write_all(&bytes).await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let e = h.stream(conn).await.unwrap_err();
        assert!(e.is_fatal());
        assert_eq!(
            e.to_string(),
            "app web: log stream protocol error: output 3..5 is missing: the stream went on at offset 5 without a Dropped frame"
        );
        assert_eq!(all_bytes(&h.files), b"abc", "what came before is kept");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_err_reply_names_the_app() {
        let mut h = host(Rotation::default());
        let (conn, mut agent) = UnixStream::pair().unwrap();
        tokio::spawn(async move {
            read_line(&mut agent).await;
            agent
                .write_all(b"ERR no app named \"web\"\n")
                .await
                .unwrap();
        });
        let e = h.stream(conn).await.unwrap_err();
        assert!(e.is_fatal());
        assert_eq!(
            e.to_string(),
            "app web: the agent refused to stream its output: no app named \"web\""
        );
        let (conn, mut agent) = UnixStream::pair().unwrap();
        tokio::spawn(async move {
            read_line(&mut agent).await;
            agent.write_all(b"HELLO\n").await.unwrap();
        });
        let e = h.stream(conn).await.unwrap_err();
        assert!(e.to_string().contains("answered \"HELLO\""), "{e}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn dropped_output_becomes_a_record_and_a_closed_stream_is_not_fatal() {
        let mut h = host(Rotation::default());
        let (conn, mut agent) = UnixStream::pair().unwrap();
        tokio::spawn(async move {
            read_line(&mut agent).await;
            let mut bytes = b"OK\n".to_vec();
            bytes.extend(data(0, b"a\n"));
            bytes.extend(frame(FrameKind::Dropped, 2, b"", 100));
            bytes.extend(data(102, b"b\n"));
            agent.write_all(&bytes).await.unwrap();
            // Closes without an End frame.
        });
        let e = h.stream(conn).await.unwrap_err();
        assert!(!e.is_fatal(), "{e}");
        assert!(matches!(e, LogError::Broken { .. }), "{e:?}");
        let r = records(&h.files.current);
        assert_eq!(r.len(), 3);
        assert_eq!((r[1].offset, r[1].dropped, r[1].start()), (102, 100, 2));
        assert_eq!(h.writer.end(), 104);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn stop_ends_an_idle_stream() {
        let mut h = host(Rotation::default());
        let (conn, mut agent) = UnixStream::pair().unwrap();
        tokio::spawn(async move {
            read_line(&mut agent).await;
            agent.write_all(b"OK\n").await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let stop = h.stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            stop.send_replace(true);
        });
        assert_eq!(h.stream(conn).await.unwrap(), Ended::Stopped);
    }
}
