//! Reading the agent's log stream (`kvmpod_api::logstream`): its reply
//! line, then frames, through one large buffer so that a read takes in as
//! many frames as the connection holds and a frame's data is handed out
//! where it lies, without a copy or an allocation per frame.

use std::io;

use kvmpod_api::logstream::{FrameHeader, HEADER_LEN};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::LogError;

/// The read buffer: large reads keep the per-syscall cost low; it grows
/// (once) for a frame larger than this.
pub const READ_BUF: usize = 256 << 10;

/// Frames from one app's log stream.
pub struct FrameReader<S> {
    stream: S,
    app: String,
    buf: Vec<u8>,
    /// Unread bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    /// The length of the frame handed out last; consumed at the next call.
    taken: usize,
}

impl<S: AsyncRead + Unpin> FrameReader<S> {
    pub fn new(stream: S, app: &str) -> Self {
        FrameReader {
            stream,
            app: app.to_string(),
            buf: vec![0; READ_BUF],
            start: 0,
            end: 0,
            taken: 0,
        }
    }

    /// The connection, to write acknowledgements on.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    fn broken(&self, source: io::Error) -> LogError {
        LogError::Broken {
            app: self.app.clone(),
            source,
        }
    }

    fn protocol(&self, what: String) -> LogError {
        LogError::Protocol {
            app: self.app.clone(),
            what,
        }
    }

    /// Makes room for `need` bytes from `start`: moves the unread bytes to
    /// the front, or grows the buffer for a frame larger than it.
    fn make_room(&mut self, need: usize) {
        if self.start + need <= self.buf.len() {
            return;
        }
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        if need > self.buf.len() {
            self.buf.resize(need, 0);
        }
    }

    /// One read into the buffer; 0 at the end of the stream.
    async fn fill(&mut self) -> Result<usize, LogError> {
        match self.stream.read(&mut self.buf[self.end..]).await {
            Ok(n) => {
                self.end += n;
                Ok(n)
            }
            Err(e) => Err(self.broken(e)),
        }
    }

    /// The agent's reply line, without its newline; what follows it stays
    /// buffered for `next`.
    pub async fn read_line(&mut self, max: usize) -> Result<String, LogError> {
        loop {
            let unread = &self.buf[self.start..self.end];
            if let Some(i) = unread.iter().position(|&b| b == b'\n') {
                let line = String::from_utf8_lossy(&unread[..i]).into_owned();
                self.start += i + 1;
                return Ok(line);
            }
            if unread.len() > max {
                return Err(self.protocol(format!("a reply line longer than {max} bytes")));
            }
            self.make_room(self.end - self.start + 1);
            if self.fill().await? == 0 {
                return Err(self.broken(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the agent closed the connection without answering",
                )));
            }
        }
    }

    /// The next frame's header, its data then in [`FrameReader::data`];
    /// `None` when the stream ends between frames.
    ///
    /// Cancel-safe: the only await is a single read whose bytes are kept,
    /// so a batch timer may interrupt it without losing anything.
    pub async fn next(&mut self) -> Result<Option<FrameHeader>, LogError> {
        self.start += self.taken;
        self.taken = 0;
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        }
        loop {
            let unread = self.end - self.start;
            let need = if unread >= HEADER_LEN {
                let mut h = [0u8; HEADER_LEN];
                h.copy_from_slice(&self.buf[self.start..self.start + HEADER_LEN]);
                let header = FrameHeader::decode(&h).map_err(|e| self.protocol(e.to_string()))?;
                let need = HEADER_LEN + header.len as usize;
                if unread >= need {
                    self.taken = need;
                    return Ok(Some(header));
                }
                need
            } else {
                HEADER_LEN
            };
            self.make_room(need);
            if self.fill().await? == 0 {
                if unread == 0 {
                    return Ok(None);
                }
                return Err(self.broken(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the stream ended inside a frame ({unread} of {need} bytes)"),
                )));
            }
        }
    }

    /// The data of the frame `next` returned last.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start + HEADER_LEN.min(self.taken)..self.start + self.taken]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvmpod_api::logstream::{FrameKind, StreamId, MAX_FRAME_DATA};
    use tokio::io::AsyncWriteExt;

    pub fn frame(kind: FrameKind, offset: u64, data: &[u8], count: u64) -> Vec<u8> {
        let h = FrameHeader {
            kind,
            stream: StreamId::Stdout,
            len: data.len() as u32,
            offset,
            boottime_ns: 7,
            count,
        };
        let mut out = h.encode().to_vec();
        out.extend_from_slice(data);
        out
    }

    /// Writes `bytes` in pieces of `piece` bytes, to cut frames anywhere.
    async fn reader_of(bytes: Vec<u8>, piece: usize) -> FrameReader<tokio::io::DuplexStream> {
        let (a, mut b) = tokio::io::duplex(4096);
        tokio::spawn(async move {
            for c in bytes.chunks(piece) {
                b.write_all(c).await.unwrap();
            }
        });
        FrameReader::new(a, "web")
    }

    #[tokio::test(flavor = "current_thread")]
    async fn frames_cut_anywhere_are_read_whole() {
        let mut bytes = b"OK\n".to_vec();
        let big = vec![b'z'; MAX_FRAME_DATA];
        bytes.extend(frame(FrameKind::Data, 0, b"hello\n", 0));
        bytes.extend(frame(FrameKind::Data, 6, &big, 0));
        bytes.extend(frame(FrameKind::Dropped, 6 + big.len() as u64, b"", 9));
        bytes.extend(frame(FrameKind::End, 15 + big.len() as u64, b"", 0));
        for piece in [1, 7, 4096, 1 << 20] {
            let mut r = reader_of(bytes.clone(), piece).await;
            assert_eq!(r.read_line(64).await.unwrap(), "OK");
            let h = r.next().await.unwrap().unwrap();
            assert_eq!(
                (h.kind, h.offset, r.data()),
                (FrameKind::Data, 0, &b"hello\n"[..])
            );
            let h = r.next().await.unwrap().unwrap();
            assert_eq!((h.len as usize, r.data().len()), (big.len(), big.len()));
            assert!(r.data().iter().all(|&b| b == b'z'));
            let h = r.next().await.unwrap().unwrap();
            assert_eq!(
                (h.kind, h.count, r.data().len()),
                (FrameKind::Dropped, 9, 0)
            );
            let h = r.next().await.unwrap().unwrap();
            assert_eq!(h.kind, FrameKind::End);
            assert!(r.next().await.unwrap().is_none());
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn truncated_and_bad_frames_are_errors() {
        let mut bytes = frame(FrameKind::Data, 0, b"hello", 0);
        bytes.truncate(bytes.len() - 2);
        let mut r = reader_of(bytes, 10).await;
        let e = r.next().await.unwrap_err();
        assert!(matches!(e, LogError::Broken { .. }), "{e:?}");
        assert!(!e.is_fatal());

        let mut bytes = frame(FrameKind::End, 0, b"", 0);
        bytes[0] = 42;
        let mut r = reader_of(bytes, 100).await;
        let e = r.next().await.unwrap_err();
        assert!(
            e.to_string().contains("app web: log stream protocol error"),
            "{e}"
        );
        assert!(e.is_fatal());

        let mut r = reader_of(vec![b'x'; 300], 100).await;
        assert!(r.read_line(256).await.unwrap_err().is_fatal());
    }
}
