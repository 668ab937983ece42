//! host-ctl's library: everything the `host-ctl` command line is made of,
//! also used by the benchmarks (`kvmpod-bench`).
//!
//! The folders are layers; each uses only those below it:
//!
//! ```text
//! commands   one thin module per subcommand (anyhow lives here only)
//! image      the OCI image store: imports, layer snapshots, leases
//! pool       the warm pool: VMs booted before their pods, claimed by run
//! launch     manifest + host -> a prepared pod (plan, initramfs, aliases)
//! pod        pod directories, records, the store, CIDs, the monitor
//! stage1     the stage1 guest image (agent + kernel modules), built once
//! logs       apps' output: log files, collectors, the terminal printer
//! agent      the vsock connection and ttrpc client, the guest console
//! vmm        hypervisor backends (QEMU, lkvm), VM processes, accel, vsock
//! ui         tables, signal names, terminal modes, message text
//! ```
//!
//! `docs/architecture.md` follows `host-ctl run` through them.

pub mod agent;
pub mod commands;
pub mod image;
pub mod launch;
pub mod logs;
pub mod pod;
pub mod pool;
pub mod stage1;
pub mod ui;
pub mod vmm;
