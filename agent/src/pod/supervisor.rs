//! Starting and watching the apps, in manifest order: each app's root is
//! assembled just before it first starts (rkt: its bind mount units were
//! `Before=` its service). An exit is recorded once the app's last output
//! byte is in its log buffer (Kata #9186: lost output), or after a short
//! wait when its pipes stay open or its buffer is full; the restart policy
//! then decides whether it starts again, after a backoff. Its output ends
//! (the log stream's End) only once every run's pipes are drained.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use kvmpod_api::manifest::RestartPolicy;
use kvmpod_api::protocol::EventKind;
use kvmpod_api::timeline::{AppMoment, Mark};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::logbuf::{DropNews, DropRun, Stream};
use super::state::{AppRecord, Phase, Pod};
use super::PodError;
use crate::process::{AppCgroup, AppLaunch, Exit, Output, Which};
use crate::storage;
use crate::timeline::boottime_ns;

/// How long output may still arrive after an app's process has exited: a
/// background child that inherited its stdout can hold the pipe open.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);
/// The first restart's delay; each further one doubles, up to the cap.
const BACKOFF_START: Duration = Duration::from_millis(250);
const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// How often an app's OOM kill count is checked while it runs.
const OOM_POLL: Duration = Duration::from_millis(500);
/// The most read from a pipe at once: a full pipe's worth.
const READ_SIZE: usize = 64 * 1024;

/// A started process of an app.
struct Started {
    exit: oneshot::Receiver<Exit>,
    /// Its stdout and stderr pipes, or its terminal.
    outputs: Vec<(Which, Output)>,
}

/// The delay before restart number `n` (from 1).
fn backoff(n: u32) -> Duration {
    let factor = 1u32
        .checked_shl(n.saturating_sub(1).min(16))
        .unwrap_or(u32::MAX);
    BACKOFF_START.saturating_mul(factor).min(BACKOFF_CAP)
}

/// Whether an app that ended with `exit` after `restarts` restarts is
/// started again.
fn restarts_again(policy: RestartPolicy, max: Option<u32>, exit: Exit, restarts: u32) -> bool {
    let room = max.is_none_or(|m| restarts < m);
    match policy {
        RestartPolicy::Never => false,
        RestartPolicy::OnFailure => exit.code != 0 && room,
        RestartPolicy::Always => room,
    }
}

/// Starts every app, in order. An app that cannot start is recorded as
/// failed; the others still run.
pub fn start_apps(pod: &Arc<Pod>) {
    for app in &pod.apps() {
        start_app(pod, app);
    }
}

/// Starts one app of the pod and supervises it from then on; an app that
/// cannot start is recorded as failed.
pub(super) fn start_app(pod: &Arc<Pod>, app: &Arc<AppRecord>) {
    let started = prepare(pod, app).and_then(|ready| {
        let first = spawn(pod, app, &ready)?;
        Ok((ready, first))
    });
    match started {
        Ok((ready, first)) => {
            tokio::spawn(run(Arc::clone(pod), Arc::clone(app), ready, first));
        }
        Err(e) => {
            let (code, message) = (e.exit_code(), e.to_string());
            log::error!("app {}: {message}", app.name());
            pod.events.push(
                EventKind::EVENT_KIND_APP_FAILED,
                app.name(),
                code,
                0,
                message.clone(),
            );
            app.set_failed(code, message, boottime_ns());
            pod.timeline.mark(Mark::app(AppMoment::Failed, app.name()));
            pod.app_done();
        }
    }
}

/// Assembles the app's root and works out its command and identity.
fn prepare(pod: &Pod, app: &AppRecord) -> Result<AppLaunch, PodError> {
    storage::assemble(&pod.manifest_for(&app.manifest), &app.manifest)?;
    pod.timeline
        .mark(Mark::app(AppMoment::Assembled, app.name()));
    let launch = AppLaunch::prepare(&app.manifest)?;
    pod.timeline
        .mark(Mark::app(AppMoment::Resolved, app.name()));
    Ok(launch)
}

/// Starts the app's process once.
fn spawn(pod: &Pod, app: &AppRecord, ready: &AppLaunch) -> Result<Started, PodError> {
    let cgroup = app_cgroup(app)?;
    let procs = cgroup
        .map(|cg| cg.procs_fd())
        .transpose()
        .map_err(PodError::Cgroup)?;
    let launched = ready.spawn(&pod.reaper, &app.manifest, procs)?;
    let pid = launched.pid;
    let started = boottime_ns();
    // The child is past exec: its mount namespace is the app's.
    match std::fs::File::open(format!("/proc/{pid}/ns/mnt")) {
        Ok(ns) => app.set_namespace(Some(OwnedFd::from(ns))),
        Err(e) => log::warn!(
            "app {}: its namespace cannot be kept for exec: {e}",
            app.name()
        ),
    }
    app.set_running(pid, started);
    pod.timeline
        .mark_at(Mark::app(AppMoment::Started, app.name()), started);
    pod.events.push(
        EventKind::EVENT_KIND_APP_STARTED,
        app.name(),
        0,
        0,
        format!("pid {pid}"),
    );
    pod.set_phase(Phase::Running);
    app.set_io(launched.input, launched.terminal);
    Ok(Started {
        exit: launched.exit,
        outputs: launched.outputs,
    })
}

/// The app's life after its first start: one run after another, as the
/// restart policy says, until it is done for good.
async fn run(pod: Arc<Pod>, app: Arc<AppRecord>, ready: AppLaunch, first: Started) {
    let mut current = first;
    let mut restarts = 0u32;
    // Pumps of earlier runs still reading pipes that stayed open.
    let mut draining = Vec::new();
    loop {
        let (exit, pump) = supervise(&pod, &app, current).await;
        draining.extend(pump);
        app.set_namespace(None);
        let at = boottime_ns();
        pod.timeline
            .mark_at(Mark::app(AppMoment::Exited, app.name()), at);
        pod.events.push(
            EventKind::EVENT_KIND_APP_EXITED,
            app.name(),
            exit.code,
            exit.signal,
            String::new(),
        );
        match restart(&pod, &app, &ready, exit, at, &mut restarts).await {
            Some(started) => current = started,
            None => break,
        }
    }
    for pump in draining {
        let _ = pump.await;
    }
    if let Some(run) = app.logs.close() {
        report_drops(&pod, &app, run);
    }
}

/// After an exit at `at`: restarts the app while its policy says so and
/// until a start succeeds (a failed start counts as an exit), or records
/// it done for good and returns None.
async fn restart(
    pod: &Pod,
    app: &AppRecord,
    ready: &AppLaunch,
    mut exit: Exit,
    at: u64,
    restarts: &mut u32,
) -> Option<Started> {
    loop {
        let again = !pod.is_stopping()
            && !app.is_removing()
            && restarts_again(
                app.manifest.restart_policy,
                app.manifest.max_restarts,
                exit,
                *restarts,
            );
        if !again {
            finish(pod, app, exit, at);
            return None;
        }
        *restarts += 1;
        let delay = backoff(*restarts);
        app.set_restarting(exit, at, *restarts);
        pod.events.push(
            EventKind::EVENT_KIND_APP_RESTARTING,
            app.name(),
            exit.code,
            exit.signal,
            format!("restart {restarts} in {} ms", delay.as_millis()),
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = pod.stop_requested() => {
                finish(pod, app, exit, at);
                return None;
            }
        }
        match spawn(pod, app, ready) {
            Ok(started) => return Some(started),
            Err(e) => {
                let (code, message) = (e.exit_code(), e.to_string());
                log::error!("app {}: restart {restarts}: {message}", app.name());
                pod.events.push(
                    EventKind::EVENT_KIND_APP_FAILED,
                    app.name(),
                    code,
                    0,
                    message,
                );
                exit = Exit { code, signal: 0 };
            }
        }
    }
}

/// The app is done for good (its output ends once its pipes are drained).
fn finish(pod: &Pod, app: &AppRecord, exit: Exit, at: u64) {
    app.close_io();
    app.set_exited(exit, at);
    pod.app_done();
}

/// The app's cgroup, created on first use. Without limits a missing
/// cgroup only costs the app its statistics; with limits it must exist.
fn app_cgroup(app: &AppRecord) -> Result<Option<&AppCgroup>, PodError> {
    if let Some(cg) = app.cgroup.get() {
        return Ok(Some(cg));
    }
    match AppCgroup::create(app.name(), &app.manifest.resources) {
        Ok(cg) => Ok(Some(app.cgroup.get_or_init(|| cg))),
        Err(e) if app.manifest.resources.is_empty() => {
            log::warn!("app {}: no cgroup, so no statistics: {e}", app.name());
            Ok(None)
        }
        Err(e) => Err(PodError::Limits(e)),
    }
}

/// Reports OOM kills in the app's cgroup as events; returns the count seen.
fn check_oom(pod: &Pod, app: &AppRecord, seen: u64) -> u64 {
    let Some(cg) = app.cgroup.get() else {
        return seen;
    };
    let now = cg.oom_kills();
    if now > seen {
        pod.events.push(
            EventKind::EVENT_KIND_APP_OOM_KILLED,
            app.name(),
            0,
            libc::SIGKILL,
            format!(
                "the OOM killer killed {} process(es) of the app (memory limit reached)",
                now - seen
            ),
        );
    }
    now.max(seen)
}

/// Watches one run of the app: its output into the log buffer, OOM kills
/// into events; returns its exit once its output is drained, or with the
/// pump still at work when its pipes are not at end of file soon after.
async fn supervise(
    pod: &Arc<Pod>,
    app: &Arc<AppRecord>,
    mut started: Started,
) -> (Exit, Option<JoinHandle<()>>) {
    let outputs = std::mem::take(&mut started.outputs);
    let mut pump = tokio::spawn(pump(Arc::clone(pod), Arc::clone(app), outputs));
    let mut exit = std::pin::pin!(started.exit);
    let mut oom_seen = app.cgroup.get().map_or(0, |cg| cg.oom_kills());
    // The reaper never drops a registered sender without sending, but if it
    // did, report the app as killed rather than leave it running forever.
    let exit = loop {
        tokio::select! {
            status = &mut exit => break status.unwrap_or(Exit { code: 137, signal: 9 }),
            _ = tokio::time::sleep(OOM_POLL) => oom_seen = check_oom(pod, app, oom_seen),
        }
    };
    check_oom(pod, app, oom_seen);
    match tokio::time::timeout(DRAIN_AFTER_EXIT, &mut pump).await {
        Ok(_) => (exit, None),
        Err(_) => (exit, Some(pump)),
    }
}

/// Reports the runs of drops an append ended or started, as events.
fn report_drop_news(pod: &Pod, app: &AppRecord, news: DropNews) {
    if let Some(run) = news.ended {
        report_drops(pod, app, run);
    }
    if let Some(offset) = news.started {
        pod.events.push(
            EventKind::EVENT_KIND_APP_OUTPUT_DROPPED,
            app.name(),
            0,
            0,
            format!(
                "dropping output from offset {offset}: the log buffer is full (non-blocking mode)"
            ),
        );
    }
}

/// Reports a run of dropped output as an event.
fn report_drops(pod: &Pod, app: &AppRecord, run: DropRun) {
    pod.events.push(
        EventKind::EVENT_KIND_APP_OUTPUT_DROPPED,
        app.name(),
        0,
        0,
        format!(
            "dropped {} bytes at offset {} (log buffer full)",
            run.count, run.offset
        ),
    );
}

/// Resolves when `rx` can be read; never when there is none.
async fn readable(rx: Option<&Output>) -> std::io::Result<()> {
    match rx {
        Some(rx) => rx.readable().await,
        None => std::future::pending().await,
    }
}

/// Copies a run's stdout and stderr (or its terminal's output, as stdout)
/// into the app's log buffer, in the order they are read, until both are
/// at end of file. While a blocking app's buffer is full neither is read,
/// so the app waits in its writes once the pipe (or terminal) is full too.
async fn pump(pod: Arc<Pod>, app: Arc<AppRecord>, outputs: Vec<(Which, Output)>) {
    let (mut out, mut err) = (None, None);
    for (which, output) in outputs {
        match which {
            Which::Stdout => out = Some(output),
            Which::Stderr => err = Some(output),
        }
    }
    let mut buf = Vec::new();
    while out.is_some() || err.is_some() {
        let room = app.logs.room().await.min(READ_SIZE);
        // Read at most `room` bytes into fresh memory: a full read goes
        // into the buffer as it is.
        if buf.capacity() != room {
            buf = Vec::with_capacity(room);
        }
        let (stream, ready) = tokio::select! {
            r = readable(out.as_ref()) => (Stream::Stdout, r),
            r = readable(err.as_ref()) => (Stream::Stderr, r),
        };
        let pipe = match stream {
            Stream::Stdout => &mut out,
            Stream::Stderr => &mut err,
        };
        let Some(rx) = pipe.as_ref() else { continue };
        match ready.and_then(|()| rx.try_read_buf(&mut buf)) {
            Ok(0) => *pipe = None,
            Ok(_) => {
                let data = std::mem::take(&mut buf);
                let news = app.logs.append_vec(stream, data, boottime_ns());
                report_drop_news(&pod, &app, news);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                log::warn!("app {}: reading its output: {e}", app.name());
                *pipe = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::unix::pipe;

    #[test]
    fn backoff_doubles_to_a_cap() {
        let ms: Vec<u128> = (1..=10).map(|n| backoff(n).as_millis()).collect();
        assert_eq!(
            ms,
            [250, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
        assert_eq!(backoff(u32::MAX), BACKOFF_CAP);
    }

    /// A pod of one app with a 64 KiB buffer in `mode`.
    fn pod(mode: &str) -> Arc<Pod> {
        let manifest = kvmpod_api::validate::parse(&format!(
            r#"{{"apps": [{{"name": "a", "rootfs": "/", "exec": ["x"],
                           "logMode": "{mode}", "logBufferSize": "64K"}}]}}"#
        ))
        .unwrap();
        Pod::new(
            manifest,
            kvmpod_api::config::AgentConfig::default(),
            crate::timeline::Timeline::default(),
            crate::process::Reaper::new(),
        )
    }

    /// A thread writing `total` patterned bytes into a pipe, then closing
    /// it; the pump task reading the other end.
    fn writer_and_pump(
        pod: &Arc<Pod>,
        total: usize,
    ) -> (std::thread::JoinHandle<()>, JoinHandle<()>, Vec<u8>) {
        use std::io::Write;
        let (r, w) = nix::unistd::pipe().unwrap();
        let data: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
        let writer = std::thread::spawn({
            let data = data.clone();
            move || {
                let _ = std::fs::File::from(w).write_all(&data);
            }
        });
        let app = Arc::clone(&pod.apps()[0]);
        let rx = pipe::Receiver::from_owned_fd(r).unwrap();
        let pump = tokio::spawn(pump(
            Arc::clone(pod),
            app,
            vec![(Which::Stdout, Output::Pipe(rx))],
        ));
        (writer, pump, data)
    }

    /// A terminal's output is read to its end: what the app wrote before
    /// its side closed, then the EIO a terminal gives for end of file.
    #[tokio::test(flavor = "current_thread")]
    async fn a_terminal_is_read_to_its_end() {
        use nix::fcntl::{fcntl, FcntlArg, OFlag};
        let pod = pod("blocking");
        let pty = nix::pty::openpty(None, None).unwrap();
        fcntl(&pty.master, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).unwrap();
        // SAFETY: the descriptor stays open, and names the same file, for
        // as long as the AsyncFd owns it.
        let master = unsafe { tokio::io::unix::AsyncFd::register(pty.master) }
            .map_err(|e| e.into_parts().1)
            .unwrap();
        nix::unistd::write(&pty.slave, b"hello\n").unwrap();
        drop(pty.slave);
        let outputs = vec![(Which::Stdout, Output::Pty(Arc::new(master)))];
        tokio::time::timeout(
            Duration::from_secs(10),
            pump(Arc::clone(&pod), Arc::clone(&pod.apps()[0]), outputs),
        )
        .await
        .expect("the pump ends at the terminal's end");
        let items = pod.apps()[0].logs.read(0, usize::MAX).items;
        let text: Vec<u8> = items
            .iter()
            .filter_map(|i| match i {
                crate::pod::Item::Data(c) => Some(c.data.as_slice().to_vec()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .concat();
        assert_eq!(text, b"hello\r\n");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_blocking_app_waits_for_acks_and_loses_nothing() {
        let pod = pod("blocking");
        let logs = &pod.apps()[0].logs;
        let (writer, pump, data) = writer_and_pump(&pod, 1 << 20);
        // The buffer fills, then nothing more is read: the writer waits in
        // the pipe.
        while logs.totals().end < 64 << 10 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(logs.totals().end, 64 << 10);
        assert!(!writer.is_finished());
        let mut got = Vec::new();
        while !pump.is_finished() || got.len() < data.len() {
            for item in logs.read(got.len() as u64, usize::MAX).items {
                if let crate::pod::Item::Data(c) = item {
                    assert_eq!(c.offset, got.len() as u64);
                    got.extend_from_slice(c.data.as_slice());
                }
            }
            logs.ack(got.len() as u64).unwrap();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(got == data, "the bytes differ");
        assert_eq!(logs.totals().dropped, 0);
        writer.join().unwrap();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_non_blocking_app_never_waits_and_drops_are_reported() {
        let pod = pod("non-blocking");
        let logs = &pod.apps()[0].logs;
        let (writer, pump, _) = writer_and_pump(&pod, 1 << 20);
        pump.await.unwrap();
        writer.join().unwrap();
        let t = logs.totals();
        assert_eq!((t.end, t.dropped), (1 << 20, (1 << 20) - (64 << 10)));
        // The run of drops is announced when it starts...
        let events = pod.events.after(0);
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(
            events[0].message,
            "dropping output from offset 65536: the log buffer is full (non-blocking mode)"
        );
        // ...and counted once it ends: with output kept.
        logs.ack(t.end).unwrap();
        let (writer, pump, _) = writer_and_pump(&pod, 100);
        pump.await.unwrap();
        writer.join().unwrap();
        let events = pod.events.after(1);
        assert_eq!(events.len(), 1);
        assert_eq!(
            events[0].message,
            format!(
                "dropped {} bytes at offset 65536 (log buffer full)",
                t.dropped
            )
        );
    }

    #[test]
    fn policies_decide_restarts() {
        let ok = Exit { code: 0, signal: 0 };
        let bad = Exit { code: 3, signal: 0 };
        let killed = Exit {
            code: 137,
            signal: 9,
        };
        assert!(!restarts_again(RestartPolicy::Never, None, bad, 0));
        assert!(restarts_again(RestartPolicy::OnFailure, Some(3), bad, 2));
        assert!(!restarts_again(RestartPolicy::OnFailure, Some(3), bad, 3));
        assert!(restarts_again(RestartPolicy::OnFailure, None, killed, 100));
        assert!(!restarts_again(RestartPolicy::OnFailure, None, ok, 0));
        assert!(restarts_again(RestartPolicy::Always, None, ok, 5));
        assert!(!restarts_again(RestartPolicy::Always, Some(1), ok, 1));
    }
}
