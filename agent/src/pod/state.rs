//! The pod's live state: each app's status and logs, the pod's phase and the
//! boot timeline. State is split per app, each behind its own small lock, so
//! a slow reader of one part never stalls the others (Kata #13452).

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::Duration;

use kvmpod_api::config::AgentConfig;
use kvmpod_api::manifest::{App, PodManifest, Volume};
use kvmpod_api::protocol::{self as pb, EventKind};
use tokio::sync::watch;

use super::events::EventLog;
use super::logbuf::LogBuffer;
use crate::process::{AppCgroup, Exit, Input, Reaper, Terminal, EXIT_SETUP_FAILED};
use crate::timeline::{boottime_ns, Timeline};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AppState {
    Pending,
    Running,
    /// Exited, waiting out its backoff before it is started again.
    Restarting,
    Exited,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct AppStatus {
    pub state: AppState,
    pub pid: i32,
    pub exit_code: i32,
    pub signal: i32,
    pub error: String,
    pub started_ns: u64,
    pub exited_ns: u64,
    pub restarts: u32,
}

pub struct AppRecord {
    pub manifest: App,
    status: Mutex<AppStatus>,
    pub logs: LogBuffer,
    /// True once the app has exited or failed to start.
    done: watch::Sender<bool>,
    /// The app's cgroup, once created.
    pub cgroup: OnceLock<AppCgroup>,
    /// The running app's mount namespace, for `exec` to join.
    ns: Mutex<Option<OwnedFd>>,
    /// The current run's stdin (apps with `"stdin": true`): a pipe, or
    /// its terminal. Writers hold the inner lock while writing; replacing
    /// or closing takes only the outer one.
    stdin: Mutex<Option<Arc<tokio::sync::Mutex<Input>>>>,
    /// The current run's terminal (apps with `"terminal": true`), for
    /// window size changes.
    terminal: Mutex<Option<Terminal>>,
    /// Set when the app is being taken out of its pod: it is not started
    /// again, whatever its restart policy.
    removing: AtomicBool,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl AppRecord {
    /// `log_capacity` is the agent's default buffer, for apps that set
    /// none.
    fn new(manifest: App, log_capacity: u64) -> Self {
        let capacity = manifest.log_buffer_size.unwrap_or(log_capacity);
        let logs = LogBuffer::new(
            usize::try_from(capacity).unwrap_or(usize::MAX),
            manifest.log_mode,
        );
        AppRecord {
            manifest,
            status: Mutex::new(AppStatus {
                state: AppState::Pending,
                pid: 0,
                exit_code: 0,
                signal: 0,
                error: String::new(),
                started_ns: 0,
                exited_ns: 0,
                restarts: 0,
            }),
            logs,
            done: watch::channel(false).0,
            cgroup: OnceLock::new(),
            ns: Mutex::new(None),
            stdin: Mutex::new(None),
            terminal: Mutex::new(None),
            removing: AtomicBool::new(false),
        }
    }

    /// Marks the app as leaving its pod: no more restarts.
    pub(super) fn set_removing(&self) {
        self.removing.store(true, Ordering::SeqCst);
    }

    pub(super) fn is_removing(&self) -> bool {
        self.removing.load(Ordering::SeqCst)
    }

    /// The stdin and terminal of a new run of the app.
    pub(super) fn set_io(&self, input: Input, terminal: Option<Terminal>) {
        *lock(&self.stdin) = match input {
            Input::None => None,
            input => Some(Arc::new(tokio::sync::Mutex::new(input))),
        };
        *lock(&self.terminal) = terminal;
    }

    /// Feeds the app's stdin. Fails when the app has none (or closed it,
    /// or stopped reading it: then it has none from now on).
    pub async fn write_stdin(&self, data: &[u8]) -> std::io::Result<()> {
        let writer = lock(&self.stdin).clone();
        let Some(w) = writer else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                format!(
                    "app {:?} has no stdin (start it with \"stdin\": true)",
                    self.name()
                ),
            ));
        };
        let mut input = w.lock().await;
        input.write(data).await;
        if matches!(*input, Input::None) {
            drop(input);
            let mut slot = lock(&self.stdin);
            if slot.as_ref().is_some_and(|s| Arc::ptr_eq(s, &w)) {
                slot.take();
            }
            return Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                format!("app {:?} no longer reads its stdin", self.name()),
            ));
        }
        Ok(())
    }

    /// Ends the app's stdin, as the host's end of file: a pipe's reader
    /// reads end of file once a write under way is done, a terminal gets
    /// ^D.
    pub async fn end_stdin(&self) {
        let writer = lock(&self.stdin).take();
        if let Some(w) = writer {
            w.lock().await.close().await;
        }
    }

    /// Lets go of the run's stdin and terminal (the run is over).
    pub(super) fn close_io(&self) {
        lock(&self.stdin).take();
        lock(&self.terminal).take();
    }

    /// Sets the size of the app's terminal; nothing for an app without one.
    pub fn resize(&self, rows: u16, cols: u16) -> Result<(), nix::errno::Errno> {
        let size = nix::pty::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        match &*lock(&self.terminal) {
            Some(t) => t.resize(&size),
            None => Ok(()),
        }
    }

    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    pub(super) fn status(&self) -> AppStatus {
        lock(&self.status).clone()
    }

    /// Keeps the running app's mount namespace (None when it exits).
    pub(super) fn set_namespace(&self, ns: Option<OwnedFd>) {
        *lock(&self.ns) = ns;
    }

    /// The running app's mount namespace, for a process to join.
    pub fn namespace(&self) -> Option<OwnedFd> {
        lock(&self.ns).as_ref().and_then(|fd| fd.try_clone().ok())
    }

    /// The app exited and will be started again after a backoff.
    pub(super) fn set_restarting(&self, exit: Exit, at: u64, restarts: u32) {
        let mut s = lock(&self.status);
        s.state = AppState::Restarting;
        s.pid = 0;
        s.exit_code = exit.code;
        s.signal = exit.signal;
        s.exited_ns = at;
        s.restarts = restarts;
    }

    pub(super) fn set_running(&self, pid: i32, at: u64) {
        let mut s = lock(&self.status);
        s.state = AppState::Running;
        s.pid = pid;
        s.started_ns = at;
        s.exit_code = 0;
        s.signal = 0;
    }

    pub fn set_exited(&self, exit: Exit, at: u64) {
        {
            let mut s = lock(&self.status);
            s.state = AppState::Exited;
            s.exit_code = exit.code;
            s.signal = exit.signal;
            s.exited_ns = at;
        }
        self.done.send_replace(true);
    }

    /// The app could not be started: recorded with an exit status (125,
    /// 126 or 127, as a shell would) and the reason.
    pub(super) fn set_failed(&self, code: i32, error: String, at: u64) {
        {
            let mut s = lock(&self.status);
            s.state = AppState::Failed;
            s.exit_code = code;
            s.error = error;
            s.exited_ns = at;
        }
        // Never started: no output, no pipes to drain.
        let _ = self.logs.close();
        self.done.send_replace(true);
    }

    /// The pid to signal, while the app runs.
    pub fn running_pid(&self) -> Option<i32> {
        let s = lock(&self.status);
        (s.state == AppState::Running && s.pid > 0).then_some(s.pid)
    }

    /// The app's status in the wire form.
    pub fn wire_status(&self) -> pb::AppStatus {
        let s = self.status();
        let mut out = pb::AppStatus::new();
        out.name = self.name().to_string();
        out.state = match s.state {
            AppState::Pending => pb::AppState::APP_STATE_PENDING,
            AppState::Running => pb::AppState::APP_STATE_RUNNING,
            AppState::Exited => pb::AppState::APP_STATE_EXITED,
            AppState::Failed => pb::AppState::APP_STATE_FAILED,
            AppState::Restarting => pb::AppState::APP_STATE_RESTARTING,
        }
        .into();
        out.restarts = s.restarts;
        out.pid = s.pid;
        out.exit_code = s.exit_code;
        out.signal = s.signal;
        out.error = s.error;
        out.started_ns = s.started_ns;
        out.exited_ns = s.exited_ns;
        let t = self.logs.totals();
        out.dropped_bytes = t.dropped;
        out.output_end = t.end;
        out.output_acked = t.acked;
        out.output_closed = self.logs.is_closed();
        out
    }

    pub(super) fn is_done(&self) -> bool {
        *self.done.borrow()
    }

    pub async fn wait(&self) {
        let mut rx = self.done.subscribe();
        let _ = rx.wait_for(|done| *done).await;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Starting,
    Running,
    Exited,
    Failed,
    Stopping,
}

pub struct Pod {
    /// The manifest the pod booted with.
    pub manifest: PodManifest,
    pub config: AgentConfig,
    /// The apps, the booted ones first, then those added while it runs
    /// (sandbox pods).
    apps: RwLock<Vec<Arc<AppRecord>>>,
    /// The volumes added apps brought, with the app that brought each;
    /// mounted at `/mnt/<volume>` too.
    added_volumes: Mutex<Vec<(String, Volume)>>,
    /// Held while an app is added or taken out, so two requests never
    /// pass the same name check, or unmount what the other mounts.
    pub(super) membership: Mutex<()>,
    pub timeline: Timeline,
    pub reaper: Arc<Reaper>,
    phase: Mutex<(Phase, String)>,
    /// The grace period of the first shutdown request.
    stop: watch::Sender<Option<Duration>>,
    stopping: AtomicBool,
    exited_reported: AtomicBool,
    pub events: EventLog,
}

impl Pod {
    pub fn new(
        manifest: PodManifest,
        config: AgentConfig,
        timeline: Timeline,
        reaper: Arc<Reaper>,
    ) -> Arc<Self> {
        let apps = manifest
            .apps
            .iter()
            .map(|a| Arc::new(AppRecord::new(a.clone(), config.log_buffer_bytes)))
            .collect();
        Arc::new(Pod {
            manifest,
            config,
            apps: RwLock::new(apps),
            added_volumes: Mutex::new(Vec::new()),
            membership: Mutex::new(()),
            timeline,
            reaper,
            phase: Mutex::new((Phase::Starting, String::new())),
            stop: watch::channel(None).0,
            stopping: AtomicBool::new(false),
            exited_reported: AtomicBool::new(false),
            events: EventLog::default(),
        })
    }

    /// The apps as they are now.
    pub fn apps(&self) -> Vec<Arc<AppRecord>> {
        self.apps.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn app(&self, name: &str) -> Option<Arc<AppRecord>> {
        self.apps
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|a| a.name() == name)
            .cloned()
    }

    /// Every volume's name: the booted pod's and the added apps'.
    pub fn volume_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .manifest
            .volumes
            .iter()
            .map(|v| v.name.clone())
            .collect();
        names.extend(
            lock(&self.added_volumes)
                .iter()
                .map(|(_, v)| v.name.clone()),
        );
        names
    }

    /// The manifest an app's root is assembled from: the pod's volumes
    /// (with those added apps brought) and the app itself.
    pub fn manifest_for(&self, app: &App) -> PodManifest {
        let mut m = PodManifest {
            hostname: self.manifest.hostname.clone(),
            volumes: self.manifest.volumes.clone(),
            apps: vec![app.clone()],
            sandbox: self.manifest.sandbox,
            network: self.manifest.network.clone(),
        };
        m.volumes
            .extend(lock(&self.added_volumes).iter().map(|(_, v)| v.clone()));
        m
    }

    /// Adds an app (and the volumes it brought) to the running pod.
    pub(super) fn push_app(&self, app: Arc<AppRecord>, volumes: Vec<Volume>) {
        let owner = app.name().to_string();
        lock(&self.added_volumes).extend(volumes.into_iter().map(|v| (owner.clone(), v)));
        self.apps
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(app);
    }

    /// Takes an app out of the pod; returns the volumes it brought.
    pub(super) fn drop_app(&self, name: &str) -> Vec<Volume> {
        let mut owned = Vec::new();
        lock(&self.added_volumes).retain(|(owner, v)| {
            let mine = owner == name;
            if mine {
                owned.push(v.clone());
            }
            !mine
        });
        self.apps
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|a| a.name() != name);
        owned
    }

    /// A record for an app the pod does not have yet.
    pub(super) fn new_record(&self, app: App) -> Arc<AppRecord> {
        Arc::new(AppRecord::new(app, self.config.log_buffer_bytes))
    }

    pub(super) fn set_phase(&self, phase: Phase) {
        let mut p = lock(&self.phase);
        // Failed and Stopping are final as far as the apps are concerned.
        if !matches!(p.0, Phase::Failed | Phase::Stopping) || phase == Phase::Stopping {
            p.0 = phase;
        }
    }

    /// Pod setup failed: no (further) app starts. Apps not started yet are
    /// failed with the same reason.
    pub fn fail(&self, error: String) {
        *lock(&self.phase) = (Phase::Failed, error.clone());
        for app in &self.apps() {
            if app.status().state == AppState::Pending {
                app.set_failed(
                    EXIT_SETUP_FAILED,
                    format!("pod setup failed: {error}"),
                    boottime_ns(),
                );
            }
        }
        self.app_done();
    }

    /// Called when an app is done; the pod is done when every app is.
    pub fn app_done(&self) {
        if self.apps().iter().all(|a| a.is_done()) {
            self.set_phase(Phase::Exited);
            if !self.exited_reported.swap(true, Ordering::SeqCst) {
                self.events
                    .push(EventKind::EVENT_KIND_POD_EXITED, "", 0, 0, String::new());
            }
        }
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Waits until every app is done, those added meanwhile too.
    pub async fn wait_all(&self) {
        loop {
            let apps = self.apps();
            for app in &apps {
                app.wait().await;
            }
            if self.apps().iter().all(|a| a.is_done()) {
                return;
            }
        }
    }

    /// Asks for shutdown; only the first request counts. Returns whether
    /// this one did.
    pub fn request_stop(&self, grace: Duration) -> bool {
        if self.stopping.swap(true, Ordering::SeqCst) {
            return false;
        }
        self.stop.send_replace(Some(grace));
        true
    }

    /// Resolves with the grace period once shutdown was asked for.
    pub async fn stop_requested(&self) -> Duration {
        let mut rx = self.stop.subscribe();
        let default = Duration::from_millis(u64::from(self.config.grace_ms));
        let grace = match rx.wait_for(Option::is_some).await {
            Ok(g) => g.unwrap_or(default),
            Err(_) => default,
        };
        grace
    }

    /// The wire form of the pod's status.
    pub fn status(&self) -> pb::PodStatus {
        let (phase, error) = lock(&self.phase).clone();
        let mut st = pb::PodStatus::new();
        st.state = match phase {
            Phase::Starting => pb::PodState::POD_STATE_STARTING,
            Phase::Running => pb::PodState::POD_STATE_RUNNING,
            Phase::Exited => pb::PodState::POD_STATE_EXITED,
            Phase::Failed => pb::PodState::POD_STATE_FAILED,
            Phase::Stopping => pb::PodState::POD_STATE_STOPPING,
        }
        .into();
        st.error = error;
        st.apps = self.apps().iter().map(|a| a.wire_status()).collect();
        st.timeline = self
            .timeline
            .snapshot()
            .into_iter()
            .map(|(name, ns)| {
                let mut e = pb::TimelineEvent::new();
                e.name = name;
                e.boottime_ns = ns;
                e
            })
            .collect();
        st.now_ns = boottime_ns();
        st
    }
}
