//! Apps' output on the host: the log files in each pod's directory
//! (`store`), the collectors that copy it from the agent (`collect`), and
//! the terminal printer of `host-ctl run` (`printer`). Paths are given by
//! the caller; this layer knows the agent's protocol, not pods.

pub mod collect;
pub mod printer;
pub mod store;

use std::path::PathBuf;

use kvmpod_api::protocol::LogStream;
use serde::{Deserialize, Serialize};

pub use printer::Printer;
pub use store::{read_from, wall_time, LogRecord, Writer};

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

/// A log file that cannot be read or written, or a stream from the agent
/// that broke.
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
    #[error("app {app}: {error}")]
    Stream { app: String, error: ttrpc::Error },
}
