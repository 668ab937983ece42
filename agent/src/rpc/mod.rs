//! RPC: what the host asks of the agent over vsock.
//!
//! It owns the ttrpc service of `api/proto/agent.proto` (status, logs,
//! attach, exec, signals, stats, events, shutdown) and the port forwarding
//! listener, and it is the one place where an agent error becomes what the
//! host sees: an `RpcError` maps to one ttrpc status. It reads and drives
//! the pod, and starts exec'd commands through the process subsystem; it
//! is started by boot and never imports it.

mod error;
mod exec;
mod forward;
mod service;

use error::RpcError;

pub use forward::start as start_forwarding;
pub use service::serve;
