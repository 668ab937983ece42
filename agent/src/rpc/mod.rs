//! RPC: what the host asks of the agent over vsock.
//!
//! It owns the ttrpc service of `api/proto/agent.proto` (status, wait,
//! logs, signals, stats, processes, events, shutdown), the log stream
//! server (`kvmpod_api::logstream`: apps' output, and the host's acks of
//! what it persisted), the io stream server (`kvmpod_api::iostream`: exec,
//! attach and cp sessions) and the port forwarding listener, and it is the one
//! place where an agent error becomes what the host sees: an `RpcError`
//! maps to one ttrpc status, or to one `ERR` line on a stream. It reads and
//! drives the pod, and starts exec'd commands through the process
//! subsystem; it is started by boot and never imports it.

mod attach;
mod copy;
mod error;
mod exec;
mod forward;
mod input;
mod iostream;
mod logstream;
mod service;
mod top;

use error::RpcError;

pub use forward::start as start_forwarding;
pub use iostream::start as start_io_stream;
pub use logstream::{serve as serve_log_stream, start as start_log_stream};
pub use service::serve;
