//! QEMU's command line for a pod.

use std::path::Path;

use crate::accel::Accel;
use crate::vmspec::{Machine, VmSpec, Vsock};

/// The QEMU binary, unless `KVMPOD_QEMU` names another.
pub const QEMU: &str = "qemu-system-x86_64";

/// 9p devices that go straight on the root bus.
pub const DIRECT_9P_DEVICES: usize = 16;
/// Devices behind one PCI bridge (slot 0 left free).
const BRIDGE_SLOTS: usize = 31;

/// QEMU option values are comma-separated: a comma inside a value (a path)
/// is written twice.
fn escape(path: &Path) -> String {
    path.to_string_lossy().replace(',', ",,")
}

/// The argv (without the program) that boots `spec`.
pub fn argv(spec: &VmSpec) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
    push(&["-name", &format!("kvmpod-{},debug-threads=on", spec.name)]);
    let hybrid = matches!(spec.vsock, Vsock::VhostUser { .. });
    let mut machine = match spec.machine {
        // The Debian kernel needs the legacy timers to calibrate its TSC
        // under TCG, and ACPI to find the virtio-mmio devices and to power
        // off.
        Machine::Microvm => format!(
            "microvm,accel={},acpi=on,pit=on,pic=on,rtc=on",
            spec.accel.name()
        ),
        Machine::Q35 => format!("q35,accel={}", spec.accel.name()),
    };
    if hybrid {
        // vhost-user needs the guest memory shared with the backend process.
        machine.push_str(",memory-backend=mem");
    }
    push(&["-machine", &machine]);
    if hybrid {
        push(&[
            "-object",
            &format!(
                "memory-backend-memfd,id=mem,size={}M,share=on",
                spec.memory_mib
            ),
        ]);
    }
    push(&[
        "-cpu",
        if spec.accel == Accel::Kvm {
            "host"
        } else {
            "max"
        },
    ]);
    push(&[
        "-smp",
        &spec.cpus.to_string(),
        "-m",
        &format!("{}M", spec.memory_mib),
    ]);
    push(&[
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ]);
    push(&["-kernel", &escape(&spec.kernel)]);
    push(&["-initrd", &escape(&spec.initrd)]);
    push(&["-append", &spec.cmdline]);
    push(&[
        "-chardev",
        &format!("file,id=console,path={}", escape(&spec.console_log)),
        "-serial",
        "chardev:console",
    ]);
    let (ninep, vhost_user_vsock, vhost_vsock) = match spec.machine {
        Machine::Microvm => (
            "virtio-9p-device",
            "vhost-user-vsock-device",
            "vhost-vsock-device",
        ),
        Machine::Q35 => ("virtio-9p-pci", "vhost-user-vsock-pci", "vhost-vsock-pci"),
    };
    // On q35, past a handful, 9p devices go behind PCIe-to-PCI bridges (31
    // slots each): the root bus has only ~28 free slots.
    let bridged = spec.machine == Machine::Q35 && spec.shares.len() > DIRECT_9P_DEVICES;
    if bridged {
        for b in 0..spec.shares.len().div_ceil(BRIDGE_SLOTS) {
            push(&[
                "-device",
                &format!(
                    "pcie-root-port,id=kvmpod-rp{b},bus=pcie.0,chassis={}",
                    b + 1
                ),
            ]);
            push(&[
                "-device",
                &format!("pcie-pci-bridge,id=kvmpod-br{b},bus=kvmpod-rp{b}"),
            ]);
        }
    }
    for (i, share) in spec.shares.iter().enumerate() {
        let mut fsdev = format!(
            "local,id=fs{i},path={},security_model=passthrough,multidevs=remap",
            escape(&share.source)
        );
        if share.read_only {
            fsdev.push_str(",readonly=on");
        }
        push(&["-fsdev", &fsdev]);
        let placement = if bridged {
            format!(
                ",bus=kvmpod-br{},addr={:#x}",
                i / BRIDGE_SLOTS,
                i % BRIDGE_SLOTS + 1
            )
        } else {
            String::new()
        };
        push(&[
            "-device",
            &format!("{ninep},fsdev=fs{i},mount_tag={}{placement}", share.tag),
        ]);
    }
    match &spec.vsock {
        Vsock::VhostUser { socket } => {
            push(&[
                "-chardev",
                &format!("socket,id=vsock,path={}", escape(socket)),
            ]);
            push(&["-device", &format!("{vhost_user_vsock},chardev=vsock")]);
        }
        Vsock::Kernel { cid } => {
            push(&["-device", &format!("{vhost_vsock},guest-cid={cid}")]);
        }
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmspec::Share;

    fn spec() -> VmSpec {
        VmSpec {
            name: "0b1d".into(),
            machine: Machine::Q35,
            kernel: "/boot/vmlinuz".into(),
            initrd: "/var/lib/kvmpod/pods/0b1d/initramfs.img".into(),
            cmdline: "console=ttyS0 panic=-1 quiet".into(),
            memory_mib: 512,
            cpus: 2,
            accel: Accel::Tcg,
            console_log: "/var/lib/kvmpod/pods/0b1d/console.log".into(),
            shares: vec![
                Share {
                    tag: "data".into(),
                    source: "/srv/data".into(),
                    read_only: false,
                },
                Share {
                    tag: "conf".into(),
                    source: "/srv/a,b".into(),
                    read_only: true,
                },
            ],
            vsock: Vsock::VhostUser {
                socket: "/var/lib/kvmpod/pods/0b1d/vhost.sock".into(),
            },
        }
    }

    #[test]
    fn many_shares_go_behind_bridges() {
        let mut s = spec();
        s.shares = (0..40)
            .map(|i| Share {
                tag: format!("v{i}"),
                source: format!("/srv/{i}").into(),
                read_only: false,
            })
            .collect();
        let a = argv(&s);
        let bridges = a
            .iter()
            .filter(|x| x.starts_with("pcie-pci-bridge"))
            .count();
        assert_eq!(bridges, 2);
        assert!(
            a.contains(&"virtio-9p-pci,fsdev=fs0,mount_tag=v0,bus=kvmpod-br0,addr=0x1".to_string())
        );
        assert!(a.contains(
            &"virtio-9p-pci,fsdev=fs31,mount_tag=v31,bus=kvmpod-br1,addr=0x1".to_string()
        ));
        s.shares.truncate(DIRECT_9P_DEVICES);
        assert!(!argv(&s).iter().any(|x| x.contains("bridge")));
    }

    #[test]
    fn kvm_uses_the_host_cpu() {
        let mut s = spec();
        s.accel = Accel::Kvm;
        let a = argv(&s);
        assert!(a.windows(2).any(|w| w == ["-cpu", "host"]));
        assert!(a.iter().any(|x| x.starts_with("q35,accel=kvm")));
    }
}
