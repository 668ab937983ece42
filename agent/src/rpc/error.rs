//! The RPC subsystem's one error type: what the host asked for that the
//! agent refuses, and the one mapping of it to a ttrpc status.

use std::io;

use kvmpod_api::addapp::AddAppError;
use kvmpod_api::iostream::IoStreamError;
use kvmpod_api::logstream::StreamError;
use ttrpc::Code;

use crate::pod::{Pod, PodError};
use crate::process::SpawnError;

#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// No app of that name; `known` lists the pod's apps when the reply
    /// should name them.
    #[error("no app named {app:?} in this pod{}", known_apps(known))]
    UnknownApp { app: String, known: Option<String> },
    #[error("{0} is not a signal number (1 to 64)")]
    BadSignal(i32),
    #[error("an offset applies to one app's output; name the app")]
    OffsetNeedsApp,
    #[error("exec needs a command")]
    NoCommand,
    #[error("the command and its environment are {0} bytes; at most {1} are accepted")]
    CommandTooLarge(usize, usize),
    #[error("invalid environment variable name")]
    BadVariableName,
    #[error("the app to add is not one: {0}")]
    BadAddApp(String),
    #[error("the working directory must be an absolute path, not {0:?}")]
    BadWorkingDirectory(String),
    #[error("app {0:?} is not running")]
    NotRunning(String),
    #[error("no app is running")]
    NoneRunning,
    #[error("the pod is stopping")]
    Stopping,
    /// A port forwarding request line that is not one.
    #[error("unknown request {0:?} (expected \"TCP <port>\", \"ECHO\" or \"SOURCE <bytes>\")")]
    UnknownRequest(String),
    #[error("invalid port {0:?}")]
    BadPort(String),
    #[error("invalid byte count {0:?} (at most {1})")]
    BadByteCount(String, u64),
    #[error("request line too long")]
    LineTooLong,
    #[error("connection closed before the request")]
    ClosedEarly,
    /// A log stream request or acknowledgement that is not one.
    #[error(transparent)]
    LogStream(#[from] StreamError),
    /// An io stream request or frame that is not one.
    #[error(transparent)]
    IoStream(#[from] IoStreamError),
    #[error("offset {from} is beyond the end of the app's output ({end})")]
    OffsetBeyondEnd { from: u64, end: u64 },
    #[error("acknowledgement of offset {ack} beyond what this connection sent ({sent})")]
    AckBeyondSent { ack: u64, sent: u64 },
    #[error(transparent)]
    Pod(#[from] PodError),
    /// The guest's processes could not be read (`Top`).
    #[error(transparent)]
    Process(#[from] SpawnError),
    /// An app's root could not be opened (`cp`).
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error(transparent)]
    Io(#[from] io::Error),
}

fn known_apps(known: &Option<String>) -> String {
    match known {
        Some(apps) => format!(" (apps: {apps})"),
        None => String::new(),
    }
}

impl RpcError {
    /// No app `app` in `pod`, naming the apps it has.
    pub(super) fn unknown_app(pod: &Pod, app: &str) -> RpcError {
        let known: Vec<String> = pod.apps().iter().map(|a| a.name().to_string()).collect();
        RpcError::UnknownApp {
            app: app.to_string(),
            known: Some(known.join(", ")),
        }
    }

    /// The status code the host sees.
    fn code(&self) -> Code {
        match self {
            RpcError::UnknownApp { .. } => Code::NOT_FOUND,
            RpcError::NotRunning(_) | RpcError::NoneRunning | RpcError::Stopping => {
                Code::FAILED_PRECONDITION
            }
            RpcError::ClosedEarly | RpcError::Io(_) => Code::UNAVAILABLE,
            RpcError::Process(_) => Code::INTERNAL,
            RpcError::Pod(p) => match p {
                PodError::NoApp(_) => Code::NOT_FOUND,
                PodError::AddApp(AddAppError::AppExists(_) | AddAppError::VolumeExists(_)) => {
                    Code::ALREADY_EXISTS
                }
                PodError::NotSandbox
                | PodError::Stopping
                | PodError::StillRunning(_)
                | PodError::OutputPending(_)
                | PodError::BootApp(_) => Code::FAILED_PRECONDITION,
                PodError::Root(_) => Code::INTERNAL,
                _ => Code::INVALID_ARGUMENT,
            },
            _ => Code::INVALID_ARGUMENT,
        }
    }
}

/// The one way an agent error reaches the host over ttrpc: its code, and
/// its message as it is.
impl From<RpcError> for ttrpc::Error {
    fn from(e: RpcError) -> Self {
        ttrpc::Error::RpcStatus(ttrpc::get_status(e.code(), e.to_string()))
    }
}
