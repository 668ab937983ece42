//! kvmpod-agent: PID 1 of a kvmpod guest.
//!
//! It mounts the guest's file systems, loads the kernel modules the host
//! chose, serves the agent API over vsock, mounts the pod's volumes, starts
//! and supervises the apps, and powers the VM off when the host asks (or
//! when the apps are done and nobody asked). PID 1 must never exit or
//! panic: every path ends in a clean power-off.
//!
//! The modules are a library so that the fuzz targets and tests can drive
//! the request handling without a VM; `main.rs` is the PID 1 entry point.

pub mod approot;
pub mod boot;
pub mod cgroups;
pub mod console;
pub mod early;
pub mod error;
pub mod events;
pub mod exec;
pub mod forward;
pub mod isolation;
pub mod kmod;
pub mod logbuf;
pub mod mounts;
pub mod net;
pub mod pod;
pub mod power;
pub mod pty;
pub mod reaper;
pub mod resolve;
pub mod rootswitch;
pub mod service;
pub mod shutdown;
pub mod spawn;
pub mod supervisor;
pub mod timeline;
pub mod users;
pub mod volumes;
