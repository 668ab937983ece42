//! RPC: what the host asks of the agent over vsock.
//!
//! It owns the ttrpc service of `api/proto/agent.proto` (status, logs,
//! attach, exec, signals, stats, events, shutdown), the log stream server
//! (`kvmpod_api::logstream`: apps' output, and the host's acks of what it
//! persisted) and the port forwarding listener, and it is the one place where an agent error becomes what the
//! host sees: an `RpcError` maps to one ttrpc status. It reads and drives
//! the pod, and starts exec'd commands through the process subsystem; it
//! is started by boot and never imports it.

mod error;
mod exec;
mod forward;
mod logstream;
mod service;

use error::RpcError;

pub use forward::start as start_forwarding;
pub use logstream::{serve as serve_log_stream, start as start_log_stream};
pub use service::serve;
