//! Starting and watching the apps, in manifest order: each app's root is
//! assembled just before it first starts (rkt: its bind mount units were
//! `Before=` its service). An exit is recorded only once the app's last
//! output byte is in its log buffer (Kata #9186: lost output); the restart
//! policy then decides whether it starts again, after a backoff.

use std::os::fd::OwnedFd;
use std::process::Child;
use std::sync::Arc;
use std::time::Duration;

use kvmpod_api::manifest::RestartPolicy;
use kvmpod_api::protocol::EventKind;
use kvmpod_api::timeline::{AppMoment, Mark};
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::oneshot;

use super::logbuf::Stream;
use super::state::{AppRecord, Phase, Pod};
use super::StartError;
use crate::process::{AppCgroup, AppLaunch, Exit};
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

/// A started process of an app.
struct Started {
    child: Child,
    exit: oneshot::Receiver<Exit>,
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
    for app in &pod.apps {
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
}

/// Assembles the app's root and works out its command and identity.
fn prepare(pod: &Pod, app: &AppRecord) -> Result<AppLaunch, StartError> {
    storage::assemble(&pod.manifest, &app.manifest)?;
    Ok(AppLaunch::prepare(&app.manifest)?)
}

/// Starts the app's process once.
fn spawn(pod: &Pod, app: &AppRecord, ready: &AppLaunch) -> Result<Started, StartError> {
    let cgroup = app_cgroup(app)?;
    let procs = cgroup
        .map(|cg| cg.procs_fd())
        .transpose()
        .map_err(StartError::Cgroup)?;
    let (mut child, exit) = ready.spawn(&pod.reaper, &app.manifest, procs)?;
    let pid = child.id() as i32;
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
    if let Some(stdin) = child.stdin.take() {
        match pipe::Sender::from_owned_fd(OwnedFd::from(stdin)) {
            Ok(w) => app.set_stdin(w),
            Err(e) => log::warn!("app {}: its stdin cannot be written: {e}", app.name()),
        }
    }
    Ok(Started { child, exit })
}

/// The app's life after its first start: one run after another, as the
/// restart policy says, until it is done for good.
async fn run(pod: Arc<Pod>, app: Arc<AppRecord>, ready: AppLaunch, first: Started) {
    let mut current = first;
    let mut restarts = 0u32;
    loop {
        let exit = supervise(&pod, &app, current).await;
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
            None => return,
        }
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

/// The app is done for good.
fn finish(pod: &Pod, app: &AppRecord, exit: Exit, at: u64) {
    app.close_stdin();
    app.set_exited(exit, at);
    app.logs.close();
    pod.app_done();
}

/// The app's cgroup, created on first use. Without limits a missing
/// cgroup only costs the app its statistics; with limits it must exist.
fn app_cgroup(app: &AppRecord) -> Result<Option<&AppCgroup>, StartError> {
    if let Some(cg) = app.cgroup.get() {
        return Ok(Some(cg));
    }
    match AppCgroup::create(app.name(), &app.manifest.resources) {
        Ok(cg) => Ok(Some(app.cgroup.get_or_init(|| cg))),
        Err(e) if app.manifest.resources.is_empty() => {
            log::warn!("app {}: no cgroup, so no statistics: {e}", app.name());
            Ok(None)
        }
        Err(e) => Err(StartError::Limits(e)),
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
/// into events; returns its exit once its output is drained.
async fn supervise(pod: &Pod, app: &Arc<AppRecord>, mut started: Started) -> Exit {
    let stdout = started.child.stdout.take().map(OwnedFd::from);
    let stderr = started.child.stderr.take().map(OwnedFd::from);
    let pumps = [
        stdout.map(|fd| tokio::spawn(pump(Arc::clone(app), Stream::Stdout, fd))),
        stderr.map(|fd| tokio::spawn(pump(Arc::clone(app), Stream::Stderr, fd))),
    ];
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
    let _ = tokio::time::timeout(DRAIN_AFTER_EXIT, async {
        for pump in pumps.into_iter().flatten() {
            let _ = pump.await;
        }
    })
    .await;
    exit
}

/// Copies one of the app's output pipes into its log buffer until EOF.
async fn pump(app: Arc<AppRecord>, stream: Stream, fd: OwnedFd) {
    let mut rx = match pipe::Receiver::from_owned_fd(fd) {
        Ok(rx) => rx,
        Err(e) => {
            log::warn!("app {}: cannot read its output: {e}", app.name());
            return;
        }
    };
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match rx.read(&mut buf).await {
            Ok(0) => return,
            Ok(n) => app.logs.append(stream, &buf[..n], boottime_ns()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log::warn!("app {}: reading its output: {e}", app.name());
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_cap() {
        let ms: Vec<u128> = (1..=10).map(|n| backoff(n).as_millis()).collect();
        assert_eq!(
            ms,
            [250, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
        assert_eq!(backoff(u32::MAX), BACKOFF_CAP);
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
