//! lkvm's (kvmtool's) command line for a pod.
//!
//! Checked against kvmtool's `builtin-run.c` (the option table), `virtio/
//! 9p.c` (`--9p dir,tag`) and `virtio/net.c` (`mode=none`):
//!
//! * `--nodefaults` is essential: without it, and without a disk or
//!   initrd, kvmtool exports the host's `/` as 9p tag `hostfs` and appends
//!   its own kernel parameters; with it, `-p` is the whole command line.
//! * `--9p` splits its argument at the first comma, so a source path with a
//!   comma cannot be passed: such a source (and every read-only one, as
//!   kvmtool's 9p has no read-only option) is shared through an alias
//!   path, a bind mount host-ctl makes under the pod directory.
//! * kvmtool's 9p server resolves symlinks in the middle of a path on the
//!   host: a share can reach beyond its directory through one. Share only
//!   trees whose symlinks you trust.
//! * `--vsock` takes the guest CID; there is no Unix-socket (hybrid) mode.

pub mod aliases;

use std::path::{Path, PathBuf};

use super::{
    find_program, Accel, Alias, Cache, GuestEnd, Hypervisor, HypervisorKind, Machine,
    MachineChoice, Share, VmConfig, VmOutput, VmmError, VsockDevice,
};

/// 9p devices lkvm's one PCI bus leaves room for.
const MAX_9P_DEVICES: usize = 24;

/// The lkvm binary, unless `KVMPOD_LKVM` names another.
pub const LKVM: &str = "lkvm";

pub struct Lkvm;

impl Hypervisor for Lkvm {
    fn kind(&self) -> HypervisorKind {
        HypervisorKind::Lkvm
    }

    fn display_name(&self) -> &'static str {
        "lkvm"
    }

    fn program_name(&self) -> &'static str {
        LKVM
    }

    fn program(&self) -> Result<PathBuf, VmmError> {
        find_program("KVMPOD_LKVM", LKVM, "kvmtool", &[]).map_err(|_| {
            VmmError::MissingProgram(
                "lkvm (kvmtool) was not found on PATH; it has no Debian package: build it from \
                 https://git.kernel.org/pub/scm/linux/kernel/git/will/kvmtool.git, or use --hypervisor qemu"
                    .into(),
            )
        })
    }

    /// kvmtool boots bzImages, not ELF kernels.
    fn boot_image(&self, kernel: &Path, _cache: &Path, _mode: Cache) -> PathBuf {
        kernel.to_path_buf()
    }

    /// kvmtool has no Unix-socket vsock.
    fn supports_hybrid_vsock(&self) -> bool {
        false
    }

    /// kvmtool's virtio devices are on PCI.
    fn machine(&self, _shares: usize, accel: Accel) -> MachineChoice {
        MachineChoice {
            machine: Machine::Q35,
            tsc_khz: None,
            notes: if accel == Accel::Kvm {
                Vec::new()
            } else {
                vec!["lkvm always uses KVM".into()]
            },
        }
    }

    fn kernel_params(&self) -> &'static [&'static str] {
        &[]
    }

    fn export_shares(&self, shares: &[Share], pod_dir: &Path) -> (Vec<Share>, Vec<Alias>) {
        aliases::for_lkvm(shares, pod_dir)
    }

    fn argv(&self, config: &VmConfig) -> Result<Vec<String>, VmmError> {
        argv(config).map_err(VmmError::Unsupported)
    }

    /// `--console serial` writes the guest's console to lkvm's stdout.
    fn output(&self) -> VmOutput {
        VmOutput::Console
    }

    fn guest_end(&self) -> GuestEnd {
        GuestEnd::PowerOff
    }

    fn supports_tcg(&self) -> bool {
        false
    }
}

/// The argv (without the program), or why the pod cannot run under lkvm.
fn argv(spec: &VmConfig) -> Result<Vec<String>, String> {
    let VsockDevice::Kernel { cid } = spec.vsock else {
        return Err("lkvm has no hybrid (Unix socket) vsock: it needs the host's vhost-vsock (/dev/vhost-vsock)".into());
    };
    if spec.shares.len() > MAX_9P_DEVICES {
        return Err(format!(
            "lkvm has a single PCI bus: at most {MAX_9P_DEVICES} host volumes (this pod has {})",
            spec.shares.len()
        ));
    }
    let mut a: Vec<String> = vec![
        "run".into(),
        "--nodefaults".into(),
        "--name".into(),
        format!("kvmpod-{}", spec.name),
        "-k".into(),
        spec.kernel.to_string_lossy().into_owned(),
        "-i".into(),
        spec.initrd.to_string_lossy().into_owned(),
        "-p".into(),
        spec.cmdline.clone(),
        "-m".into(),
        spec.memory_mib.to_string(),
        "-c".into(),
        spec.cpus.to_string(),
        "--console".into(),
        "serial".into(),
        "-n".into(),
        "mode=none".into(),
    ];
    for share in &spec.shares {
        let source = share.source.to_string_lossy();
        if source.contains(',') {
            return Err(format!(
                "lkvm's --9p cannot carry a path with a comma ({source}); it must be shared through an alias"
            ));
        }
        if share.read_only {
            return Err(format!(
                "lkvm's --9p cannot export {source} read-only; it must be shared through a read-only alias"
            ));
        }
        a.push("--9p".into());
        a.push(format!("{source},{}", share.tag));
    }
    a.push("--vsock".into());
    a.push(cid.to_string());
    Ok(a)
}
