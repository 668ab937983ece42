//! Stopping the pod without losing anything: each app's stop signal
//! (SIGTERM unless it names another), a grace
//! period, SIGKILL to what is left (orphans included; a writer blocked on a
//! full log buffer dies like any other), a moment for the host to persist
//! the apps' last output, then `sync` and the volumes unmounted, so every
//! write has reached the host before power-off.

use std::time::Duration;

use kvmpod_api::layout;
use kvmpod_api::protocol::EventKind;
use kvmpod_api::timeline::Stage;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::state::{Phase, Pod};
use crate::storage;
use crate::timeline::boottime_ns;

/// How long killed processes get to be reaped before unmounting anyway.
const REAP_WAIT: Duration = Duration::from_secs(3);
/// Time for the reply to a Shutdown request to leave before power-off.
const REPLY_FLUSH: Duration = Duration::from_millis(50);
/// The most the host gets to read and acknowledge the apps' remaining
/// output; it waits for the VM 15 s beyond the grace period.
const OUTPUT_FLUSH: Duration = Duration::from_secs(5);

/// Signals every app's process group (apps lead their own session).
fn signal_apps(pod: &Pod, sig: Signal) {
    for app in &pod.apps() {
        if let Some(pid) = app.running_pid() {
            let _ = kill(Pid::from_raw(-pid), sig);
        }
    }
}

/// Asks every app to stop with its own stop signal (SIGTERM unless its
/// manifest or image names another; validated by both sides).
fn ask_apps_to_stop(pod: &Pod) {
    for app in &pod.apps() {
        let wanted = app.manifest.stop_signal.as_deref();
        let sig = wanted
            .and_then(|s| kvmpod_api::signal::parse(s).ok())
            .and_then(|n| Signal::try_from(n).ok());
        if sig.is_none() && wanted.is_some() {
            log::warn!(
                "app {}: stop signal {wanted:?} cannot be sent; sending SIGTERM",
                app.manifest.name
            );
        }
        let sig = sig.unwrap_or(Signal::SIGTERM);
        if let Some(pid) = app.running_pid() {
            let _ = kill(Pid::from_raw(-pid), sig);
        }
    }
}

/// Waits (bounded) until the host has every app's output to its end, for
/// the apps whose log stream it reads: their pipes are drained to end of
/// file as it acknowledges, then the stream's End goes out.
async fn flush_output(pod: &Pod) {
    let all = async {
        for app in &pod.apps() {
            app.logs.settled().await;
        }
    };
    if tokio::time::timeout(OUTPUT_FLUSH, all).await.is_err() {
        log::warn!("the host did not acknowledge all output within {OUTPUT_FLUSH:?}");
    }
}

/// Runs the stop sequence. The caller powers off afterwards.
pub async fn stop(pod: &Pod, grace: Duration) {
    pod.set_phase(Phase::Stopping);
    pod.timeline.mark(Stage::Stopping);
    pod.events.push(
        EventKind::EVENT_KIND_POD_STOPPING,
        "",
        0,
        0,
        format!("grace period {grace:?}"),
    );
    ask_apps_to_stop(pod);
    if tokio::time::timeout(grace, pod.wait_all()).await.is_err() {
        log::warn!("apps still running after {grace:?}; killing them");
        signal_apps(pod, Signal::SIGKILL);
    }
    // Everything but PID 1: daemons the apps left behind, exec'd commands.
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    let _ = tokio::time::timeout(REAP_WAIT, pod.wait_all()).await;
    flush_output(pod).await;

    nix::unistd::sync();
    for e in storage::unmount_under(&[
        layout::STAGE2_DIR,
        layout::VOLUMES_DIR,
        layout::POOL_VOLUMES_DIR,
    ]) {
        log::warn!("{e}");
    }
    nix::unistd::sync();
    pod.timeline.mark_at(Stage::Stopped, boottime_ns());
    tokio::time::sleep(REPLY_FLUSH).await;
}
