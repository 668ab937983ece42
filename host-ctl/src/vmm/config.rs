//! What a pod's VM is made of, independent of the hypervisor: each backend
//! turns a [`VmConfig`] into its own command line.

use std::path::PathBuf;

use kvmpod_api::manifest::{PodManifest, VolumeKind};
use kvmpod_api::tag::nine_p_tag;

use super::accel::Accel;

/// A host directory exported to the guest over virtio-9p.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    pub tag: String,
    pub source: PathBuf,
    /// Exported read-only: no app mounts it writable.
    pub read_only: bool,
}

/// How the guest's vsock device is provided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VsockDevice {
    /// vhost-user backend (vhost-device-vsock) listening on `socket`; the
    /// backend holds the guest's CID.
    VhostUser { socket: PathBuf },
    /// The host kernel's vhost-vsock, with the guest's CID.
    Kernel { cid: u32 },
}

/// The VM's network interface (none: loopback only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetDevice {
    /// A user-mode network process (passt) that the hypervisor connects
    /// to over a Unix stream socket.
    Stream { socket: PathBuf, mac: String },
    /// The hypervisor's own user-mode stack (lkvm's): the guest at
    /// `guest_ip`, its gateway at `host_ip`.
    Builtin {
        mac: String,
        guest_ip: std::net::Ipv4Addr,
        host_ip: std::net::Ipv4Addr,
    },
    /// A tap device on the host (in the network namespace the hypervisor
    /// runs in).
    Tap { device: String, mac: String },
}

/// The virtual machine's board.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Machine {
    /// No firmware and no PCI: virtio-mmio devices, found through ACPI. A
    /// guest reaches its agent about a second sooner under TCG.
    Microvm,
    /// PCI (with bridges for many volumes): for pods with more host
    /// volumes than microvm has virtio-mmio transports, and for lkvm,
    /// whose devices are all on PCI.
    Q35,
}

impl Machine {
    /// The guest driver of the machine's virtio transport.
    pub fn transport_module(self) -> &'static str {
        match self {
            Machine::Microvm => "virtio_mmio",
            Machine::Q35 => "virtio_pci",
        }
    }
}

/// A VM to boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    pub name: String,
    pub machine: Machine,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: String,
    pub memory_mib: u32,
    pub cpus: u32,
    pub accel: Accel,
    /// Where the serial console is written.
    pub console_log: PathBuf,
    pub shares: Vec<Share>,
    pub vsock: VsockDevice,
    pub net: Option<NetDevice>,
}

/// The 9p shares of a pod's host volumes, read-only where no app writes.
pub fn host_shares(pod: &PodManifest) -> Vec<Share> {
    pod.volumes
        .iter()
        .filter(|v| v.kind == VolumeKind::Host)
        .filter_map(|v| {
            Some(Share {
                tag: nine_p_tag(&v.name),
                source: v.source.clone()?,
                read_only: pod.exported_read_only(v),
            })
        })
        .collect()
}

/// The guest kernel's command line. `quiet` keeps the emulated serial
/// console (slow under TCG) for errors and the agent's stage lines;
/// `panic=-1` turns a kernel panic into a reboot, which the hypervisor
/// turns into its exit, so a broken guest never hangs. `cryptomgr.notests`
/// skips the crypto self-tests (about 0.4 s of a TCG boot, measured with
/// `initcall_debug`), and the i8042 options the probing of a keyboard
/// controller nobody uses. `tsc_khz`, when given, becomes `tsc_early_khz`
/// (see `qemu::tsc`); `extra` are the backend's own parameters.
pub fn kernel_cmdline(verbose: bool, tsc_khz: Option<u64>, extra: &[&str]) -> String {
    let mut parts: Vec<String> = [
        "console=ttyS0",
        "panic=-1",
        "cryptomgr.notests",
        "i8042.noaux",
        "i8042.nomux",
        "i8042.nopnp",
        "i8042.dumbkbd",
    ]
    .map(String::from)
    .into();
    parts.extend(extra.iter().map(|p| p.to_string()));
    if let Some(khz) = tsc_khz {
        parts.push(format!("tsc_early_khz={khz}"));
    }
    if !verbose {
        parts.push("quiet".into());
    }
    parts.join(" ")
}
