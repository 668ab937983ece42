//! App output kept on the host: `<pod dir>/logs/<app>.log`, one JSON record
//! per chunk the agent sent, with its time, stream and position in the
//! app's output. The files outlive the pod, so `host-ctl logs` works after
//! it exited; the positions let a re-attached monitor resume exactly where
//! the previous one stopped. Bytes that are not UTF-8 are kept exactly, in
//! base64.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::{LogError, Stream};

type Result<T> = std::result::Result<T, LogError>;

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> LogError {
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
    /// Bytes the agent dropped before this record (its buffer was full).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
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

    /// Where the app's output continues after this record.
    pub fn end(&self) -> u64 {
        self.offset + self.bytes().len() as u64
    }
}

/// Appends an app's output to its log file.
pub struct Writer {
    file: File,
    path: PathBuf,
    /// Where the app's output continues: the offset to resume from.
    pub next: u64,
}

impl Writer {
    /// Opens the app's log for appending. A record cut short by a crash is
    /// removed; `next` is where the last whole record ended.
    pub fn open(path: &Path) -> Result<Self> {
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
        let mut next = 0;
        let mut good_len = 0u64;
        let mut reader = BufReader::new(&file);
        let mut line = String::new();
        loop {
            line.clear();
            let n = reader.read_line(&mut line).map_err(io("reading", path))?;
            if n == 0 || !line.ends_with('\n') {
                break;
            }
            match serde_json::from_str::<LogRecord>(&line) {
                Ok(r) => {
                    next = r.end();
                    good_len += n as u64;
                }
                Err(_) => break,
            }
        }
        drop(reader);
        file.set_len(good_len).map_err(io("truncating", path))?;
        file.seek(SeekFrom::End(0)).map_err(io("opening", path))?;
        Ok(Writer {
            file,
            path: path.to_path_buf(),
            next,
        })
    }

    pub fn append(&mut self, record: &LogRecord) -> Result<()> {
        let mut line = serde_json::to_vec(record).map_err(|e| LogError::Encode(e.to_string()))?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .map_err(io("writing", &self.path))?;
        self.next = record.end();
        Ok(())
    }

    pub fn sync(&self) -> Result<()> {
        self.file.sync_all().map_err(io("syncing", &self.path))
    }
}

/// Reads the records of a log file from byte `from`; returns them and the
/// position after the last whole record.
pub fn read_from(path: &Path, from: u64) -> Result<(Vec<LogRecord>, u64)> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), from)),
        Err(e) => return Err(io("reading", path)(e)),
    };
    file.seek(SeekFrom::Start(from))
        .map_err(io("reading", path))?;
    let mut reader = BufReader::new(file);
    let mut records = Vec::new();
    let mut pos = from;
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line).map_err(io("reading", path))?;
        if n == 0 || !line.ends_with('\n') {
            break; // a record still being written
        }
        pos += n as u64;
        if let Ok(r) = serde_json::from_str::<LogRecord>(&line) {
            records.push(r);
        }
    }
    Ok((records, pos))
}

/// Turns a guest `CLOCK_BOOTTIME` stamp into wall-clock time, given when
/// the guest booted.
pub fn wall_time(boot: SystemTime, boottime_ns: u64) -> SystemTime {
    boot + Duration::from_nanos(boottime_ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_keep_every_byte_and_resume_after_a_torn_write() {
        let dir = tempfile::tempdir().unwrap();
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        {
            let mut w = Writer::open(&dir.path().join("logs/web.log")).unwrap();
            assert_eq!(w.next, 0);
            w.append(&LogRecord::new(t, Stream::Stdout, 0, b"hello\n", 0))
                .unwrap();
            w.append(&LogRecord::new(
                t,
                Stream::Stderr,
                6,
                b"\xff\xfe binary\n",
                0,
            ))
            .unwrap();
        }
        // A crash in the middle of a record.
        let p = dir.path().join("logs/web.log");
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"{\"time\":\"2023").unwrap();
        drop(f);

        let w = Writer::open(&p).unwrap();
        assert_eq!(w.next, 6 + 10);
        let (records, _) = read_from(&p, 0).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].bytes(), b"hello\n");
        assert_eq!(records[1].bytes(), b"\xff\xfe binary\n");
        assert_eq!(records[1].stream, Stream::Stderr);
        assert!(records[1].data_base64.is_some());
    }

    #[test]
    fn readers_see_whole_records_only() {
        let dir = tempfile::tempdir().unwrap();
        let t = SystemTime::now();
        let p = dir.path().join("logs/a.log");
        let mut w = Writer::open(&p).unwrap();
        w.append(&LogRecord::new(t, Stream::Stdout, 0, b"one\n", 0))
            .unwrap();
        let (r, pos) = read_from(&p, 0).unwrap();
        assert_eq!(r.len(), 1);
        w.append(&LogRecord::new(t, Stream::Stdout, 4, b"two\n", 0))
            .unwrap();
        let (r, _) = read_from(&p, pos).unwrap();
        assert_eq!(r[0].bytes(), b"two\n");
        assert_eq!(read_from(&dir.path().join("none"), 0).unwrap().0.len(), 0);
    }
}
