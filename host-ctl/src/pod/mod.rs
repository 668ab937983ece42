//! Pods on the host: each pod's directory (every file name in one place),
//! its record, the store of pods (find, reconcile, release, remove), guest
//! CID leases, the launch description of its VM, and the monitor that owns
//! a running pod. Built on `vmm` (processes), `agent` (the connection) and
//! `logs` (output); the command layer and `launch` sit above it.

pub mod apps_share;
pub mod cids;
pub mod dir;
pub mod lockfile;
pub mod monitor;
pub mod names;
pub mod record;
pub mod store;
mod vm_launch;

use std::path::PathBuf;

pub use dir::{cache_dir, PodDir, DEFAULT_STATE_DIR};
pub use monitor::{Monitor, Outcome};
pub use record::{PodRecord, State};
pub use store::StoredPod;
pub use vm_launch::VmLaunch;

use crate::agent::AgentError;
use crate::logs::LogError;
use crate::vmm::VmmError;

/// What can go wrong with a pod's files, records and life on the host.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file of the pod's that host-ctl wrote and cannot read back.
    #[error("{} is not what host-ctl wrote", path.display())]
    BadFile {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// No such pod, or an ambiguous ID.
    #[error("{0}")]
    NotFound(String),
    /// The pod is not in a state that allows the request.
    #[error("{0}")]
    NotRunning(String),
    /// A request that cannot be carried out as asked.
    #[error("{0}")]
    Invalid(String),
    /// The VM started but its agent never answered: how far it got.
    #[error("{0}")]
    Boot(String),
    #[error(transparent)]
    Vmm(#[from] VmmError),
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error(transparent)]
    Logs(#[from] LogError),
}
