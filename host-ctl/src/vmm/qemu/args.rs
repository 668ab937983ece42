//! QEMU's command line for a pod, built from small option groups in the
//! order QEMU is given them: machine, CPU and memory, boot, console, 9p
//! shares, vsock.

use std::path::Path;

use crate::vmm::accel::Accel;
use crate::vmm::config::{Machine, NetDevice, Share, VmConfig, VsockDevice};

/// 9p devices that go straight on the root bus.
pub const DIRECT_9P_DEVICES: usize = 16;
/// Devices behind one PCI bridge (slot 0 left free).
const BRIDGE_SLOTS: usize = 31;

/// QEMU option values are comma-separated: a comma inside a value (a path)
/// is written twice.
fn escape(path: &Path) -> String {
    path.to_string_lossy().replace(',', ",,")
}

/// An argv under construction.
#[derive(Default)]
struct Args(Vec<String>);

impl Args {
    fn opt(&mut self, name: &str, value: impl Into<String>) {
        self.0.push(name.to_string());
        self.0.push(value.into());
    }
    fn flag(&mut self, name: &str) {
        self.0.push(name.to_string());
    }
}

/// The argv (without the program) that boots `config`.
pub fn argv(config: &VmConfig) -> Vec<String> {
    let mut a = Args::default();
    a.opt("-name", format!("kvmpod-{},debug-threads=on", config.name));
    machine(&mut a, config);
    cpu_and_memory(&mut a, config);
    boot(&mut a, config);
    console(&mut a, &config.console_log);
    shares(&mut a, config.machine, &config.shares);
    vsock(&mut a, config.machine, &config.vsock);
    net(&mut a, config.machine, config.net.as_ref());
    a.0
}

/// `-machine`, and for hybrid vsock the shared memory backend vhost-user
/// needs (the backend process maps the guest's memory).
fn machine(a: &mut Args, c: &VmConfig) {
    let hybrid = matches!(c.vsock, VsockDevice::VhostUser { .. });
    let mut machine = match c.machine {
        // The Debian kernel needs the legacy timers to calibrate its TSC
        // under TCG, and ACPI to find the virtio-mmio devices and to power
        // off.
        Machine::Microvm => format!(
            "microvm,accel={},acpi=on,pit=on,pic=on,rtc=on",
            c.accel.name()
        ),
        Machine::Q35 => format!("q35,accel={}", c.accel.name()),
    };
    if hybrid {
        machine.push_str(",memory-backend=mem");
    }
    a.opt("-machine", machine);
    if hybrid {
        a.opt(
            "-object",
            format!(
                "memory-backend-memfd,id=mem,size={}M,share=on",
                c.memory_mib
            ),
        );
    }
}

fn cpu_and_memory(a: &mut Args, c: &VmConfig) {
    a.opt("-cpu", if c.accel == Accel::Kvm { "host" } else { "max" });
    a.opt("-smp", c.cpus.to_string());
    a.opt("-m", format!("{}M", c.memory_mib));
}

/// No default devices, no display; a guest reboot (its panic) ends QEMU.
fn boot(a: &mut Args, c: &VmConfig) {
    a.flag("-nodefaults");
    a.flag("-no-user-config");
    a.opt("-display", "none");
    a.flag("-no-reboot");
    a.opt("-kernel", escape(&c.kernel));
    a.opt("-initrd", escape(&c.initrd));
    a.opt("-append", c.cmdline.clone());
}

fn console(a: &mut Args, log: &Path) {
    a.opt("-chardev", format!("file,id=console,path={}", escape(log)));
    a.opt("-serial", "chardev:console");
}

/// One `-fsdev` and one 9p device per share. On q35, past a handful, the
/// devices go behind PCIe-to-PCI bridges (31 slots each): the root bus
/// has only ~28 free slots.
fn shares(a: &mut Args, machine: Machine, shares: &[Share]) {
    let device = match machine {
        Machine::Microvm => "virtio-9p-device",
        Machine::Q35 => "virtio-9p-pci",
    };
    let bridged = machine == Machine::Q35 && shares.len() > DIRECT_9P_DEVICES;
    if bridged {
        for b in 0..shares.len().div_ceil(BRIDGE_SLOTS) {
            a.opt(
                "-device",
                format!(
                    "pcie-root-port,id=kvmpod-rp{b},bus=pcie.0,chassis={}",
                    b + 1
                ),
            );
            a.opt(
                "-device",
                format!("pcie-pci-bridge,id=kvmpod-br{b},bus=kvmpod-rp{b}"),
            );
        }
    }
    for (i, share) in shares.iter().enumerate() {
        let mut fsdev = format!(
            "local,id=fs{i},path={},security_model=passthrough,multidevs=remap",
            escape(&share.source)
        );
        if share.read_only {
            fsdev.push_str(",readonly=on");
        }
        a.opt("-fsdev", fsdev);
        let placement = if bridged {
            format!(
                ",bus=kvmpod-br{},addr={:#x}",
                i / BRIDGE_SLOTS,
                i % BRIDGE_SLOTS + 1
            )
        } else {
            String::new()
        };
        a.opt(
            "-device",
            format!("{device},fsdev=fs{i},mount_tag={}{placement}", share.tag),
        );
    }
}

fn vsock(a: &mut Args, machine: Machine, vsock: &VsockDevice) {
    let (vhost_user, kernel) = match machine {
        Machine::Microvm => ("vhost-user-vsock-device", "vhost-vsock-device"),
        Machine::Q35 => ("vhost-user-vsock-pci", "vhost-vsock-pci"),
    };
    match vsock {
        VsockDevice::VhostUser { socket } => {
            a.opt(
                "-chardev",
                format!("socket,id=vsock,path={}", escape(socket)),
            );
            a.opt("-device", format!("{vhost_user},chardev=vsock"));
        }
        VsockDevice::Kernel { cid } => {
            a.opt("-device", format!("{kernel},guest-cid={cid}"));
        }
    }
}

/// The network device: a stream to passt, or a tap (no vhost-net: the
/// host may have none, and TCG gains nothing from it).
fn net(a: &mut Args, machine: Machine, net: Option<&NetDevice>) {
    let device = match machine {
        Machine::Microvm => "virtio-net-device",
        Machine::Q35 => "virtio-net-pci",
    };
    let mac = match net {
        None => return,
        Some(NetDevice::Stream { socket, mac }) => {
            a.opt(
                "-netdev",
                format!(
                    "stream,id=net0,server=off,addr.type=unix,addr.path={}",
                    escape(socket)
                ),
            );
            mac
        }
        Some(NetDevice::Tap { device, mac }) => {
            a.opt(
                "-netdev",
                format!("tap,id=net0,ifname={device},script=no,downscript=no"),
            );
            mac
        }
        // Refused by `Qemu::argv`: QEMU's user networking is passt's.
        Some(NetDevice::Builtin { .. }) => return,
    };
    a.opt("-device", format!("{device},netdev=net0,mac={mac}"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> VmConfig {
        VmConfig {
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
            vsock: VsockDevice::VhostUser {
                socket: "/var/lib/kvmpod/pods/0b1d/vhost.sock".into(),
            },
            net: None,
        }
    }

    #[test]
    fn network_devices() {
        let mut s = spec();
        assert!(!argv(&s).iter().any(|x| x == "-netdev"));
        s.net = Some(NetDevice::Stream {
            socket: "/run/p,1/passt.sock".into(),
            mac: "52:54:00:00:00:03".into(),
        });
        let a = argv(&s);
        assert!(a.windows(2).any(|w| w
            == [
                "-netdev",
                "stream,id=net0,server=off,addr.type=unix,addr.path=/run/p,,1/passt.sock"
            ]));
        assert!(a.contains(&"virtio-net-pci,netdev=net0,mac=52:54:00:00:00:03".to_string()));
        s.net = Some(NetDevice::Tap {
            device: "tap7".into(),
            mac: "52:54:00:00:00:04".into(),
        });
        s.machine = Machine::Microvm;
        let a = argv(&s);
        assert!(a.contains(&"tap,id=net0,ifname=tap7,script=no,downscript=no".to_string()));
        assert!(a.contains(&"virtio-net-device,netdev=net0,mac=52:54:00:00:00:04".to_string()));
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
