//! QEMU's command line for a pod.

use std::path::Path;

use crate::accel::Accel;
use crate::vmspec::{VmSpec, Vsock};

/// The QEMU binary, unless `KVMPOD_QEMU` names another.
pub const QEMU: &str = "qemu-system-x86_64";

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
    if matches!(spec.vsock, Vsock::VhostUser { .. }) {
        // vhost-user needs the guest memory shared with the backend process.
        push(&[
            "-machine",
            &format!("q35,accel={},memory-backend=mem", spec.accel.name()),
        ]);
        push(&[
            "-object",
            &format!(
                "memory-backend-memfd,id=mem,size={}M,share=on",
                spec.memory_mib
            ),
        ]);
    } else {
        push(&["-machine", &format!("q35,accel={}", spec.accel.name())]);
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
    for (i, share) in spec.shares.iter().enumerate() {
        let mut fsdev = format!(
            "local,id=fs{i},path={},security_model=passthrough,multidevs=remap",
            escape(&share.source)
        );
        if share.read_only {
            fsdev.push_str(",readonly=on");
        }
        push(&["-fsdev", &fsdev]);
        push(&[
            "-device",
            &format!("virtio-9p-pci,fsdev=fs{i},mount_tag={}", share.tag),
        ]);
    }
    match &spec.vsock {
        Vsock::VhostUser { socket } => {
            push(&[
                "-chardev",
                &format!("socket,id=vsock,path={}", escape(socket)),
            ]);
            push(&["-device", "vhost-user-vsock-pci,chardev=vsock"]);
        }
        Vsock::Kernel { cid } => {
            push(&["-device", &format!("vhost-vsock-pci,guest-cid={cid}")]);
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
    fn kvm_uses_the_host_cpu() {
        let mut s = spec();
        s.accel = Accel::Kvm;
        let a = argv(&s);
        assert!(a.windows(2).any(|w| w == ["-cpu", "host"]));
        assert!(a.iter().any(|x| x.starts_with("q35,accel=kvm")));
    }
}
