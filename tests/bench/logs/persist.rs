//! The bench's clock for the log stream: when the pod's monitor persisted
//! a run's output, watched from outside through the app's log files
//! (`<pod dir>/logs/<app>.log` and its rotated files), as `host-ctl logs`
//! would find it.
//!
//! The files are polled every [`POLL`]: a `stat` of `<app>.log` (its
//! identity and size change with every batch the monitor writes or
//! rotates); after a change, its last record is parsed for where the
//! output continues, but only when the file ends with a whole record (a
//! newline: the records' JSON escapes every newline in the data, so one
//! caught mid-write is not mistaken for one) and, while waiting for the
//! end, only when that record's data ends a line, as the run's last
//! does. The first poll that finds new records starts the clock, and the
//! run's bytes are counted from where they end; the poll that finds the
//! run's last byte stops it. Each end is late by at most one poll (2 ms),
//! against more than a second for a run. The bytes seen at the first poll
//! are left out with their time: their latency (signal, fork, the first
//! batch) is not a throughput.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use host_ctl::logs::store::last_end;
use host_ctl::logs::LogFiles;

/// How often the files are looked at.
const POLL: Duration = Duration::from_millis(2);

/// How long a run may take to be persisted.
const RUN_LIMIT: Duration = Duration::from_secs(300);

/// What a log file ends with when its last record is whole.
const RECORD_END: &[u8] = b"\n";

/// What a data record whose data ends with a newline ends with:
/// `…\n"}` and the record's own newline.
const LINE_END: &[u8] = b"\\n\"}\n";

/// A log file's identity and size: any batch written or rotation changes
/// it. All zero while the file does not exist (mid-rotation).
type Mark = (u64, u64, u64);

fn mark(path: &Path) -> Result<Mark> {
    match std::fs::metadata(path) {
        Ok(m) => Ok((m.dev(), m.ino(), m.len())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((0, 0, 0)),
        Err(e) => Err(e).with_context(|| format!("looking at {}", path.display())),
    }
}

/// Whether the file at `path` ends with `suffix`.
fn ends_with(path: &Path, suffix: &[u8]) -> Result<bool> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    let len = file.metadata()?.len();
    let Some(at) = len.checked_sub(suffix.len() as u64) else {
        return Ok(false);
    };
    let mut tail = vec![0u8; suffix.len()];
    file.read_exact_at(&mut tail, at)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(tail == suffix)
}

/// Where the app's persisted output continues: after the last record of
/// `<app>.log`, or of the newest rotated file while `<app>.log` is new.
pub fn persisted_end(files: &LogFiles) -> Result<u64> {
    for p in std::iter::once(&files.current).chain(&files.rotated) {
        if let Some(end) = last_end(p).with_context(|| format!("reading {}", p.display()))? {
            return Ok(end);
        }
    }
    Ok(0)
}

/// A run's output as the monitor persisted it.
pub struct Persisted {
    /// When the first batch was seen in the file.
    pub first: Instant,
    /// When the run's last byte was.
    pub done: Instant,
    /// Bytes persisted between the two.
    pub bytes: u64,
}

impl Persisted {
    pub fn secs(&self) -> f64 {
        (self.done - self.first).as_secs_f64()
    }

    pub fn mbps(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.secs()
    }
}

/// An app's log files, watched from before a run is triggered.
pub struct Watch {
    files: LogFiles,
    mark: Mark,
    /// Where the output continued before the run.
    base: u64,
}

impl Watch {
    pub fn start(files: &LogFiles) -> Result<Watch> {
        Ok(Watch {
            files: files.clone(),
            mark: mark(&files.current)?,
            base: persisted_end(files)?,
        })
    }

    /// Waits until the `expected` bytes of the run triggered since
    /// [`Watch::start`] are persisted, and says when.
    pub fn wait(self, expected: u64) -> Result<Persisted> {
        let target = self.base + expected;
        let current = &self.files.current;
        let deadline = Instant::now() + RUN_LIMIT;
        let mut last = self.mark;
        let mut first: Option<(Instant, u64)> = None;
        loop {
            std::thread::sleep(POLL);
            let now = Instant::now();
            if now > deadline {
                bail!(
                    "the monitor had not persisted the run's {expected} bytes after {} s",
                    RUN_LIMIT.as_secs()
                );
            }
            let m = mark(current)?;
            if m == last {
                continue;
            }
            last = m;
            let Some((start, start_end)) = first else {
                if ends_with(current, RECORD_END)? {
                    let end = persisted_end(&self.files)?;
                    if end >= target {
                        bail!("the run was persisted at once: too small to time");
                    }
                    first = (end > self.base).then_some((now, end));
                }
                continue;
            };
            if !ends_with(current, LINE_END)? {
                continue;
            }
            match persisted_end(&self.files)? {
                end if end < target => {}
                end if end == target => {
                    return Ok(Persisted {
                        first: start,
                        done: now,
                        bytes: target - start_end,
                    })
                }
                end => bail!(
                    "the log grew to offset {end}, past the run's end at {target}: \
                     something else wrote to the app's output"
                ),
            }
        }
    }
}
