//! Collectors: one task per app that copies its output from the agent's
//! log stream into its log file (and, for an attached `run`, to the
//! terminal). Each connection resumes where the file ends; when one
//! breaks, the collector connects again, with backoff, until the app's
//! output has ended or the monitor says the pod is over. So a monitor that
//! replaces a dead one, or a connection that breaks, neither loses nor
//! repeats output.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use kvmpod_api::layout::LOG_VSOCK_PORT;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::stream::{stream_app, Ended, Tee};
use super::{LogError, LogFiles, Rotation, Writer};
use crate::agent::vsock::{connect_stream, Endpoint};
use crate::ui::text::error_chain;

/// One app's output and where it goes.
pub struct Collector {
    pub app: String,
    pub files: LogFiles,
    pub rotation: Rotation,
    pub endpoint: Endpoint,
    pub tee: Tee,
}

/// The delay before reconnecting after `n` failures in a row: 50 ms
/// doubling to 2 s.
pub fn backoff(n: u32) -> Duration {
    Duration::from_millis((50u64 << n.min(6)).min(2000))
}

/// Waits `d`, or less if the pod ends; whether it ended.
async fn sleep_unless_stopped(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    let stopped = tokio::select! {
        _ = stop.wait_for(|s| *s) => true,
        _ = tokio::time::sleep(d) => false,
    };
    stopped || *stop.borrow()
}

impl Collector {
    /// Copies the app's output until it ends or `stop` becomes true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) -> Result<(), LogError> {
        let mut failures = 0u32;
        let result = loop {
            let (streamed, progressed) = self.attempt(&mut stop).await;
            if progressed {
                failures = 0;
            }
            match streamed {
                Ok(()) => break Ok(()),
                Err(e) if e.is_fatal() => break Err(e),
                Err(e) => {
                    if sleep_unless_stopped(&mut stop, backoff(failures)).await {
                        break Ok(());
                    }
                    if failures == 0 {
                        eprintln!("host-ctl: {}; reconnecting", error_chain(&e));
                    }
                    failures += 1;
                }
            }
        };
        self.tee.flush_app(&self.app);
        result
    }

    /// One connection, from where the log file ends; whether it brought
    /// output. The file is synced whenever a connection ends (on every
    /// app's End, and when the pod is over).
    async fn attempt(&self, stop: &mut watch::Receiver<bool>) -> (Result<(), LogError>, bool) {
        let mut writer = match Writer::open(&self.files, self.rotation) {
            Ok(w) => w,
            Err(e) => return (Err(e), false),
        };
        let before = writer.end();
        let streamed = self.connection(&mut writer, stop).await;
        let synced = writer.sync();
        let progressed = writer.end() > before;
        (streamed.and(synced), progressed)
    }

    async fn connection(
        &self,
        writer: &mut Writer,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Ended, LogError> {
        if *stop.borrow() {
            return Ok(Ended::Stopped);
        }
        let conn = connect_stream(&self.endpoint, LOG_VSOCK_PORT)
            .await
            .map_err(|source| LogError::Connect {
                app: self.app.clone(),
                source,
            })?;
        stream_app(conn, &self.app, writer, &self.tee, stop).await
    }
}

/// A pod's collectors, and how the monitor ends them.
pub struct Collectors {
    set: JoinSet<Result<(), LogError>>,
    stop: watch::Sender<bool>,
    tee: Tee,
}

/// How long output may stand still, after the apps exited, before the
/// monitor stops waiting for the rest.
const QUIET_LIMIT: Duration = Duration::from_secs(10);

fn report(joined: Result<Result<(), LogError>, tokio::task::JoinError>) {
    match joined {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("host-ctl: collecting app output: {}", error_chain(&e)),
        Err(e) if e.is_cancelled() => {}
        Err(e) => eprintln!("host-ctl: collecting app output: {e}"),
    }
}

impl Collectors {
    /// No collectors yet; `tee` is shared by all that `spawn` starts.
    pub fn new(tee: Tee) -> Self {
        Collectors {
            set: JoinSet::new(),
            stop: watch::Sender::new(false),
            tee,
        }
    }

    /// Starts a collector for `app`.
    pub fn spawn(&mut self, app: &str, files: LogFiles, rotation: Rotation, endpoint: Endpoint) {
        let c = Collector {
            app: app.to_string(),
            files,
            rotation,
            endpoint,
            tee: self.tee.clone(),
        };
        self.set.spawn(c.run(self.stop.subscribe()));
    }

    /// Waits for every app's output to end (the apps have exited, so the
    /// agent sends the rest and then End), for as long as output keeps
    /// moving; then stops what is left.
    pub async fn finish(mut self) {
        let mut seen = self.tee.progress.load(Ordering::Relaxed);
        let mut quiet_since = Instant::now();
        loop {
            match tokio::time::timeout(Duration::from_millis(500), self.set.join_next()).await {
                Ok(None) => return,
                Ok(Some(joined)) => report(joined),
                Err(_) => {
                    let now = self.tee.progress.load(Ordering::Relaxed);
                    if now != seen {
                        (seen, quiet_since) = (now, Instant::now());
                    } else if quiet_since.elapsed() >= QUIET_LIMIT {
                        eprintln!("host-ctl: app output did not finish streaming");
                        return self.stop().await;
                    }
                }
            }
        }
    }

    /// The pod is over: each collector writes and syncs what it has and
    /// ends (within 3 s, or it is aborted).
    pub async fn stop(mut self) {
        self.stop.send_replace(true);
        let until = tokio::time::Instant::now() + Duration::from_secs(3);
        loop {
            match tokio::time::timeout_at(until, self.set.join_next()).await {
                Ok(Some(joined)) => report(joined),
                Ok(None) => return,
                Err(_) => {
                    self.set.abort_all();
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::store::tests::{files, records};
    use crate::logs::testing::{all_bytes, data, end, read_ack, read_line};
    use std::time::SystemTime;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{UnixListener, UnixStream};

    /// Accepts a connection as vhost-device-vsock would, for the log port.
    async fn accept(l: &UnixListener) -> UnixStream {
        let (mut s, _) = l.accept().await.unwrap();
        assert_eq!(read_line(&mut s).await, format!("CONNECT {LOG_VSOCK_PORT}"));
        s.write_all(b"OK 1026\n").await.unwrap();
        s
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_collector_reconnects_and_resumes_where_its_file_ends() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("vsock.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let f = files(dir.path(), "web", 5);
        let fake = tokio::spawn(async move {
            let mut s = accept(&listener).await;
            assert_eq!(read_line(&mut s).await, "LOGS web 0");
            s.write_all(b"OK\n").await.unwrap();
            s.write_all(&data(0, b"first\n")).await.unwrap();
            assert_eq!(read_ack(&mut s).await, Some(6));
            s.write_all(&data(6, b"sec")).await.unwrap();
            drop(s); // broken before "sec" was acknowledged
                     // A connection closed before the answer (an agent not
                     // listening yet): the collector tries again.
            let l2 = {
                let mut s = accept(&listener).await;
                drop(read_line(&mut s).await);
                listener
            };
            let mut s = accept(&l2).await;
            assert_eq!(read_line(&mut s).await, "LOGS web 9");
            s.write_all(b"OK\n").await.unwrap();
            assert_eq!(read_ack(&mut s).await, Some(9));
            // The agent sends again what was not acknowledged.
            let mut bytes = data(6, b"second\n");
            bytes.extend(end(13));
            s.write_all(&bytes).await.unwrap();
            assert_eq!(read_ack(&mut s).await, Some(13));
        });
        let mut set = Collectors::new(Tee::new(None, SystemTime::now()));
        let endpoint = Endpoint::Hybrid { socket, cid: 3 };
        set.spawn("web", f.clone(), Rotation::default(), endpoint);
        set.finish().await;
        fake.await.unwrap();
        assert_eq!(all_bytes(&f), b"first\nsecond\n");
        assert_eq!(records(&f.current).len(), 3);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn stop_ends_a_collector_that_cannot_connect() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path(), "web", 5);
        let mut set = Collectors::new(Tee::new(None, SystemTime::now()));
        let endpoint = Endpoint::Hybrid {
            socket: dir.path().join("nothing.sock"),
            cid: 3,
        };
        set.spawn("web", f, Rotation::default(), endpoint);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let t = Instant::now();
        set.stop().await;
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    }

    #[test]
    fn backoff_rises_to_two_seconds() {
        let d: Vec<u64> = (0..8).map(|n| backoff(n).as_millis() as u64).collect();
        assert_eq!(d, [50, 100, 200, 400, 800, 1600, 2000, 2000]);
    }
}
