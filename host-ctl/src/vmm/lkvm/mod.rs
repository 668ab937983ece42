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

use kvmpod_api::config::VmEnd;

use super::{
    elf_interpreter, find_program, Accel, Alias, Bind, BindKind, Cache, Hypervisor, HypervisorKind,
    Jail, Machine, MachineChoice, NetDevice, Share, UserNet, VmConfig, VmOutput, VmmError,
    VsockDevice,
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
    fn machine(&self, _shares: usize, accel: Accel, _known_tsc_khz: Option<u64>) -> MachineChoice {
        MachineChoice {
            machine: Machine::Q35,
            tsc_khz: None,
            notes: if accel == Accel::Kvm {
                Vec::new()
            } else {
                vec!["lkvm's: it runs on KVM whatever the accelerator (it has no emulator)".into()]
            },
        }
    }

    /// `--nodefaults` drops kvmtool's own x86 parameters, and without
    /// `pci=conf1` the guest finds no PCI config space (so no virtio-pci,
    /// no 9p, no vsock); kvmtool has no ACPI or IO-APIC to offer either.
    /// (The i8042 ones are in every pod's command line already.)
    fn kernel_params(&self) -> &'static [&'static str] {
        &[
            "noapic",
            "noacpi",
            "pci=conf1",
            "reboot=k",
            "i8042.direct=1",
        ]
    }

    fn export_shares(&self, shares: &[Share], pod_dir: &Path) -> (Vec<Share>, Vec<Alias>) {
        aliases::for_lkvm(shares, pod_dir)
    }

    fn argv(&self, config: &VmConfig) -> Result<Vec<String>, VmmError> {
        argv(config).map_err(VmmError::Unsupported)
    }

    /// kvmtool's own user-mode stack (`-n mode=user`); it has no stream
    /// backend to connect to passt.
    fn user_net(&self) -> UserNet {
        UserNet::Builtin
    }

    /// `--console serial` writes the guest's console to lkvm's stdout.
    fn output(&self) -> VmOutput {
        VmOutput::Console
    }

    /// kvmtool on x86 has no ACPI: a power-off only halts the guest and
    /// lkvm runs on. A reboot through the keyboard controller (`reboot=k`)
    /// makes lkvm exit.
    fn vm_end(&self) -> VmEnd {
        VmEnd::Reboot
    }

    fn supports_tcg(&self) -> bool {
        false
    }

    /// kvmtool's 9p server follows symlinks on the host, so lkvm runs in a
    /// jail holding only its binary, the kernel, the initrd, the shares and
    /// the devices it opens (see [`super::jail`]).
    fn jail(&self, config: &VmConfig, program: &Path, root: &Path) -> Option<Jail> {
        Some(jail(config, program, root))
    }
}

/// What lkvm needs to see.
fn jail(config: &VmConfig, program: &Path, root: &Path) -> Jail {
    let bind = |path: &Path, kind| Bind {
        path: path.to_path_buf(),
        kind,
    };
    let mut binds = vec![
        bind(program, BindKind::ReadOnly),
        bind(&config.kernel, BindKind::ReadOnly),
        bind(&config.initrd, BindKind::ReadOnly),
    ];
    // A dynamically linked lkvm needs its libraries (the one `make deps`
    // builds is static).
    let dynamic = std::fs::read(program)
        .ok()
        .is_some_and(|b| elf_interpreter(&b) == Ok(true));
    if dynamic {
        for lib in ["/lib", "/lib64", "/usr/lib", "/usr/lib64"] {
            if Path::new(lib).is_dir() {
                binds.push(bind(Path::new(lib), BindKind::ReadOnly));
            }
        }
    }
    binds.extend(
        config
            .shares
            .iter()
            .map(|s| bind(&s.source, BindKind::Share)),
    );
    let mut devices = vec!["/dev/kvm", "/dev/null", "/dev/zero", "/dev/urandom"];
    if matches!(config.vsock, VsockDevice::Kernel { .. }) {
        devices.push("/dev/vhost-vsock");
    }
    if matches!(config.net, Some(NetDevice::Tap { .. })) {
        devices.push("/dev/net/tun");
    }
    binds.extend(
        devices
            .into_iter()
            .map(|d| bind(Path::new(d), BindKind::Device)),
    );
    Jail {
        root: root.to_path_buf(),
        binds,
        // kvmtool keeps its control socket under $HOME/.lkvm.
        env: vec![("HOME".into(), "/".into())],
    }
}

/// `-n`'s value: no device, kvmtool's user-mode stack, or a tap that
/// exists already (`tapif`, so lkvm neither creates nor configures it).
fn net_param(net: Option<&NetDevice>) -> Result<String, String> {
    Ok(match net {
        None => "mode=none".into(),
        Some(NetDevice::Builtin {
            mac,
            guest_ip,
            host_ip,
        }) => format!("mode=user,guest_mac={mac},guest_ip={guest_ip},host_ip={host_ip}"),
        Some(NetDevice::Tap { device, mac }) => format!("mode=tap,tapif={device},guest_mac={mac}"),
        Some(NetDevice::Stream { .. }) => {
            return Err("lkvm cannot connect to a user-mode network process (passt)".into())
        }
    })
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
        net_param(spec.net.as_ref())?,
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
