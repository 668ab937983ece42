//! App output kept on the host: `<pod dir>/logs/<app>.log`, one JSON record
//! per frame the agent sent, with its time, stream and position in the
//! app's output; bytes the agent dropped are a record of their own. The
//! files outlive the pod, so `host-ctl logs` works after it exited; the
//! positions let a new collector resume exactly where the file ends. Bytes
//! that are not UTF-8 are kept exactly, in base64.
//!
//! Records are gathered in memory and written in batches (one `write` per
//! batch, no fsync: the page cache survives a host-ctl crash, and what was
//! written is what the agent is told it may forget). A file that would
//! grow past its limit is rotated between two records.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::{LogError, LogFiles, Rotation, Stream};

type Result<T> = std::result::Result<T, LogError>;

pub(super) fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> LogError {
    let path = path.to_path_buf();
    move |source| LogError::Io { what, path, source }
}

/// One record of a log file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogRecord {
    /// RFC 3339, with nanoseconds.
    pub time: String,
    pub stream: Stream,
    /// Position of the first byte in the app's whole output.
    pub offset: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_base64: Option<String>,
    /// Bytes the agent dropped just before `offset` (its buffer was full):
    /// they were `offset - dropped .. offset`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A record as written: borrows the data, so a frame is encoded without
/// copying it first.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RecordOut<'a> {
    time: &'a str,
    stream: Stream,
    offset: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_base64: Option<&'a str>,
    #[serde(skip_serializing_if = "is_zero")]
    dropped: u64,
}

impl LogRecord {
    pub fn new(time: SystemTime, stream: Stream, offset: u64, bytes: &[u8], dropped: u64) -> Self {
        let (data, data_base64) = match std::str::from_utf8(bytes) {
            Ok(s) => (Some(s.to_string()), None),
            Err(_) => (
                None,
                Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
            ),
        };
        LogRecord {
            time: humantime::format_rfc3339_nanos(time).to_string(),
            stream,
            offset,
            data,
            data_base64,
            dropped,
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
        if let Some(d) = &self.data {
            return d.as_bytes().to_vec();
        }
        self.data_base64
            .as_deref()
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .unwrap_or_default()
    }

    fn len(&self) -> u64 {
        match &self.data {
            Some(d) => d.len() as u64,
            None => self.bytes().len() as u64,
        }
    }

    /// Where the record's span of the app's output starts: its data, or
    /// the bytes it says were dropped.
    pub fn start(&self) -> u64 {
        self.offset.saturating_sub(self.dropped)
    }

    /// Where the app's output continues after this record.
    pub fn end(&self) -> u64 {
        self.offset + self.len()
    }
}

/// Appends an app's output to its log file, in batches, and rotates the
/// file when a record would take it past its limit.
pub struct Writer {
    files: LogFiles,
    rotation: Rotation,
    file: File,
    /// Bytes in the current file.
    size: u64,
    /// Whole records not written yet.
    pending: Vec<u8>,
    pending_since: Option<Instant>,
    /// Reused for data that is not UTF-8.
    b64: String,
    /// Where the output continues after the last record written.
    written: u64,
    /// Where it continues after the last record, written or pending.
    end: u64,
}

impl Writer {
    /// Opens the app's log for appending. A record cut short by a crash is
    /// removed; `end()` is where the last whole record ended, in this file
    /// or, when it is empty, in the newest rotated one.
    pub fn open(files: &LogFiles, rotation: Rotation) -> Result<Self> {
        let path = &files.current;
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io("creating", parent))?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(io("opening", path))?;
        let (good_len, last_end) = last_record(&file, path)?;
        file.set_len(good_len).map_err(io("truncating", path))?;
        file.seek(SeekFrom::End(0)).map_err(io("opening", path))?;
        let end = match last_end {
            Some(end) => end,
            None => rotated_end(&files.rotated)?,
        };
        Ok(Writer {
            files: files.clone(),
            rotation,
            file,
            size: good_len,
            pending: Vec::with_capacity(64 << 10),
            pending_since: None,
            b64: String::new(),
            written: end,
            end,
        })
    }

    /// Where the app's output continues: the offset to ask for next.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Everything before this offset is in the file (not necessarily on
    /// disk).
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Bytes of records waiting for `flush`.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// When the oldest record waiting for `flush` was added.
    pub fn pending_since(&self) -> Option<Instant> {
        self.pending_since
    }

    /// Adds `bytes` of `stream`, which continue the output at `end()`.
    pub fn push_data(&mut self, time: SystemTime, stream: Stream, bytes: &[u8]) -> Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        let time = humantime::format_rfc3339_nanos(time).to_string();
        let (data, data_base64) = match std::str::from_utf8(bytes) {
            Ok(s) => (Some(s), None),
            Err(_) => {
                self.b64.clear();
                base64::engine::general_purpose::STANDARD.encode_string(bytes, &mut self.b64);
                (None, Some(self.b64.as_str()))
            }
        };
        let rec = RecordOut {
            time: &time,
            stream,
            offset: self.end,
            data,
            data_base64,
            dropped: 0,
        };
        let start = self.pending.len();
        push_line(&mut self.pending, &rec)?;
        self.added(start, self.end + bytes.len() as u64)
    }

    /// Records that `count` bytes at `end()` were dropped by the agent.
    pub fn push_dropped(&mut self, time: SystemTime, stream: Stream, count: u64) -> Result<()> {
        if count == 0 {
            return Ok(());
        }
        let time = humantime::format_rfc3339_nanos(time).to_string();
        let new_end = self.end + count;
        let rec = RecordOut {
            time: &time,
            stream,
            offset: new_end,
            data: None,
            data_base64: None,
            dropped: count,
        };
        let start = self.pending.len();
        push_line(&mut self.pending, &rec)?;
        self.added(start, new_end)
    }

    /// A record was appended to `pending` at `line_start`: rotates first
    /// if it would take the file past its limit (whatever came before it
    /// is written to the old file).
    fn added(&mut self, line_start: usize, new_end: u64) -> Result<()> {
        let before = self.size + line_start as u64;
        if before > 0 && before + (self.pending.len() - line_start) as u64 > self.rotation.max_size
        {
            self.write_out(line_start, self.end)?;
            self.rotate()?;
        }
        self.end = new_end;
        self.pending_since.get_or_insert_with(Instant::now);
        Ok(())
    }

    /// Writes the first `n` pending bytes (whole records, up to offset
    /// `upto`) in one write.
    fn write_out(&mut self, n: usize, upto: u64) -> Result<()> {
        if n > 0 {
            self.file
                .write_all(&self.pending[..n])
                .map_err(io("writing", &self.files.current))?;
            self.size += n as u64;
            self.pending.drain(..n);
        }
        self.written = upto;
        Ok(())
    }

    /// Writes what is pending; returns the offset everything before which
    /// is now in the file.
    pub fn flush(&mut self) -> Result<u64> {
        self.write_out(self.pending.len(), self.end)?;
        self.pending_since = None;
        Ok(self.written)
    }

    /// Flushes and puts the file on disk (when an app's output ends, and
    /// when the pod does).
    pub fn sync(&mut self) -> Result<()> {
        self.flush()?;
        self.file
            .sync_all()
            .map_err(io("syncing", &self.files.current))
    }

    /// `<app>.log` becomes `<app>.log.1`, `.1` becomes `.2` and so on; the
    /// oldest goes. A crash half-way leaves every record in a file that
    /// readers look at, in order.
    fn rotate(&mut self) -> Result<()> {
        let rotated = &self.files.rotated;
        let current = &self.files.current;
        let Some(newest) = rotated.first() else {
            self.file.set_len(0).map_err(io("truncating", current))?;
            self.size = 0;
            return Ok(());
        };
        if let Some(oldest) = rotated.last() {
            ignore_missing(fs::remove_file(oldest)).map_err(io("removing", oldest))?;
        }
        for pair in rotated.windows(2).rev() {
            ignore_missing(fs::rename(&pair[0], &pair[1])).map_err(io("rotating", &pair[0]))?;
        }
        fs::rename(current, newest).map_err(io("rotating", current))?;
        self.file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(current)
            .map_err(io("creating", current))?;
        self.size = 0;
        Ok(())
    }
}

/// Encodes a record as a line at the end of `buf`.
fn push_line(buf: &mut Vec<u8>, rec: &RecordOut<'_>) -> Result<()> {
    let before = buf.len();
    if let Err(e) = serde_json::to_writer(&mut *buf, rec) {
        buf.truncate(before);
        return Err(LogError::Encode(e.to_string()));
    }
    buf.push(b'\n');
    Ok(())
}

fn ignore_missing(r: std::io::Result<()>) -> std::io::Result<()> {
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Where the output continues after the newest rotated file's last record
/// (0 when there is none).
fn rotated_end(rotated: &[PathBuf]) -> Result<u64> {
    for p in rotated {
        if let Some(end) = last_end(p)? {
            return Ok(end);
        }
    }
    Ok(0)
}

/// Where the output continues after a log file's last whole record;
/// `None` when it has none (or does not exist).
pub fn last_end(path: &Path) -> Result<Option<u64>> {
    match File::open(path) {
        Ok(f) => Ok(last_record(&f, path)?.1),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("opening", path)(e)),
    }
}

/// The length of a log file up to the end of its last whole record, and
/// where that record's output ends. Reads the file from its end, so a big
/// log costs no more than a small one; falls back to reading it all when
/// the last line is not a record.
fn last_record(file: &File, path: &Path) -> Result<(u64, Option<u64>)> {
    let len = file.metadata().map_err(io("reading", path))?.len();
    let Some(nl) = rfind_newline(file, path, len)? else {
        return Ok((0, None));
    };
    let start = rfind_newline(file, path, nl)?.map_or(0, |p| p + 1);
    let mut line = vec![0u8; (nl - start) as usize];
    file.read_exact_at(&mut line, start)
        .map_err(io("reading", path))?;
    match serde_json::from_slice::<LogRecord>(&line) {
        Ok(r) => Ok((nl + 1, Some(r.end()))),
        Err(_) => scan_forward(file, path),
    }
}

/// The position of the last newline before `upto`.
fn rfind_newline(file: &File, path: &Path, upto: u64) -> Result<Option<u64>> {
    const CHUNK: u64 = 64 << 10;
    let mut buf = vec![0u8; CHUNK as usize];
    let mut hi = upto;
    while hi > 0 {
        let lo = hi.saturating_sub(CHUNK);
        let chunk = &mut buf[..(hi - lo) as usize];
        file.read_exact_at(chunk, lo).map_err(io("reading", path))?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(Some(lo + i as u64));
        }
        hi = lo;
    }
    Ok(None)
}

/// Reads a log from its start: the length of its whole records up to the
/// first that is not one, and where the last ends.
fn scan_forward(file: &File, path: &Path) -> Result<(u64, Option<u64>)> {
    let mut reader = BufReader::new(file);
    reader
        .seek(SeekFrom::Start(0))
        .map_err(io("reading", path))?;
    let mut good_len = 0u64;
    let mut end = None;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(io("reading", path))?;
        if n == 0 || !line.ends_with(b"\n") {
            break;
        }
        match serde_json::from_slice::<LogRecord>(&line) {
            Ok(r) => {
                end = Some(r.end());
                good_len += n as u64;
            }
            Err(_) => break,
        }
    }
    Ok((good_len, end))
}

/// Reads the whole records of an open log file from byte `from`, handing
/// each to `each`; returns the position after the last whole record (a
/// record still being written is left for the next read).
pub fn read_records(
    file: &File,
    path: &Path,
    from: u64,
    each: &mut dyn FnMut(LogRecord),
) -> Result<u64> {
    let mut reader = BufReader::with_capacity(256 << 10, file);
    reader
        .seek(SeekFrom::Start(from))
        .map_err(io("reading", path))?;
    let mut pos = from;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(io("reading", path))?;
        if n == 0 || !line.ends_with(b"\n") {
            break;
        }
        pos += n as u64;
        if let Ok(r) = serde_json::from_slice::<LogRecord>(&line) {
            each(r);
        }
    }
    Ok(pos)
}

/// Turns a guest `CLOCK_BOOTTIME` stamp into wall-clock time, given when
/// the guest booted.
pub fn wall_time(boot: SystemTime, boottime_ns: u64) -> SystemTime {
    boot + Duration::from_nanos(boottime_ns)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `<dir>/logs/<app>.log` and `max_files` rotated names.
    pub(crate) fn files(dir: &Path, app: &str, max_files: u32) -> LogFiles {
        let current = dir.join("logs").join(format!("{app}.log"));
        LogFiles {
            rotated: (1..=max_files)
                .map(|n| dir.join("logs").join(format!("{app}.log.{n}")))
                .collect(),
            current,
        }
    }

    pub(crate) fn records(path: &Path) -> Vec<LogRecord> {
        let mut out = Vec::new();
        if let Ok(f) = File::open(path) {
            read_records(&f, path, 0, &mut |r| out.push(r)).unwrap();
        }
        out
    }

    fn t() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    #[test]
    fn records_keep_every_byte_and_resume_after_a_torn_write() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path(), "web", 5);
        {
            let mut w = Writer::open(&f, Rotation::default()).unwrap();
            assert_eq!(w.end(), 0);
            w.push_data(t(), Stream::Stdout, b"hello\n").unwrap();
            w.push_data(t(), Stream::Stderr, b"\xff\xfe binary\n")
                .unwrap();
            w.push_dropped(t(), Stream::Stdout, 100).unwrap();
            assert_eq!(w.written(), 0, "nothing is written before flush");
            assert_eq!(w.flush().unwrap(), 6 + 10 + 100);
        }
        // A crash in the middle of a record.
        let mut fh = OpenOptions::new().append(true).open(&f.current).unwrap();
        fh.write_all(b"{\"time\":\"2023").unwrap();
        drop(fh);

        let w = Writer::open(&f, Rotation::default()).unwrap();
        assert_eq!(w.end(), 116);
        let records = records(&f.current);
        assert_eq!(records.len(), 3);
        assert_eq!(records[0].bytes(), b"hello\n");
        assert_eq!(records[1].bytes(), b"\xff\xfe binary\n");
        assert_eq!(records[1].stream, Stream::Stderr);
        assert!(records[1].data_base64.is_some());
        assert_eq!((records[2].offset, records[2].dropped), (116, 100));
        assert_eq!((records[2].start(), records[2].end()), (16, 116));
        assert!(std::fs::read_to_string(&f.current)
            .unwrap()
            .ends_with("\"dropped\":100}\n"));
    }

    #[test]
    fn a_garbled_last_line_falls_back_to_reading_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path(), "a", 1);
        let mut w = Writer::open(&f, Rotation::default()).unwrap();
        w.push_data(t(), Stream::Stdout, b"one\n").unwrap();
        w.flush().unwrap();
        drop(w);
        let mut fh = OpenOptions::new().append(true).open(&f.current).unwrap();
        fh.write_all(b"not json\n").unwrap();
        drop(fh);
        let w = Writer::open(&f, Rotation::default()).unwrap();
        assert_eq!(w.end(), 4);
        assert_eq!(std::fs::read(&f.current).unwrap().len() as u64, w.size);
    }

    #[test]
    fn files_rotate_between_records_and_keep_max_files() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path(), "web", 3);
        let rot = Rotation {
            max_size: 1000,
            max_files: 3,
        };
        let mut w = Writer::open(&f, rot).unwrap();
        let line = [b'x'; 199];
        for i in 0..40u64 {
            let mut data = line.to_vec();
            data.push(b'\n');
            w.push_data(t(), Stream::Stdout, &data).unwrap();
            if i % 7 == 0 {
                w.flush().unwrap();
            }
        }
        w.flush().unwrap();
        let sizes: Vec<u64> = std::iter::once(&f.current)
            .chain(&f.rotated)
            .map(|p| std::fs::metadata(p).unwrap().len())
            .collect();
        assert!(sizes.iter().all(|&s| s <= 1000), "{sizes:?}");
        // Each record is ~290 bytes: three to a file.
        assert!(sizes[1..].iter().all(|&s| s > 700), "{sizes:?}");
        assert!(!dir.path().join("logs/web.log.4").exists());
        // Oldest to newest, the offsets follow each other without a gap.
        let mut all = Vec::new();
        for p in f.rotated.iter().rev().chain(std::iter::once(&f.current)) {
            all.extend(records(p));
        }
        for pair in all.windows(2) {
            assert_eq!(pair[0].end(), pair[1].offset);
        }
        assert_eq!(all.last().unwrap().end(), 40 * 200);
        assert!(all[0].offset > 0, "the oldest records were rotated away");
    }

    #[test]
    fn a_record_bigger_than_the_limit_gets_a_file_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path(), "big", 2);
        let rot = Rotation {
            max_size: 100,
            max_files: 2,
        };
        let mut w = Writer::open(&f, rot).unwrap();
        w.push_data(t(), Stream::Stdout, b"small\n").unwrap();
        w.push_data(t(), Stream::Stdout, &[b'y'; 500]).unwrap();
        w.push_data(t(), Stream::Stdout, b"after\n").unwrap();
        w.flush().unwrap();
        assert_eq!(records(&f.rotated[1])[0].bytes(), b"small\n");
        assert_eq!(records(&f.rotated[0])[0].bytes().len(), 500);
        assert_eq!(records(&f.current)[0].bytes(), b"after\n");
    }

    #[test]
    fn an_empty_current_file_resumes_from_the_newest_rotated_one() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path(), "web", 2);
        let rot = Rotation {
            max_size: 100,
            max_files: 2,
        };
        let mut w = Writer::open(&f, rot).unwrap();
        w.push_data(t(), Stream::Stdout, &[b'a'; 60]).unwrap();
        w.push_data(t(), Stream::Stdout, &[b'b'; 60]).unwrap();
        w.flush().unwrap();
        drop(w);
        // As if host-ctl died right after renaming the file away.
        std::fs::rename(&f.current, &f.rotated[0]).unwrap();
        let w = Writer::open(&f, rot).unwrap();
        assert_eq!(w.end(), 120);
    }
}
