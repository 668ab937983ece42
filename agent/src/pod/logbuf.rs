//! Per-app bounded log buffers.
//!
//! Each app's stdout and stderr are read into one buffer of chunks, each
//! tagged with its stream. When the buffer is full the oldest chunks are
//! dropped, and a reader that falls behind learns how many bytes it missed:
//! a chatty app cannot exhaust guest memory, and nothing is lost silently.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Position of the first byte in the app's whole output.
    pub offset: u64,
    pub stream: Stream,
    pub data: Vec<u8>,
    pub boottime_ns: u64,
}

/// What a reader gets: the chunks since its cursor, and how many bytes
/// before them it missed because they were dropped.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Read {
    pub dropped: u64,
    pub chunks: Vec<Chunk>,
    /// Where to read from next.
    pub next: u64,
    /// No more output will come and everything was read.
    pub finished: bool,
}

#[derive(Debug, Default)]
struct Inner {
    chunks: VecDeque<Chunk>,
    bytes: usize,
    /// Offset just past the last byte ever appended.
    end: u64,
    closed: bool,
}

#[derive(Debug)]
pub struct LogBuffer {
    inner: Mutex<Inner>,
    capacity: usize,
    /// Bumped on every append and on close, to wake followers.
    changed: watch::Sender<u64>,
}

impl LogBuffer {
    pub fn new(capacity: usize) -> Self {
        LogBuffer {
            inner: Mutex::new(Inner::default()),
            capacity: capacity.max(1),
            changed: watch::channel(0).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends output read from the app. A single chunk larger than the
    /// whole buffer keeps only its tail.
    pub fn append(&self, stream: Stream, data: &[u8], boottime_ns: u64) {
        if data.is_empty() {
            return;
        }
        let mut inner = self.lock();
        let skip = data.len().saturating_sub(self.capacity);
        let kept = &data[skip..];
        let offset = inner.end + skip as u64;
        inner.end += data.len() as u64;
        inner.bytes += kept.len();
        inner.chunks.push_back(Chunk {
            offset,
            stream,
            data: kept.to_vec(),
            boottime_ns,
        });
        while inner.bytes > self.capacity {
            match inner.chunks.pop_front() {
                Some(old) => inner.bytes -= old.data.len(),
                None => break,
            }
        }
        drop(inner);
        self.changed.send_modify(|n| *n += 1);
    }

    /// No more output will be appended (the app has exited and its pipes
    /// are drained).
    pub fn close(&self) {
        self.lock().closed = true;
        self.changed.send_modify(|n| *n += 1);
    }

    /// Everything from `cursor` on.
    pub fn read_from(&self, cursor: u64) -> Read {
        let inner = self.lock();
        let first = inner.chunks.front().map_or(inner.end, |c| c.offset);
        let dropped = first.saturating_sub(cursor);
        let mut chunks = Vec::new();
        for c in &inner.chunks {
            let c_end = c.offset + c.data.len() as u64;
            if c_end <= cursor {
                continue;
            }
            let mut c = c.clone();
            if c.offset < cursor {
                let cut = (cursor - c.offset) as usize;
                c.data.drain(..cut);
                c.offset = cursor;
            }
            chunks.push(c);
        }
        Read {
            dropped,
            chunks,
            next: inner.end.max(cursor),
            finished: inner.closed,
        }
    }

    /// The position just past the last byte appended so far.
    pub fn end(&self) -> u64 {
        self.lock().end
    }

    /// A receiver that changes whenever there is something new.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_get_everything_in_order_with_streams_apart() {
        let b = LogBuffer::new(1024);
        b.append(Stream::Stdout, b"out1\n", 1);
        b.append(Stream::Stderr, b"err1\n", 2);
        b.append(Stream::Stdout, b"out2\n", 3);
        let r = b.read_from(0);
        assert_eq!(r.dropped, 0);
        assert_eq!(r.next, 15);
        let got: Vec<(Stream, &[u8])> = r.chunks.iter().map(|c| (c.stream, &c.data[..])).collect();
        assert_eq!(
            got,
            [
                (Stream::Stdout, &b"out1\n"[..]),
                (Stream::Stderr, &b"err1\n"[..]),
                (Stream::Stdout, &b"out2\n"[..])
            ]
        );
        assert!(!r.finished);
        let r = b.read_from(15);
        assert!(r.chunks.is_empty());
        b.close();
        assert!(b.read_from(15).finished);
    }

    #[test]
    fn a_full_buffer_drops_the_oldest_and_says_how_much() {
        let b = LogBuffer::new(10);
        b.append(Stream::Stdout, b"aaaa", 0);
        b.append(Stream::Stdout, b"bbbb", 0);
        b.append(Stream::Stdout, b"cccc", 0); // 12 > 10: "aaaa" goes
        let r = b.read_from(0);
        assert_eq!(r.dropped, 4);
        assert_eq!(r.chunks[0].data, b"bbbb");
        assert_eq!(r.chunks[0].offset, 4);
        // A huge write keeps only its tail.
        b.append(Stream::Stderr, &[b'x'; 100], 0);
        let r = b.read_from(12);
        assert_eq!(r.dropped, 90);
        assert_eq!(r.chunks.len(), 1);
        assert_eq!(r.chunks[0].data.len(), 10);
        assert_eq!(r.next, 112);
    }

    #[test]
    fn a_cursor_inside_a_chunk_gets_the_rest_of_it() {
        let b = LogBuffer::new(100);
        b.append(Stream::Stdout, b"hello world", 0);
        let r = b.read_from(6);
        assert_eq!(r.chunks[0].data, b"world");
        assert_eq!(r.chunks[0].offset, 6);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn followers_are_woken() {
        let b = std::sync::Arc::new(LogBuffer::new(100));
        let mut rx = b.subscribe();
        let b2 = b.clone();
        tokio::spawn(async move { b2.append(Stream::Stdout, b"x", 0) });
        rx.changed().await.unwrap();
        assert_eq!(b.read_from(0).chunks.len(), 1);
    }
}
