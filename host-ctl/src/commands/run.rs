//! `host-ctl run`: a pod from manifest to exit code, attached or detached.
//!
//! Attached, this process is the pod's monitor: it prints the apps' output
//! and exits with the first failing app's status (manifest order), 0 when
//! all succeeded, 125 when host-ctl failed, 130 when interrupted. Detached,
//! a monitor process of its own session takes the pod over and `run`
//! prints the pod's ID once the agent has answered.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use kvmpod_api::protocol::{AppState, PodState, PodStatus};
use tokio::sync::oneshot;

use std::os::fd::AsFd;

use kvmpod_api::iostream::{Input, Request};

use super::exec::{follow_resizes, window};
use super::said;
use crate::agent::iostream::{self, Pumped};
use crate::agent::Endpoint;
use crate::launch::{self, RunOptions};
use crate::logs::Printer;
use crate::pod::monitor::{self, spawn::spawn_keeper, spawn::KeeperStart, Adoption};
use crate::pod::record::{self, State};
use crate::pod::{store, Monitor, PodDir};
use crate::ui::detach_keys::DetachKeys;
use crate::ui::progress::{self, Step};
use crate::ui::terminal::{self, RawMode};
use crate::ui::text::indent;
use crate::vmm::process::tail;

/// Exit status of host-ctl when it fails itself (not an app).
pub const EXIT_HOST_ERROR: i32 = 125;
/// Exit status after an interrupt, as a shell reports SIGINT.
pub const EXIT_INTERRUPTED: i32 = 130;

/// Host-side moments: kept for `--timings`, and shown while the user
/// waits for the pod to start.
struct HostClock {
    start: Instant,
    marks: Vec<(&'static str, Instant)>,
    /// What is shown of the wait; dropped (cleared) once the pod is up.
    shown: Option<Step>,
}

impl HostClock {
    fn new() -> HostClock {
        HostClock {
            start: Instant::now(),
            marks: Vec::new(),
            shown: Some(progress::step("preparing the pod")),
        }
    }

    fn mark(&mut self, name: &'static str) {
        self.marks.push((name, Instant::now()));
        if let (Some(step), Some(next)) = (&self.shown, doing_after(name)) {
            step.set(next);
        }
    }

    /// Says what the wait is now, past the moments `mark` knows.
    fn doing(&self, what: impl Into<String>) {
        if let Some(step) = &self.shown {
            step.set(what);
        }
    }

    /// The wait is over: its progress goes before anything else is shown.
    fn waited(&mut self) {
        self.shown = None;
    }
}

/// What a pod's start goes on with after the moment `mark`.
fn doing_after(mark: &str) -> Option<&'static str> {
    Some(match mark {
        "validated" => "writing the pod's files",
        "share-ready" => "mounting the pod's share",
        "claimed" => "handing the pod to a VM of the warm pool",
        _ => return None,
    })
}

/// What `run` does besides starting the pod.
#[derive(Debug, Clone, Default)]
pub struct Attached {
    /// `--timings`.
    pub timings: bool,
    /// `--rm`.
    pub rm: bool,
    /// `-i`: this process's stdin goes to the pod's app with a stdin.
    pub interactive: bool,
    /// `--detach-keys`: typed on a terminal joined to the app (`-i -t`),
    /// they leave the pod running in a monitor of its own.
    pub detach_keys: Option<DetachKeys>,
}

/// How `run` ended.
enum RunEnd {
    /// With this exit status.
    Status(i32),
    /// The detach keys left the pod running, handed to a monitor process
    /// of its own.
    Left,
}

/// The app whose io stream `run` joins: the one fed stdin (`-i`), or the
/// one with a terminal, whose size follows this terminal's.
struct Joined {
    app: String,
    stdin: bool,
    terminal: bool,
}

pub async fn run(s: RunOptions, a: Attached) -> Result<i32> {
    let mut clock = HostClock::new();
    // A VM of the warm pool when one waits and fits; else one of its own.
    let claimed = crate::pool::claim(&s, &mut |m| clock.mark(m)).await;
    let dir = claimed
        .as_ref()
        .map_or_else(|| PodDir::planned(&s.state_dir), |p| p.dir.clone());
    let rm = a.rm;
    let result = run_pod(&s, dir.clone(), claimed, a, clock).await;
    let left = matches!(result, Ok(RunEnd::Left));
    if rm && !s.detach && !left && dir.path.exists() {
        // However the pod ended, failures included.
        if let Err(e) = store::remove(&dir) {
            eprintln!("host-ctl: removing pod {}: {e}", dir.id);
        }
    }
    result.map(|end| match end {
        RunEnd::Status(code) => code,
        RunEnd::Left => 0,
    })
}

async fn run_pod(
    s: &RunOptions,
    dir: PodDir,
    claimed: Option<launch::PodPlan>,
    a: Attached,
    mut clock: HostClock,
) -> Result<RunEnd> {
    let timings = a.timings;
    let pooled = claimed.is_some();
    let prepared = match claimed {
        Some(plan) => plan,
        None => launch::prepare(s, dir, &mut |m| clock.mark(m))?,
    };
    said::tell(&s.state_dir, &prepared.notes, s.verbosity);
    clock.doing(booting(&prepared, pooled));
    if s.detach {
        let start = if pooled {
            KeeperStart::Adopt
        } else {
            KeeperStart::Boot
        };
        let id = prepared.dir.id.clone();
        let started = detach(prepared.dir, s, start).await;
        clock.waited();
        started?;
        println!("{id}");
        return Ok(RunEnd::Status(0));
    }
    let joined = joined_app(&prepared.pod, a.interactive)?;
    let typed = joined
        .as_ref()
        .is_some_and(|j| j.terminal && j.stdin && terminal::is_terminal(std::io::stdin().as_fd()));
    // The detach keys hand the pod to a monitor of its own: its VM must
    // outlive this process, as a detached pod's does.
    let keys = a.detach_keys.filter(|_| typed);
    let endpoint = prepared.launch.endpoint.clone();
    let dir = prepared.dir.clone();
    let printer = Printer::new(prepared.pod.apps.iter().map(|a| a.name.as_str()));
    let interrupts = monitor::interrupts()?;
    let monitor = if pooled {
        Monitor::adopt(prepared.dir, Adoption::Claimed).await?
    } else {
        clock.mark("vm-starting");
        let die_with_run = keys.is_none();
        Monitor::boot(prepared.dir, prepared.pod, &prepared.launch, die_with_run).await?
    };
    clock.mark("agent-answered");
    clock.waited();
    // Once the pod is up, the app's terminal gets this one's keys as they
    // are typed; restored however run ends.
    let raw = typed.then(RawMode::enter).flatten();
    let (left_tx, left_rx) = oneshot::channel();
    let app = joined.as_ref().map(|j| j.app.clone());
    let feeder = joined.map(|j| tokio::spawn(join_io(endpoint, j, keys, left_tx)));
    // Resolves only when the keys were typed.
    let left = async {
        if left_rx.await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let outcome = tokio::select! {
        outcome = monitor.supervise(Some(printer), interrupts) => Some(outcome),
        () = left => None,
    };
    // What run says from here on is printed on a terminal in its own mode.
    drop(raw);
    if let Some(f) = feeder {
        f.abort();
    }
    let Some(outcome) = outcome else {
        // This monitor is gone (its log collectors stopped, its lock
        // released), and the VM runs on.
        hand_over(&dir).await?;
        let app = app.unwrap_or_default();
        eprintln!(
            "host-ctl: detached from {app}; pod {} keeps running (`host-ctl attach {} {app}`)",
            dir.id, dir.id
        );
        return Ok(RunEnd::Left);
    };
    let outcome = outcome?;
    clock.mark("vm-exited");
    Ok(RunEnd::Status(reported(
        &outcome,
        timings.then_some(&clock),
    )))
}

/// Says how the pod ended (and its timings, when asked); run's status.
fn reported(outcome: &monitor::Outcome, timings: Option<&HostClock>) -> i32 {
    if let Some(status) = &outcome.status {
        report_failures(status);
        if let Some(clock) = timings {
            print_timings(status, clock);
        }
    }
    if outcome.interrupted {
        EXIT_INTERRUPTED
    } else if let Some(status) = &outcome.status {
        exit_code(status)
    } else {
        eprintln!(
            "host-ctl: pod {} ended: {}",
            outcome.record.id,
            outcome.record.exit_reason.as_deref().unwrap_or("unknown")
        );
        EXIT_HOST_ERROR
    }
}

/// Hands a running pod whose monitor this process was to a monitor
/// process of its own session, as `run -d` starts one, and waits until it
/// has taken the pod over.
async fn hand_over(dir: &PodDir) -> Result<()> {
    let _waiting = progress::step(format!("handing pod {} to a monitor of its own", dir.id));
    record::update(dir, |r| r.detached = true)?;
    let mut keeper = spawn_keeper(dir, KeeperStart::Adopt)?;
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let rec = record::read(dir)?;
        let taken = rec
            .monitor
            .as_ref()
            .is_some_and(|m| i64::from(m.pid) != i64::from(std::process::id()));
        if (taken && record::monitor_alive(dir)) || rec.state == State::Exited {
            return Ok(());
        }
        if let Ok(Some(status)) = keeper.try_wait() {
            bail!(
                "the monitor of pod {} exited ({status}) before it took the pod over:\n{}",
                dir.id,
                indent(&tail(&dir.monitor_log(), 10))
            );
        }
        if Instant::now() > until {
            bail!(
                "pod {} was not taken over in time; see {}",
                dir.id,
                dir.path.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the wait for the agent is, as shown.
fn booting(plan: &launch::PodPlan, pooled: bool) -> String {
    let id = &plan.dir.id;
    if pooled {
        format!("starting pod {id} in a VM of the warm pool")
    } else {
        let accel = plan.launch.accel;
        format!("booting pod {id} ({accel}); waiting for its agent")
    }
}

/// The app `run` joins, if any: the one app that reads stdin with `-i`;
/// else the one app on a terminal.
fn joined_app(pod: &kvmpod_api::PodManifest, interactive: bool) -> Result<Option<Joined>> {
    let joined = |a: &kvmpod_api::manifest::App| Joined {
        app: a.name.clone(),
        stdin: interactive,
        terminal: a.terminal,
    };
    if !interactive {
        let mut on_terminals = pod.apps.iter().filter(|a| a.terminal);
        return Ok(match (on_terminals.next(), on_terminals.next()) {
            (Some(one), None) => Some(joined(one)),
            _ => None,
        });
    }
    let with: Vec<_> = pod.apps.iter().filter(|a| a.stdin).collect();
    match with.as_slice() {
        [one] => Ok(Some(joined(one))),
        [] => bail!("-i: no app of the pod takes stdin (give one \"stdin\": true)"),
        many => bail!(
            "-i: several apps take stdin ({}); attach to one with `host-ctl attach`",
            many.iter()
                .map(|a| a.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Joins the app's io stream, whose output is left to the printer (which
/// already shows it): sends this process's stdin until it ends (then the
/// app's stdin is ended) or until `keys` are typed (then `left` is told),
/// and keeps the app's terminal the size of this one.
async fn join_io(
    endpoint: Endpoint,
    j: Joined,
    keys: Option<DetachKeys>,
    left: oneshot::Sender<()>,
) {
    let request = Request::Attach { app: j.app.clone() };
    let (tx, mut rx) = match iostream::open(&endpoint, &request).await {
        Ok(session) => session,
        Err(e) => {
            eprintln!("host-ctl: attaching to {}: {e}", j.app);
            return;
        }
    };
    if j.terminal {
        if let Some(w) = window() {
            let _ = tx.send(Input::Resize(w)).await;
        }
        tokio::spawn(follow_resizes(tx.clone()));
    }
    let drain = async { while let Ok(Some(_)) = rx.next().await {} };
    let feed = async {
        if !j.stdin {
            return std::future::pending().await;
        }
        // A terminal app's stdin stays open at this end's end of file.
        match keys {
            Some(keys) => {
                tx.pump_stdin_until(tokio::io::stdin(), !j.terminal, keys)
                    .await
            }
            None => {
                tx.pump_stdin(tokio::io::stdin(), !j.terminal).await;
                Pumped::Ended
            }
        }
    };
    tokio::pin!(drain);
    tokio::select! {
        () = &mut drain => {}
        pumped = feed => {
            if pumped == Pumped::Detached {
                let _ = left.send(());
            } else {
                drain.await;
            }
        }
    }
}

/// Starts a monitor process for the prepared pod (booting its VM, or
/// adopting the pooled VM it claimed) and waits until its agent
/// answered, or it failed (the error says why).
async fn detach(dir: PodDir, s: &RunOptions, start: KeeperStart) -> Result<()> {
    let mut monitor = spawn_keeper(&dir, start)?;
    let until = Instant::now() + s.boot_timeout + Duration::from_secs(30);
    loop {
        let rec = record::read(&dir)?;
        // A pod whose apps are quick may be over before this loop looks:
        // it started, and that is what --detach reports.
        let started =
            rec.state == State::Running || (rec.state == State::Exited && rec.started.is_some());
        if started {
            return Ok(());
        }
        if rec.state == State::Exited {
            bail!(
                "pod {} did not start: {}",
                dir.id,
                rec.exit_reason.as_deref().unwrap_or("no reason recorded")
            );
        }
        if let Ok(Some(status)) = monitor.try_wait() {
            bail!(
                "the monitor of pod {} exited ({status}) before the pod started:\n{}",
                dir.id,
                indent(&tail(&dir.monitor_log(), 10))
            );
        }
        if Instant::now() > until {
            bail!(
                "pod {} did not start in time; see {}",
                dir.id,
                dir.path.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The first non-zero app exit status, in manifest order, else 0.
pub fn exit_code(status: &PodStatus) -> i32 {
    if status.state.enum_value_or_default() == PodState::POD_STATE_FAILED
        && status.apps.iter().all(|a| a.exit_code == 0)
    {
        return EXIT_HOST_ERROR;
    }
    status
        .apps
        .iter()
        .map(|a| a.exit_code)
        .find(|&c| c != 0)
        .unwrap_or(0)
}

pub fn report_failures(status: &PodStatus) {
    if status.state.enum_value_or_default() == PodState::POD_STATE_FAILED {
        eprintln!("host-ctl: the pod could not be set up: {}", status.error);
    }
    for app in &status.apps {
        if let Some(line) = app_outcome(app) {
            eprintln!("host-ctl: {line}");
        }
    }
}

/// A line about an app that did not succeed, or None if it did.
pub fn app_outcome(app: &kvmpod_api::protocol::AppStatus) -> Option<String> {
    match app.state.enum_value_or_default() {
        AppState::APP_STATE_FAILED => Some(format!(
            "app {:?} could not start (status {}): {}",
            app.name, app.exit_code, app.error
        )),
        AppState::APP_STATE_EXITED if app.signal != 0 => Some(format!(
            "app {:?} was killed by {} (status {})",
            app.name,
            crate::ui::signals::name(app.signal),
            app.exit_code
        )),
        AppState::APP_STATE_EXITED if app.exit_code != 0 => Some(format!(
            "app {:?} exited with status {}",
            app.name, app.exit_code
        )),
        _ => None,
    }
}

fn print_timings(status: &PodStatus, clock: &HostClock) {
    eprintln!("host-ctl: boot timeline (guest CLOCK_BOOTTIME, from kernel start):");
    for e in &status.timeline {
        eprintln!("  {:>9.3}s  {}", e.boottime_ns as f64 / 1e9, e.name);
    }
    eprintln!("host-ctl: host timeline (wall clock, from host-ctl start):");
    for (name, at) in &clock.marks {
        eprintln!(
            "  {:>9.3}s  {name}",
            at.duration_since(clock.start).as_secs_f64()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvmpod_api::protocol::AppStatus;

    fn status(codes: &[i32]) -> PodStatus {
        let mut s = PodStatus::new();
        s.state = PodState::POD_STATE_EXITED.into();
        s.apps = codes
            .iter()
            .map(|&c| {
                let mut a = AppStatus::new();
                a.exit_code = c;
                a
            })
            .collect();
        s
    }

    #[test]
    fn first_failing_app_in_manifest_order_decides() {
        assert_eq!(exit_code(&status(&[0, 0])), 0);
        assert_eq!(exit_code(&status(&[0, 7, 3])), 7);
        let mut failed = status(&[0]);
        failed.state = PodState::POD_STATE_FAILED.into();
        assert_eq!(exit_code(&failed), EXIT_HOST_ERROR);
    }

    #[test]
    fn outcomes_name_codes_and_signals() {
        let mut a = AppStatus::new();
        a.name = "web".into();
        a.state = AppState::APP_STATE_EXITED.into();
        assert_eq!(app_outcome(&a), None);
        a.exit_code = 7;
        assert_eq!(app_outcome(&a).unwrap(), "app \"web\" exited with status 7");
        a.exit_code = 143;
        a.signal = 15;
        assert_eq!(
            app_outcome(&a).unwrap(),
            "app \"web\" was killed by SIGTERM (status 143)"
        );
        a.state = AppState::APP_STATE_FAILED.into();
        a.exit_code = 127;
        a.error = "\"x\" was not found".into();
        assert!(app_outcome(&a)
            .unwrap()
            .contains("could not start (status 127)"));
    }
}
