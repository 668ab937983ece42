//! kvmpod-agent: PID 1 of a kvmpod guest.
//!
//! It mounts the guest's file systems, loads the kernel modules the host
//! chose, serves the agent API over vsock, mounts the pod's volumes, starts
//! and supervises the apps, and powers the VM off when the host asks (or
//! when the apps are done and nobody asked). PID 1 must never exit or
//! panic: every path ends in a clean power-off.
//!
//! The code is in folders by subsystem, each importing only the ones below
//! it:
//!
//! - [`boot`]: the PID 1 sequence, which puts everything else together;
//! - [`rpc`]: what the host asks over vsock (ttrpc, the apps' output
//!   stream, port forwarding);
//! - [`pod`]: the pod's live state, its apps' supervision and shutdown;
//! - [`process`]: turning an app into a confined process, and reaping it;
//! - [`network`]: the guest's interfaces, configured over rtnetlink;
//! - [`storage`]: volumes, app roots and safe path resolution in them;
//! - and at the bottom, what every subsystem uses: the [`console`], the
//!   boot [`timeline`] and the shared system call [`error`].
//!
//! The modules are a library so that the fuzz targets and tests can drive
//! the request handling without a VM; `main.rs` is the PID 1 entry point.

pub mod boot;
pub mod console;
pub mod error;
pub mod network;
pub mod pod;
pub mod process;
pub mod rpc;
pub mod storage;
pub mod timeline;
