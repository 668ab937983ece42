//! Boot: the agent's life as PID 1, from the kernel's hand-over to
//! power-off.
//!
//! It owns the order of things (settings and kernel modules from the
//! initramfs, the root moved off it, the guest's own file systems, the
//! vsock server, the volumes, the apps, then waiting for shutdown) and the
//! steps only PID 1 takes: base mounts, module loading, the root switch,
//! the loopback interface and power-off. It is the one subsystem that
//! imports all the others; none imports it. Until the vsock server is up a
//! failure can only be told on the console, and every path ends in a
//! clean power-off: PID 1 must never exit or panic.

mod config;
mod early;
mod error;
mod kmod;
mod pool;
mod power;
mod rootswitch;
mod sequence;

use error::BootError;

pub use power::{power_off, set_vm_end};
pub use sequence::run;
