//! Starting and watching the apps, in manifest order: each app's mounts are
//! made just before it starts (rkt: its bind mount units were `Before=` its
//! service), and its exit is recorded only once its last output byte is in
//! its log buffer (Kata #9186: lost output).

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use kvmpod_api::layout;
use kvmpod_api::manifest::is_mount_read_only;
use kvmpod_api::validate::normalize_guest_path;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::oneshot;

use crate::cgroups::AppCgroup;
use crate::logbuf::Stream;
use crate::mounts::{bind_into_root, mount_app_system_dirs};
use crate::pod::{AppRecord, Pod};
use crate::reaper::Exit;
use crate::resolve::open_root;
use crate::spawn::{exec_error, Launch, Stdio3, EXIT_SETUP_FAILED};
use crate::timeline::boottime_ns;
use crate::users;

/// How long output may still arrive after an app's process has exited: a
/// background child that inherited its stdout can hold the pipe open.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// Why an app could not be started, with the status it is recorded with.
struct StartError {
    code: i32,
    message: String,
}

impl StartError {
    fn setup(message: impl std::fmt::Display) -> Self {
        StartError {
            code: EXIT_SETUP_FAILED,
            message: message.to_string(),
        }
    }
}

/// Starts every app, in order. An app that cannot start is recorded as
/// failed; the others still run.
pub fn start_apps(pod: &Arc<Pod>) {
    for app in &pod.apps {
        match start(pod, app) {
            Ok(()) => {}
            Err(e) => {
                log::error!("app {}: {}", app.name(), e.message);
                pod.events
                    .push("app-failed", app.name(), e.code, 0, e.message.clone());
                app.set_failed(e.code, e.message, boottime_ns());
                pod.timeline.mark(format!("app-failed:{}", app.name()));
                pod.app_done();
            }
        }
    }
}

fn start(pod: &Arc<Pod>, app: &Arc<AppRecord>) -> Result<(), StartError> {
    let name = app.name();
    let root_path = layout::app_rootfs(name);
    let root = open_root(&root_path).map_err(StartError::setup)?;
    prepare_mounts(pod, app, &root)?;
    let identity = users::resolve(
        &root,
        app.manifest.user.as_deref(),
        app.manifest.group.as_deref(),
    )
    .map_err(StartError::setup)?;
    let launch = Launch::new(
        &app.manifest,
        &root_path,
        &root,
        identity,
        &app.manifest.exec,
        &[],
    )
    .map_err(|e| StartError {
        code: e.exit_code(),
        message: e.to_string(),
    })?;
    let cgroup = app_cgroup(app)?;
    let procs = cgroup
        .map(|cg| cg.procs_fd())
        .transpose()
        .map_err(StartError::setup)?;
    let io = Stdio3::Pipes {
        stdin: app.manifest.stdin,
    };
    let mut prepared = launch.command(io, procs).map_err(StartError::setup)?;
    let (mut child, exit) = pod.reaper.spawn(&mut prepared.command).map_err(|e| {
        let err = exec_error(&launch.program, &e);
        StartError {
            code: err.exit_code(),
            message: err.to_string(),
        }
    })?;
    drop(prepared);
    let pid = child.id() as i32;
    let started = boottime_ns();
    app.set_running(pid, started);
    pod.timeline.mark_at(format!("app-started:{name}"), started);
    pod.events
        .push("app-started", name, 0, 0, format!("pid {pid}"));
    pod.set_phase(crate::pod::Phase::Running);

    if let Some(stdin) = child.stdin.take() {
        match pipe::Sender::from_owned_fd(OwnedFd::from(stdin)) {
            Ok(w) => {
                let app = Arc::clone(app);
                tokio::spawn(async move { app.set_stdin(w).await });
            }
            Err(e) => log::warn!("app {name}: its stdin cannot be written: {e}"),
        }
    }
    let stdout = child.stdout.take().map(OwnedFd::from);
    let stderr = child.stderr.take().map(OwnedFd::from);
    tokio::spawn(supervise(
        Arc::clone(pod),
        Arc::clone(app),
        stdout,
        stderr,
        exit,
    ));
    Ok(())
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
        Err(e) => Err(StartError::setup(format!(
            "applying the app's resource limits: {e}"
        ))),
    }
}

/// How often an app's OOM kill count is checked while it runs.
const OOM_POLL: Duration = Duration::from_millis(500);

/// Reports OOM kills in the app's cgroup as events; returns the count seen.
fn check_oom(pod: &Pod, app: &AppRecord, seen: u64) -> u64 {
    let Some(cg) = app.cgroup.get() else {
        return seen;
    };
    let now = cg.oom_kills();
    if now > seen {
        pod.events.push(
            "app-oom-killed",
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

/// The app's `/proc`, `/sys` and `/dev`, then its volumes, parents before
/// the mounts nested in them.
fn prepare_mounts(pod: &Pod, app: &AppRecord, root: &OwnedFd) -> Result<(), StartError> {
    mount_app_system_dirs(root).map_err(StartError::setup)?;
    let mut mps: Vec<(String, &kvmpod_api::manifest::MountPoint)> = app
        .manifest
        .mount_points
        .iter()
        .filter_map(|mp| normalize_guest_path(&mp.path).ok().map(|p| (p, mp)))
        .collect();
    mps.sort_by(|a, b| a.0.cmp(&b.0));
    for (path, mp) in mps {
        let volume = pod
            .manifest
            .volume(&mp.volume)
            .ok_or_else(|| StartError::setup(format!("no volume named {:?}", mp.volume)))?;
        let read_only = is_mount_read_only(volume, mp);
        let source = layout::volume_dir(&volume.name);
        bind_into_root(root, &source, &path, read_only).map_err(|e| {
            StartError::setup(format!("mounting volume {:?} at {path}: {e}", volume.name))
        })?;
    }
    Ok(())
}

async fn supervise(
    pod: Arc<Pod>,
    app: Arc<AppRecord>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    exit: oneshot::Receiver<Exit>,
) {
    let pumps = [
        stdout.map(|fd| tokio::spawn(pump(Arc::clone(&app), Stream::Stdout, fd))),
        stderr.map(|fd| tokio::spawn(pump(Arc::clone(&app), Stream::Stderr, fd))),
    ];
    // The reaper never drops a registered sender without sending, but if it
    // did, report the app as killed rather than leave it running forever.
    let mut exit = std::pin::pin!(exit);
    let mut oom_seen = check_oom(&pod, &app, 0);
    let exit = loop {
        tokio::select! {
            status = &mut exit => break status.unwrap_or(Exit { code: 137, signal: 9 }),
            _ = tokio::time::sleep(OOM_POLL) => oom_seen = check_oom(&pod, &app, oom_seen),
        }
    };
    check_oom(&pod, &app, oom_seen);
    let _ = tokio::time::timeout(DRAIN_AFTER_EXIT, async {
        for pump in pumps.into_iter().flatten() {
            let _ = pump.await;
        }
    })
    .await;
    let at = boottime_ns();
    app.close_stdin().await;
    app.set_exited(exit, at);
    app.logs.close();
    pod.timeline
        .mark_at(format!("app-exited:{}", app.name()), at);
    pod.events.push(
        "app-exited",
        app.name(),
        exit.code,
        exit.signal,
        String::new(),
    );
    pod.app_done();
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
