//! Apps' output on the host: the log files in each pod's directory and
//! their rotation (`store`), reading them back across rotated files
//! (`read`), the agent's log stream (`frames`, `stream`), the collectors
//! that copy it into the files (`collect`), and the terminal printer of
//! `host-ctl run` (`printer`). Paths are given by the caller; this layer
//! knows the agent's protocol, not pods.

pub mod collect;
pub mod frames;
pub mod printer;
pub mod read;
pub mod store;
pub mod stream;
#[cfg(test)]
mod testing;

use std::path::PathBuf;

use kvmpod_api::logstream::StreamId;
use kvmpod_api::protocol::LogStream;
use serde::{Deserialize, Serialize};

pub use printer::Printer;
pub use read::{Follower, Item};
pub use store::{wall_time, LogRecord, Writer};

/// An app's output stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

impl From<LogStream> for Stream {
    fn from(s: LogStream) -> Self {
        if s == LogStream::LOG_STREAM_STDERR {
            Stream::Stderr
        } else {
            Stream::Stdout
        }
    }
}

impl From<StreamId> for Stream {
    fn from(s: StreamId) -> Self {
        match s {
            StreamId::Stdout => Stream::Stdout,
            StreamId::Stderr => Stream::Stderr,
        }
    }
}

/// How big an app's log may grow: `<app>.log` is rotated to `<app>.log.1`
/// when a record would take it past `max_size`, and `max_files` rotated
/// files are kept (`--log-max-files` counts the current one too), so at
/// least the newest `max_files × max_size` bytes (about) are always there
/// while the disk use stays bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rotation {
    pub max_size: u64,
    pub max_files: u32,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation {
            max_size: 20 << 20,
            max_files: 5,
        }
    }
}

impl Rotation {
    /// "20 MiB per file, 6 files".
    pub fn describe(&self) -> String {
        format!(
            "{} per file, {} files kept",
            format_size(self.max_size),
            self.max_files + 1
        )
    }
}

/// An app's log files: the one being written and the rotated ones, newest
/// first (`<app>.log.1`, `.2`, ...). The names come from the pod's
/// directory (`PodDir::app_logs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFiles {
    pub current: PathBuf,
    pub rotated: Vec<PathBuf>,
}

/// Parses a size: bytes, or a number with a binary suffix (`k`, `KiB`,
/// `m`, `MiB`, `g`, `GiB`, case-insensitive).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (bytes, or e.g. 512KiB, 20MiB, 1GiB)"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        other => return Err(format!("{s:?}: unknown size unit {other:?}")),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// A size for people: "20 MiB", "512 KiB", "1000 bytes".
pub fn format_size(n: u64) -> String {
    for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if n >= 1u64 << shift && n.is_multiple_of(1u64 << shift) {
            return format!("{} {unit}", n >> shift);
        }
    }
    format!("{n} bytes")
}

/// A log file that cannot be read or written, or an app's log stream that
/// failed. The stream errors name the app.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("encoding a log record: {0}")]
    Encode(String),
    /// The agent's log stream port could not be reached.
    #[error("app {app}: connecting to the agent's log stream")]
    Connect {
        app: String,
        #[source]
        source: std::io::Error,
    },
    /// The connection failed or closed before the app's output ended.
    #[error("app {app}: the log stream broke")]
    Broken {
        app: String,
        #[source]
        source: std::io::Error,
    },
    /// The agent answered the request with `ERR <why>`.
    #[error("app {app}: the agent refused to stream its output: {why}")]
    Refused { app: String, why: String },
    /// The agent sent something the protocol does not allow.
    #[error("app {app}: log stream protocol error: {what}")]
    Protocol { app: String, what: String },
}

impl LogError {
    /// Whether trying again cannot help: the agent refused, or broke the
    /// protocol. A broken connection or a failed write is tried again.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            LogError::Refused { .. } | LogError::Protocol { .. } | LogError::Encode(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!(parse_size("20MiB"), Ok(20 << 20));
        assert_eq!(parse_size("20m"), Ok(20 << 20));
        assert_eq!(parse_size("512 KiB"), Ok(512 << 10));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("3 parsecs").is_err());
        assert!(parse_size("99999999999999999999g").is_err());
        assert_eq!(format_size(20 << 20), "20 MiB");
        assert_eq!(format_size(1536), "1536 bytes");
        assert_eq!(format_size(3 << 10), "3 KiB");
        assert_eq!(
            Rotation::default().describe(),
            "20 MiB per file, 6 files kept"
        );
    }
}
