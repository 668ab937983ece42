//! The pod subsystem's one error type: why an app could not be started
//! (and the exit status it is recorded with), or why the host's
//! acknowledgement of an app's output was refused.

use crate::error::SysError;
use crate::process::{SpawnError, EXIT_SETUP_FAILED};
use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum PodError {
    /// Its root could not be assembled.
    #[error(transparent)]
    Root(#[from] StorageError),
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    /// It asks for limits, and its cgroup could not be made.
    #[error("applying the app's resource limits: {0}")]
    Limits(SysError),
    /// Its cgroup could not be opened for the process to join.
    #[error(transparent)]
    Cgroup(SysError),
    /// Apps can only be added to or removed from a sandbox pod.
    #[error("the pod is not a sandbox (\"sandbox\": true): apps cannot be added or removed")]
    NotSandbox,
    #[error(transparent)]
    AddApp(#[from] kvmpod_api::addapp::AddAppError),
    #[error("the pod is stopping")]
    Stopping,
    #[error("app {0:?} is still running; stop it first")]
    StillRunning(String),
    #[error("app {0:?}'s output is not all persisted by the host yet")]
    OutputPending(String),
    #[error("the pod has no app named {0:?}")]
    NoApp(String),
    /// An app the pod booted with stays.
    #[error("app {0:?} is one the pod booted with; only added apps can be removed")]
    BootApp(String),
    /// The host acknowledged output the app never wrote.
    #[error("acknowledgement of offset {ack} beyond the end of the app's output ({end})")]
    AckBeyondEnd { ack: u64, end: u64 },
}

impl PodError {
    /// The exit status a start failure is recorded with: a shell's for a
    /// program that cannot run, 125 for the rest.
    pub fn exit_code(&self) -> i32 {
        match self {
            PodError::Spawn(e) => e.exit_code(),
            _ => EXIT_SETUP_FAILED,
        }
    }
}
