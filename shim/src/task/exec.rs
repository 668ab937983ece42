//! Commands exec'd in a running task (`ctr task exec --exec-id`): each is
//! an exec session of the shim's own with the pod's agent, in the app's
//! root and cgroup, with the exec's environment; its output goes to the
//! exec's FIFOs, and containerd's signals and terminal sizes to the
//! session.

use std::sync::Arc;

use containerd_shim::api::ExecProcessRequest;
use host_ctl::agent::Endpoint;
use tokio::sync::watch;

use super::process::{report_end, Ended, Exited, Proc};
use crate::error::ShimError;
use crate::events::Events;
use crate::guest;
use crate::spec::Process;
use crate::stdio::Fifos;

pub struct Exec {
    pub proc: Proc,
    process: Process,
    /// The running session: signals and sizes go there.
    pub input: Option<guest::Sender>,
}

/// The OCI process an Exec request carries (JSON in its `spec`).
pub fn parse(req: &ExecProcessRequest) -> Result<Exec, ShimError> {
    let value = req.spec.as_ref().map(|a| a.value.as_slice()).unwrap_or(&[]);
    let mut process: Process = serde_json::from_slice(value)
        .map_err(|e| ShimError::Spec(format!("the exec's process: {e}")))?;
    if process.args.is_empty() {
        return Err(ShimError::Spec("the exec's process has no args".into()));
    }
    process.terminal = req.terminal;
    Ok(Exec {
        proc: Proc::new(Fifos {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        }),
        process,
        input: None,
    })
}

/// What starting an exec needs, taken under the task lock.
pub struct ExecPlan {
    /// The app it runs in.
    pub app: String,
    pub process: Process,
    pub fifos: Fifos,
    pub ended: Arc<watch::Sender<Option<Ended>>>,
}

impl Exec {
    /// Marks it started; what to start it with.
    pub fn plan(&mut self, app: &str) -> ExecPlan {
        self.proc.started = true;
        ExecPlan {
            app: app.to_string(),
            process: self.process.clone(),
            fifos: self.proc.fifos.clone(),
            ended: self.proc.end_sender(),
        }
    }
}

/// Starts the exec in the pod reached at `endpoint`: its session, and
/// what delivers its output and reports its end (to be spawned once
/// TaskExecStarted is out). The command's pid is in the guest: containerd
/// gets 0.
pub async fn start(
    endpoint: &Endpoint,
    events: &Events,
    (container, exec_id): (&str, &str),
    plan: ExecPlan,
) -> Result<
    (
        guest::Sender,
        impl std::future::Future<Output = ()> + Send + 'static,
    ),
    ShimError,
> {
    let fifos = plan.fifos;
    let interactive = !fifos.stdin.is_empty();
    let outputs = guest::outputs(&fifos.stdout, &fifos.stderr)?;
    let (tx, rx) = guest::exec(endpoint, &plan.app, &plan.process, interactive).await?;
    if interactive {
        guest::feed(tx.clone(), &fifos.stdin, !fifos.terminal)?;
    }
    let events = events.clone();
    let (container, exec_id) = (container.to_string(), exec_id.to_string());
    let ended = plan.ended;
    let watch = async move {
        let status = guest::deliver(rx, outputs).await;
        let exited = Exited {
            container: &container,
            id: &exec_id,
            pid: 0,
            status,
        };
        report_end(&events, &ended, exited).await;
    };
    Ok((tx, watch))
}
