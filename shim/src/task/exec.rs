//! Commands exec'd in a running task (`ctr task exec --exec-id`): each is
//! a `host-ctl exec` of the pod's app, with the exec's FIFOs as its stdio;
//! containerd's signals go to that process (host-ctl passes SIGINT and
//! SIGTERM on to the command; any other ends the session, and the agent
//! then kills the command).

use std::sync::Arc;

use containerd_shim::api::ExecProcessRequest;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::sync::watch;

use super::process::{report_end, Ended, Exited, Proc};
use crate::error::ShimError;
use crate::events::Events;
use crate::hostctl::HostCtl;
use crate::spec::{Process, APP};
use crate::stdio::{self, Fifos};

pub struct Exec {
    pub proc: Proc,
    process: Process,
}

/// The OCI process an Exec request carries (JSON in its `spec`).
pub fn parse(req: &ExecProcessRequest) -> Result<Exec, ShimError> {
    if req.terminal {
        return Err(ShimError::Spec(
            "an exec with a terminal (ctr task exec -t) is not supported yet".into(),
        ));
    }
    let value = req.spec.as_ref().map(|a| a.value.as_slice()).unwrap_or(&[]);
    let process: Process = serde_json::from_slice(value)
        .map_err(|e| ShimError::Spec(format!("the exec's process: {e}")))?;
    if process.args.is_empty() {
        return Err(ShimError::Spec("the exec's process has no args".into()));
    }
    Ok(Exec {
        proc: Proc::new(Fifos {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: false,
        }),
        process,
    })
}

/// Starts the exec in `pod`; its pid (host-ctl's, on this host).
pub fn start(
    host_ctl: &HostCtl,
    events: &Events,
    (container, exec_id): (&str, &str),
    pod: &str,
    e: &mut Exec,
) -> Result<u32, ShimError> {
    let fifos = &e.proc.fifos;
    let mut child = host_ctl.exec(
        pod,
        APP,
        &e.process,
        stdio::input(&fifos.stdin)?,
        stdio::output(&fifos.stdout)?,
        stdio::output(&fifos.stderr)?,
    )?;
    let pid = child.id().unwrap_or(0);
    e.proc.pid = pid;
    e.proc.started = true;
    let ended: Arc<watch::Sender<Option<Ended>>> = e.proc.end_sender();
    let events = events.clone();
    let (container, exec_id) = (container.to_string(), exec_id.to_string());
    tokio::spawn(async move {
        let status = match child.wait().await {
            Ok(s) => s
                .code()
                .or_else(|| {
                    use std::os::unix::process::ExitStatusExt;
                    s.signal().map(|n| 128 + n)
                })
                .and_then(|c| u32::try_from(c).ok())
                .unwrap_or(255),
            Err(_) => 255,
        };
        let exited = Exited {
            container: &container,
            id: &exec_id,
            pid,
            status,
        };
        report_end(&events, &ended, exited).await;
    });
    Ok(pid)
}

/// Sends `signal` to the exec's host-ctl process.
pub fn signal(e: &Exec, signal: u32) -> Result<(), ShimError> {
    let signal = i32::try_from(signal)
        .ok()
        .and_then(|n| Signal::try_from(n).ok())
        .ok_or_else(|| ShimError::Spec(format!("no signal {signal}")))?;
    let pid = i32::try_from(e.proc.pid).map_err(|_| ShimError::Precondition("no pid".into()))?;
    kill(Pid::from_raw(pid), signal).map_err(|errno| ShimError::Io {
        what: format!("signalling exec process {pid}"),
        source: errno.into(),
    })
}
