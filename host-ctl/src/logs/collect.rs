//! Collectors: one task per app that copies its output from the agent into
//! its log file (and, for an attached `run`, to the terminal), resuming
//! where the file ends, so a monitor that replaces a dead one neither
//! loses nor repeats output.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use kvmpod_api::protocol::LogsRequest;
use tokio::task::JoinHandle;

use super::{wall_time, LogError, LogRecord, Printer, Writer};
use crate::agent::{no_deadline, AgentClient};

/// One app's output and where it goes.
pub struct Collector {
    pub app: String,
    /// The app's log file.
    pub log: PathBuf,
    pub printer: Option<Arc<Mutex<Printer>>>,
    /// Wall-clock time of the guest's boot, for the records' times.
    pub guest_boot: SystemTime,
}

impl Collector {
    /// Starts copying; the task ends when the app's output does.
    pub fn spawn(self, client: AgentClient) -> JoinHandle<Result<(), LogError>> {
        tokio::spawn(self.run(client))
    }

    async fn run(self, client: AgentClient) -> Result<(), LogError> {
        let app = self.app;
        let mut writer = Writer::open(&self.log)?;
        let mut req = LogsRequest::new();
        req.app = app.clone();
        req.follow = true;
        req.offset = writer.next;
        let stream_error = |error| LogError::Stream {
            app: app.clone(),
            error,
        };
        let mut rx = client
            .logs(no_deadline(), &req)
            .await
            .map_err(stream_error)?;
        loop {
            let chunk = match rx.recv().await {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => {
                    writer.sync()?;
                    return Err(stream_error(e));
                }
            };
            let time = wall_time(self.guest_boot, chunk.boottime_ns);
            let stream = chunk.stream.enum_value_or_default().into();
            writer.append(&LogRecord::new(
                time,
                stream,
                chunk.offset,
                &chunk.data,
                chunk.dropped,
            ))?;
            if let Some(p) = &self.printer {
                p.lock().unwrap_or_else(|e| e.into_inner()).print(&chunk);
            }
        }
        if let Some(p) = &self.printer {
            p.lock().unwrap_or_else(|e| e.into_inner()).flush_app(&app);
        }
        writer.sync()
    }
}

/// Waits (up to 10 s) for collectors whose apps are done to write the
/// last of their output.
pub async fn finish(collectors: Vec<JoinHandle<Result<(), LogError>>>) {
    let all = async {
        for c in collectors {
            if let Ok(Err(e)) = c.await {
                eprintln!("host-ctl: collecting app output: {e}");
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(10), all)
        .await
        .is_err()
    {
        eprintln!("host-ctl: app output did not finish streaming");
    }
}
