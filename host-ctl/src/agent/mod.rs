//! Talking to a pod's agent: the vsock connection (AF_VSOCK or hybrid),
//! the ttrpc client with its deadlines, exec and attach sessions on the io
//! stream, and reading the guest console for how far a boot got. It knows
//! the protocol (kvmpod-api), not pods or hypervisors.

pub mod client;
pub mod console;
pub mod forward;
pub mod iostream;
pub mod vsock;

pub use client::{connect, connect_once, connect_with_status, deadline, no_deadline, processes};
pub use kvmpod_api::protocol::agent_ttrpc::AgentClient;
pub use vsock::Endpoint;

/// Why the agent could not be reached or did not answer.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The VM process ended before the agent answered (how it ended).
    #[error("the VM exited ({0})")]
    VmExited(String),
    /// The deadline passed; the last error seen.
    #[error("the agent did not answer in time (last error: {0})")]
    Timeout(String),
    /// A single connection attempt failed.
    #[error("cannot reach the pod's agent ({0})")]
    Unreachable(String),
    /// A request failed; `what` says which.
    #[error("{what}: {error}")]
    Rpc { what: String, error: ttrpc::Error },
    /// The agent refused an io stream request; its reason.
    #[error("{0}")]
    Refused(String),
    /// An io stream connection failed.
    #[error("the connection to the agent ended: {0}")]
    Stream(std::io::Error),
    /// The agent sent what the io stream protocol does not allow.
    #[error(transparent)]
    Protocol(#[from] kvmpod_api::iostream::IoStreamError),
}

impl AgentError {
    /// Wraps a failed request, naming it ("asking for the status").
    pub fn rpc(what: impl Into<String>) -> impl FnOnce(ttrpc::Error) -> AgentError {
        let what = what.into();
        move |error| AgentError::Rpc { what, error }
    }
}
