//! host-ctl's library: everything the `host-ctl` command line is made of,
//! also used by the benchmarks (`kvmpod-bench`).

pub mod accel;
pub mod agent_client;
pub mod bootkernel;
pub mod child;
pub mod cids;
pub mod commands;
pub mod console;
#[cfg(test)]
mod golden;
pub mod hostlog;
pub mod launch;
pub mod lkvm;
pub mod monitor;
pub mod output;
pub mod poddir;
pub mod pods;
pub mod qemu;
pub mod record;
pub mod run;
pub mod shares;
pub mod signals;
pub mod table;
pub mod terminal;
pub mod tools;
pub mod tsc;
pub mod vmspec;
pub mod vsock;
