//! Per-app output buffers, kept until the host has persisted them.
//!
//! An app's stdout and stderr are read into one buffer of chunks, in one
//! offset space: a byte's position in the app's whole output, in read
//! order. Output stays until the host acknowledges it over the log stream
//! (`kvmpod_api::logstream`), so a host that reconnects loses nothing.
//! When the unacknowledged output fills the buffer, a blocking app's pipes
//! are no longer read and the app waits in its writes; a non-blocking app's
//! new output is dropped instead, counted, and kept as a gap in the offset
//! space so every reader learns where and how much. Readers that do not
//! acknowledge (the `Logs` RPC, `attach`) hold nothing: only acks free
//! space.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use kvmpod_api::manifest::LogMode;
use tokio::sync::watch;

use super::PodError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// A shared, immutable run of bytes: readers get their own view without a
/// copy, and acknowledging part of a chunk moves its start.
#[derive(Debug, Clone)]
pub struct Piece {
    buf: Arc<Vec<u8>>,
    start: usize,
    end: usize,
}

impl Piece {
    fn new(data: Vec<u8>) -> Self {
        let end = data.len();
        Piece {
            buf: Arc::new(data),
            start: 0,
            end,
        }
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub fn as_slice(&self) -> &[u8] {
        self.buf.get(self.start..self.end).unwrap_or_default()
    }

    /// The bytes from `from` to `to` of this piece (clamped to it).
    pub fn slice(&self, from: usize, to: usize) -> Piece {
        let to = to.min(self.len());
        Piece {
            buf: Arc::clone(&self.buf),
            start: self.start + from.min(to),
            end: self.start + to,
        }
    }
}

/// Output read from one of the app's pipes.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// Position of the first byte in the app's whole output.
    pub offset: u64,
    pub stream: Stream,
    pub data: Piece,
    pub boottime_ns: u64,
}

/// What the buffer holds at an offset: output, or a gap where output was
/// dropped.
#[derive(Debug, Clone)]
pub enum Item {
    Data(Chunk),
    /// `count` bytes at `offset` were dropped (non-blocking mode only).
    Dropped {
        offset: u64,
        count: u64,
        boottime_ns: u64,
    },
}

impl Item {
    pub fn offset(&self) -> u64 {
        match self {
            Item::Data(c) => c.offset,
            Item::Dropped { offset, .. } => *offset,
        }
    }

    pub fn end(&self) -> u64 {
        match self {
            Item::Data(c) => c.offset + c.data.len() as u64,
            Item::Dropped { offset, count, .. } => offset + count,
        }
    }

    /// The item without its first `n` bytes.
    fn skip(&self, n: u64) -> Item {
        match self {
            Item::Data(c) => {
                let cut = usize::try_from(n).unwrap_or(usize::MAX);
                Item::Data(Chunk {
                    offset: c.offset + n,
                    data: c.data.slice(cut, c.data.len()),
                    ..c.clone()
                })
            }
            Item::Dropped {
                offset,
                count,
                boottime_ns,
            } => Item::Dropped {
                offset: offset + n,
                count: count.saturating_sub(n),
                boottime_ns: *boottime_ns,
            },
        }
    }

    fn data_len(&self) -> usize {
        match self {
            Item::Data(c) => c.data.len(),
            Item::Dropped { .. } => 0,
        }
    }
}

/// A run of consecutive drops that has ended: `count` bytes from `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropRun {
    pub offset: u64,
    pub count: u64,
}

/// What an append did to the runs of drops: the run it ended (when it kept
/// bytes after drops), and the offset of the run it started (when it began
/// dropping). A run can last as long as the host does not read, so it is
/// announced when it starts, not only counted when it ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropNews {
    pub ended: Option<DropRun>,
    pub started: Option<u64>,
}

/// What a reader gets from its cursor on.
#[derive(Debug, Default)]
pub struct Read {
    /// In offset order, without holes; the first may start after the
    /// cursor when the output before it was acknowledged (and let go).
    pub items: Vec<Item>,
    /// Where to read from next.
    pub next: u64,
    /// No more output will come and everything was read.
    pub finished: bool,
}

/// The buffer's counters, for the app's status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Offset just past the last byte read from the app.
    pub end: u64,
    /// Everything before this is persisted by the host.
    pub acked: u64,
    /// Bytes dropped, ever.
    pub dropped: u64,
}

#[derive(Debug, Default)]
struct Inner {
    /// Cover `acked..end` exactly, in order.
    items: VecDeque<Item>,
    /// Bytes of output held (gaps hold none).
    bytes: usize,
    totals: Totals,
    /// The run of drops under way: its first offset and size.
    run: Option<DropRun>,
    closed: bool,
    /// Log stream connections reading this buffer.
    readers: usize,
}

impl Inner {
    /// Appends output, merging a gap into the one before it.
    fn push(&mut self, item: Item) {
        if let (
            Item::Dropped { count, .. },
            Some(Item::Dropped {
                count: last_count, ..
            }),
        ) = (&item, self.items.back_mut())
        {
            *last_count += *count;
        } else {
            self.bytes += item.data_len();
            self.items.push_back(item);
        }
    }

    /// Keeps `data` at the end; returns the run of drops it ends, if any.
    fn keep(&mut self, stream: Stream, data: Vec<u8>, boottime_ns: u64) -> Option<DropRun> {
        if data.is_empty() {
            return None;
        }
        let offset = self.totals.end;
        self.totals.end += data.len() as u64;
        self.push(Item::Data(Chunk {
            offset,
            stream,
            data: Piece::new(data),
            boottime_ns,
        }));
        self.run.take()
    }

    /// Drops `count` bytes at the end; the offset of the run of drops it
    /// starts, if it starts one.
    fn drop_bytes(&mut self, count: u64, boottime_ns: u64) -> Option<u64> {
        if count == 0 {
            return None;
        }
        let offset = self.totals.end;
        self.totals.end += count;
        self.totals.dropped += count;
        self.push(Item::Dropped {
            offset,
            count,
            boottime_ns,
        });
        let started = self.run.is_none().then_some(offset);
        let run = self.run.get_or_insert(DropRun { offset, count: 0 });
        run.count += count;
        started
    }
}

#[derive(Debug)]
pub struct LogBuffer {
    inner: Mutex<Inner>,
    capacity: usize,
    mode: LogMode,
    /// Bumped on every change (output, acks, close, readers) to wake
    /// followers, blocked pumps and the shutdown's wait.
    changed: watch::Sender<u64>,
}

impl LogBuffer {
    pub fn new(capacity: usize, mode: LogMode) -> Self {
        LogBuffer {
            inner: Mutex::new(Inner::default()),
            capacity: capacity.max(1),
            mode,
            changed: watch::channel(0).0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// How many bytes may be read from the app now. A blocking app's
    /// pumps wait here while its unacknowledged output fills the buffer.
    pub async fn room(&self) -> usize {
        if self.mode == LogMode::NonBlocking {
            return usize::MAX;
        }
        let mut rx = self.changed.subscribe();
        loop {
            let free = self.capacity.saturating_sub(self.lock().bytes);
            if free > 0 || rx.changed().await.is_err() {
                return free.max(1);
            }
        }
    }

    /// Appends output read from the app; says which run of drops this
    /// append ended or started. A blocking buffer keeps everything (its pumps read no
    /// more than [`room`](Self::room) allows); a non-blocking one keeps
    /// what fits and drops the rest.
    pub fn append(&self, stream: Stream, data: &[u8], boottime_ns: u64) -> DropNews {
        self.append_with(stream, data.len(), boottime_ns, |n| {
            data.get(..n).unwrap_or_default().to_vec()
        })
    }

    /// [`append`](Self::append) of a buffer the caller gives up: a large
    /// read is kept without a copy.
    pub fn append_vec(&self, stream: Stream, mut data: Vec<u8>, boottime_ns: u64) -> DropNews {
        self.append_with(stream, data.len(), boottime_ns, |n| {
            data.truncate(n);
            // A small read would hold a large allocation: copy it.
            if data.len() * 2 < data.capacity() {
                data.shrink_to_fit();
            }
            data
        })
    }

    /// Appends `len` bytes, of which `take(n)` gives the first `n` kept.
    fn append_with(
        &self,
        stream: Stream,
        len: usize,
        boottime_ns: u64,
        take: impl FnOnce(usize) -> Vec<u8>,
    ) -> DropNews {
        if len == 0 {
            return DropNews::default();
        }
        let mut inner = self.lock();
        let fits = match self.mode {
            LogMode::Blocking => len,
            LogMode::NonBlocking => self.capacity.saturating_sub(inner.bytes).min(len),
        };
        let ended = inner.keep(stream, take(fits), boottime_ns);
        let started = inner.drop_bytes((len - fits) as u64, boottime_ns);
        drop(inner);
        self.bump();
        DropNews { ended, started }
    }

    /// No more output will be appended (the app is done for good and its
    /// pipes are drained); returns the run of drops under way, now ended.
    pub fn close(&self) -> Option<DropRun> {
        let run = {
            let mut inner = self.lock();
            inner.closed = true;
            inner.run.take()
        };
        self.bump();
        run
    }

    /// The host has persisted everything before `offset`: let it go.
    /// Acknowledging less than before changes nothing; more than was ever
    /// read is refused.
    pub fn ack(&self, offset: u64) -> Result<(), PodError> {
        let mut inner = self.lock();
        let Totals { end, acked, .. } = inner.totals;
        if offset > end {
            return Err(PodError::AckBeyondEnd { ack: offset, end });
        }
        if offset <= acked {
            return Ok(());
        }
        while let Some(first) = inner.items.front_mut() {
            let before = first.data_len();
            if first.end() <= offset {
                inner.items.pop_front();
                inner.bytes = inner.bytes.saturating_sub(before);
            } else {
                *first = first.skip(offset.saturating_sub(first.offset()));
                let after = first.data_len();
                inner.bytes = inner.bytes.saturating_sub(before - after);
                break;
            }
        }
        inner.totals.acked = offset;
        drop(inner);
        self.bump();
        Ok(())
    }

    /// Up to about `max_bytes` of output (at least one item) from `cursor`
    /// on; what was acknowledged before `cursor` is gone.
    pub fn read(&self, cursor: u64, max_bytes: usize) -> Read {
        let inner = self.lock();
        let start = inner.items.partition_point(|i| i.end() <= cursor);
        let mut items = Vec::new();
        let mut bytes = 0;
        for item in inner.items.range(start..) {
            if !items.is_empty() && bytes >= max_bytes {
                break;
            }
            let item = match cursor.checked_sub(item.offset()) {
                Some(cut) if cut > 0 => item.skip(cut),
                _ => item.clone(),
            };
            bytes += item.data_len();
            items.push(item);
        }
        let next = items
            .last()
            .map_or(cursor.max(inner.totals.acked), Item::end);
        Read {
            items,
            next,
            finished: inner.closed && next >= inner.totals.end,
        }
    }

    pub fn totals(&self) -> Totals {
        self.lock().totals
    }

    /// Whether the output is over: no more will come.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Whether the output is over and the host has persisted all of it.
    pub fn all_persisted(&self) -> bool {
        let inner = self.lock();
        inner.closed && inner.totals.acked == inner.totals.end
    }

    /// The position just past the last byte read so far.
    pub fn end(&self) -> u64 {
        self.lock().totals.end
    }

    /// A receiver that changes whenever there is something new.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Counts a log stream connection until the guard is dropped.
    pub fn reader(&self) -> ReaderGuard<'_> {
        self.lock().readers += 1;
        self.bump();
        ReaderGuard(self)
    }

    /// Resolves once the host has everything (closed and acknowledged to
    /// the end), or once no log stream connection is left to wait for.
    pub async fn settled(&self) {
        let mut rx = self.changed.subscribe();
        loop {
            {
                let inner = self.lock();
                let all_acked = inner.closed && inner.totals.acked == inner.totals.end;
                if all_acked || inner.readers == 0 {
                    return;
                }
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }
}

/// A log stream connection reading a buffer (see [`LogBuffer::reader`]).
pub struct ReaderGuard<'a>(&'a LogBuffer);

impl Drop for ReaderGuard<'_> {
    fn drop(&mut self) {
        let mut inner = self.0.lock();
        inner.readers = inner.readers.saturating_sub(1);
        drop(inner);
        self.0.bump();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Everything from `cursor`, as (offset, stream or None for a gap,
    /// bytes or the gap's size).
    fn all(b: &LogBuffer, cursor: u64) -> Vec<(u64, Option<Stream>, Vec<u8>)> {
        b.read(cursor, usize::MAX)
            .items
            .into_iter()
            .map(|i| match i {
                Item::Data(c) => (c.offset, Some(c.stream), c.data.as_slice().to_vec()),
                Item::Dropped { offset, count, .. } => (offset, None, count.to_string().into()),
            })
            .collect()
    }

    #[test]
    fn readers_get_everything_in_order_with_streams_apart() {
        let b = LogBuffer::new(1024, LogMode::Blocking);
        b.append(Stream::Stdout, b"out1\n", 1);
        b.append(Stream::Stderr, b"err1\n", 2);
        b.append(Stream::Stdout, b"out2\n", 3);
        assert_eq!(
            all(&b, 0),
            [
                (0, Some(Stream::Stdout), b"out1\n".to_vec()),
                (5, Some(Stream::Stderr), b"err1\n".to_vec()),
                (10, Some(Stream::Stdout), b"out2\n".to_vec())
            ]
        );
        let r = b.read(0, usize::MAX);
        assert_eq!((r.next, r.finished), (15, false));
        // From inside a chunk: the rest of it.
        assert_eq!(all(&b, 7)[0], (7, Some(Stream::Stderr), b"r1\n".to_vec()));
        // A reader's limit still gives it one item.
        let r = b.read(0, 1);
        assert_eq!((r.items.len(), r.next), (1, 5));
        assert!(b.read(15, 10).items.is_empty());
        b.close();
        assert!(b.read(15, 10).finished);
        assert!(!b.read(0, 1).finished);
    }

    #[test]
    fn acks_let_go_of_output_and_are_checked() {
        let b = LogBuffer::new(1024, LogMode::Blocking);
        b.append(Stream::Stdout, b"0123456789", 0);
        b.append(Stream::Stderr, b"abcdef", 0);
        b.ack(4).unwrap();
        // Below what is retained: from the oldest byte kept.
        assert_eq!(all(&b, 0), all(&b, 4));
        assert_eq!(all(&b, 0)[0], (4, Some(Stream::Stdout), b"456789".to_vec()));
        b.ack(12).unwrap();
        b.ack(3).unwrap(); // not a step back
        assert_eq!(all(&b, 0), [(12, Some(Stream::Stderr), b"cdef".to_vec())]);
        assert_eq!(
            b.totals(),
            Totals {
                end: 16,
                acked: 12,
                dropped: 0
            }
        );
        assert!(matches!(
            b.ack(17),
            Err(PodError::AckBeyondEnd { ack: 17, end: 16 })
        ));
        b.ack(16).unwrap();
        assert!(all(&b, 0).is_empty());
        assert_eq!(b.read(0, 10).next, 16);
        assert_eq!(b.lock().bytes, 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_full_blocking_buffer_waits_for_acks() {
        let b = Arc::new(LogBuffer::new(10, LogMode::Blocking));
        assert_eq!(b.room().await, 10);
        b.append(Stream::Stdout, b"0123456", 0);
        assert_eq!(b.room().await, 3);
        b.append(Stream::Stdout, b"789", 0);
        // Full: room waits, and only an ack ends the wait; reading does not.
        let waiter = tokio::spawn({
            let b = Arc::clone(&b);
            async move { b.room().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(all(&b, 0).len(), 2);
        assert!(!waiter.is_finished());
        b.ack(4).unwrap();
        assert_eq!(waiter.await.unwrap(), 4);
        // Nothing was dropped, and everything kept is there.
        assert_eq!(b.totals().dropped, 0);
        assert_eq!(all(&b, 0)[0].2, b"456");
    }

    #[test]
    fn a_full_non_blocking_buffer_drops_and_says_where() {
        let b = LogBuffer::new(10, LogMode::NonBlocking);
        assert_eq!(
            b.append(Stream::Stdout, b"01234567", 1),
            DropNews::default()
        );
        // Two bytes fit, four are dropped (a run starts at 10); then six
        // more dropped: the same run.
        assert_eq!(
            b.append(Stream::Stderr, b"89abcd", 2),
            DropNews {
                ended: None,
                started: Some(10)
            }
        );
        assert_eq!(b.append(Stream::Stdout, b"efghij", 3), DropNews::default());
        let t = b.totals();
        assert_eq!((t.end, t.dropped), (20, 10));
        b.ack(10).unwrap();
        // The run ends with the next byte kept.
        assert_eq!(
            b.append(Stream::Stdout, b"KLM", 4).ended,
            Some(DropRun {
                offset: 10,
                count: 10
            })
        );
        assert_eq!(
            all(&b, 0),
            [
                (10, None, b"10".to_vec()),
                (20, Some(Stream::Stdout), b"KLM".to_vec())
            ]
        );
        // Offsets still count every byte the app wrote, and a reader from
        // inside the gap learns the rest of it.
        assert_eq!(all(&b, 13)[0], (13, None, b"7".to_vec()));
        assert_eq!(all(&b, 8), all(&b, 10));
        b.ack(15).unwrap();
        assert_eq!(all(&b, 0)[0], (15, None, b"5".to_vec()));
        // A run under way is ended by close.
        b.append(Stream::Stdout, &[b'x'; 20], 5);
        assert_eq!(b.totals().dropped, 23);
        assert_eq!(
            b.close(),
            Some(DropRun {
                offset: 30,
                count: 13
            })
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn followers_are_woken_and_shutdown_waits_only_for_readers() {
        let b = Arc::new(LogBuffer::new(100, LogMode::Blocking));
        let mut rx = b.subscribe();
        let b2 = Arc::clone(&b);
        tokio::spawn(async move { b2.append(Stream::Stdout, b"x", 0) });
        rx.changed().await.unwrap();
        assert_eq!(all(&b, 0).len(), 1);
        // Nobody reads: nothing to wait for.
        tokio::time::timeout(Duration::from_secs(1), b.settled())
            .await
            .unwrap();
        let guard = b.reader();
        let settled = tokio::spawn({
            let b = Arc::clone(&b);
            async move { b.settled().await }
        });
        b.close();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!settled.is_finished());
        b.ack(1).unwrap();
        tokio::time::timeout(Duration::from_secs(1), settled)
            .await
            .unwrap()
            .unwrap();
        drop(guard);
        assert_eq!(b.lock().readers, 0);
    }
}
