//! QEMU: the default backend. It boots the guest kernel through its PVH
//! entry (a cached ELF), picks `microvm` for small pods and `q35` with PCI
//! bridges for many host volumes, shares host directories with
//! `-fsdev ... readonly=on` where no app writes them, and takes its vsock
//! device from the host kernel or from vhost-device-vsock (hybrid).

mod args;
mod pvh;
pub mod tsc;

use std::path::{Path, PathBuf};

use kvmpod_api::config::VmEnd;

use super::{
    find_program, Accel, Alias, Cache, Hypervisor, HypervisorKind, Jail, Machine, MachineChoice,
    NetDevice, Share, UserNet, VmConfig, VmOutput, VmmError,
};

/// The QEMU binary, unless `KVMPOD_QEMU` names another.
pub const QEMU: &str = "qemu-system-x86_64";

/// microvm has 24 virtio-mmio transports; the vsock device takes one.
pub const MICROVM_MAX_SHARES: usize = 23;

pub struct Qemu;

impl Hypervisor for Qemu {
    fn kind(&self) -> HypervisorKind {
        HypervisorKind::Qemu
    }

    fn display_name(&self) -> &'static str {
        "QEMU"
    }

    fn program_name(&self) -> &'static str {
        QEMU
    }

    fn program(&self) -> Result<PathBuf, VmmError> {
        find_program("KVMPOD_QEMU", QEMU, "QEMU", &[])
    }

    fn boot_image(&self, kernel: &Path, cache: &Path, mode: Cache) -> PathBuf {
        pvh::boot_kernel(kernel, cache, mode).path
    }

    fn supports_hybrid_vsock(&self) -> bool {
        true
    }

    /// A TCG guest on microvm must be told its TSC rate (see [`tsc`]);
    /// where the host's cannot be measured, a machine with timers it can
    /// calibrate against does instead.
    fn machine(&self, shares: usize, accel: Accel, known_tsc_khz: Option<u64>) -> MachineChoice {
        let machine = if shares <= MICROVM_MAX_SHARES {
            Machine::Microvm
        } else {
            Machine::Q35
        };
        if machine == Machine::Microvm && accel == Accel::Tcg {
            if let Some(khz) = known_tsc_khz.or_else(tsc::host_tsc_khz) {
                return MachineChoice {
                    machine,
                    tsc_khz: Some(khz),
                    notes: Vec::new(),
                };
            }
            return MachineChoice {
                machine: Machine::Q35,
                tsc_khz: None,
                notes: vec![
                    "q35 rather than microvm: this host's TSC rate could not be measured as constant"
                        .into(),
                ],
            };
        }
        MachineChoice {
            machine,
            tsc_khz: None,
            notes: Vec::new(),
        }
    }

    fn kernel_params(&self) -> &'static [&'static str] {
        &[]
    }

    /// QEMU takes every source as it is, with `readonly=on` where needed.
    fn export_shares(&self, shares: &[Share], _pod_dir: &Path) -> (Vec<Share>, Vec<Alias>) {
        (shares.to_vec(), Vec::new())
    }

    fn argv(&self, config: &VmConfig) -> Result<Vec<String>, VmmError> {
        if matches!(config.net, Some(NetDevice::Builtin { .. })) {
            return Err(VmmError::Unsupported(
                "QEMU's user-mode networking is passt's, not a built-in stack".into(),
            ));
        }
        Ok(args::argv(config))
    }

    /// passt rather than QEMU's slirp: it can keep the guest from the
    /// host's loopback (`--no-map-gw`), and publishes UDP as well as TCP.
    fn user_net(&self) -> UserNet {
        UserNet::Passt
    }

    fn output(&self) -> VmOutput {
        VmOutput::Diagnostics
    }

    /// microvm and q35 have ACPI. (A reboot would end QEMU too, through
    /// `-no-reboot`, but hung microvm with a PVH kernel.)
    fn vm_end(&self) -> VmEnd {
        VmEnd::PowerOff
    }

    fn supports_tcg(&self) -> bool {
        true
    }

    /// QEMU's `local` 9p backend walks every path component with
    /// `O_NOFOLLOW` (since the fix of CVE-2016-9602): a symlink in a share
    /// cannot take the guest outside it.
    fn jail(&self, _config: &VmConfig, _program: &Path, _root: &Path) -> Option<Jail> {
        None
    }
}
