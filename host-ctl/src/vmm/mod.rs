//! The hypervisors: how a pod's VM is described ([`VmConfig`]), which
//! backend boots it ([`Hypervisor`], one folder per backend), and the host
//! processes that run it ([`process`]).
//!
//! Everything that differs between QEMU and lkvm is a method of the
//! [`Hypervisor`] trait, so the rest of host-ctl never matches on the
//! backend, and a third backend is one more folder here. This layer knows
//! nothing of pods, records or the agent: it is given paths and returns
//! command lines and processes.

pub mod accel;
mod config;
mod error;
#[cfg(test)]
mod golden;
mod jail;
mod lkvm;
pub mod netns;
pub mod process;
mod qemu;
pub mod tapns;
mod tools;
pub mod vsock;

use std::path::{Path, PathBuf};

use kvmpod_api::config::VmEnd;
use serde::{Deserialize, Serialize};

pub use accel::Accel;
pub use config::{host_shares, kernel_cmdline, Machine, NetDevice, Share, VmConfig, VsockDevice};
pub use error::VmmError;
pub use jail::{Bind, BindKind, Jail};
pub use lkvm::aliases::{
    mount_all as mount_aliases, unmount_all as unmount_aliases, unmount_in, Alias,
};
pub use process::{Backend, Program, Supervised, VmLogs, VmProcesses};
pub use tools::{elf_interpreter, find_program, DEPS_HINT};

/// The hypervisors kvmpod drives, as the user names them and as pod
/// records store them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum HypervisorKind {
    Qemu,
    Lkvm,
}

impl HypervisorKind {
    pub fn name(self) -> &'static str {
        match self {
            HypervisorKind::Qemu => "qemu",
            HypervisorKind::Lkvm => "lkvm",
        }
    }
}

/// The backend for `kind`: the one place a hypervisor is chosen.
pub fn hypervisor(kind: HypervisorKind) -> &'static dyn Hypervisor {
    match kind {
        HypervisorKind::Qemu => &qemu::Qemu,
        HypervisorKind::Lkvm => &lkvm::Lkvm,
    }
}

/// The machine a backend picked for a pod, with what the guest needs to
/// know about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineChoice {
    pub machine: Machine,
    /// The host's TSC rate, for guests that must not calibrate it.
    pub tsc_khz: Option<u64>,
    /// What was chosen and why, for the user (said as `machine <note>`).
    pub notes: Vec<String>,
}

/// Where a backend's user-mode networking comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserNet {
    /// A passt process, connected over a Unix stream socket (QEMU).
    Passt,
    /// The hypervisor's own stack (lkvm).
    Builtin,
}

/// Where the VM process's own output goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmOutput {
    /// Its stdout is the guest's serial console (lkvm).
    Console,
    /// Its own diagnostics; the console goes to a file it writes (QEMU).
    Diagnostics,
}

/// Whether to write a backend's boot image cache (`host-ctl run`) or only
/// work out its path (`host-ctl args`, which creates nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cache {
    Write,
    ReadOnly,
}

/// One hypervisor backend (in the manner of Kata's runtime-rs
/// `Hypervisor` trait): everything host-ctl must know to boot a pod on it.
pub trait Hypervisor: Sync {
    fn kind(&self) -> HypervisorKind;

    /// The name users know it by ("QEMU", "lkvm").
    fn display_name(&self) -> &'static str;

    /// Its binary's name on `PATH`.
    fn program_name(&self) -> &'static str;

    /// Finds its binary, or says how to get it.
    fn program(&self) -> Result<PathBuf, VmmError>;

    /// The kernel image to boot, given the installed one (QEMU boots an
    /// extracted PVH ELF kept in `cache`; lkvm takes the bzImage).
    fn boot_image(&self, kernel: &Path, cache: &Path, mode: Cache) -> PathBuf;

    /// Whether it can give the guest a vsock device backed by a
    /// vhost-user process (hybrid vsock) rather than the host kernel.
    fn supports_hybrid_vsock(&self) -> bool;

    /// The machine for a pod with `shares` host volumes. `known_tsc_khz`
    /// is the host's TSC rate when it was measured already (a pod claiming
    /// a pool VM plans with the rate that VM was booted with); a backend
    /// that needs it and is given `None` measures it.
    fn machine(&self, shares: usize, accel: Accel, known_tsc_khz: Option<u64>) -> MachineChoice;

    /// Kernel parameters the backend's virtual hardware needs.
    fn kernel_params(&self) -> &'static [&'static str];

    /// The shares as the backend is given them, and the host-side aliases
    /// (bind mounts under `pod_dir`) that must exist first.
    fn export_shares(&self, shares: &[Share], pod_dir: &Path) -> (Vec<Share>, Vec<Alias>);

    /// The argv (without the program) that boots `config`.
    fn argv(&self, config: &VmConfig) -> Result<Vec<String>, VmmError>;

    /// Where the VM process's stdout and stderr go.
    fn output(&self) -> VmOutput;

    /// How the guest ends the VM so that the hypervisor process exits.
    fn vm_end(&self) -> VmEnd;

    /// How it gives a guest user-mode networking.
    fn user_net(&self) -> UserNet;

    /// Whether the backend can boot a guest without KVM.
    fn supports_tcg(&self) -> bool;

    /// The filesystem jail the hypervisor process must run in (see
    /// [`jail`]), whose tmpfs goes on `root`; None where the backend
    /// contains its shares itself.
    fn jail(&self, config: &VmConfig, program: &Path, root: &Path) -> Option<Jail>;
}
