//! Figure 3, the baseline: a trivial pod (mount a host volume, write a file)
//! under host-ctl against a busybox-init VM doing the same module loads, 9p
//! mounts (the root's layer under a tmpfs overlay, the volume) and exec on
//! the same QEMU command line, minus the vsock device.
//! Their ratio is what kvmpod adds to the least a VM must do.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::json;

use crate::ctx::{path_str, runs, Ctx};
use crate::report::Report;
use crate::stats::Figure;

/// The baseline VM's QEMU: its program and arguments, and its console log.
struct BaselineVm {
    program: String,
    args: Vec<String>,
    console: PathBuf,
}

pub fn run(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let data = ctx.host_dir("trivial-data")?;
    let pod = |network: Option<&str>| {
        let mut m = json!({
            "volumes": [{"name": "data", "kind": "host", "source": data}],
            "apps": [{"name": "writer", "rootfs": ctx.rootfs, "exec": ["/bin/sh", "-c", "echo hello > /data/out.txt"],
                      "mountPoints": [{"volume": "data", "path": "/data"}]}]
        });
        if let Some(mode) = network {
            m["network"] = json!({"mode": mode});
        }
        m
    };
    // The baseline VM has no network: the pod it is compared with has
    // none either; the default (user-mode) network's cost is its own
    // figure.
    let manifest = ctx.write_manifest("trivial", &pod(Some("none")))?;
    let networked = ctx.write_manifest("trivial-user-net", &pod(None))?;
    let vm = baseline_vm(ctx, &manifest)?;
    let (mut kvmpod, mut base, mut net) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs() {
        let (wall, _, _) = ctx.run_attached(&manifest)?;
        kvmpod.push(wall);
        base.push(run_baseline(&vm, &data)?);
        net.push(ctx.run_attached(&networked)?.0);
    }
    let k = Figure::of("host-ctl run (trivial pod, --net none), wall", "s", &kvmpod);
    let b = Figure::of("baseline busybox-init VM (same work), wall", "s", &base);
    let n = Figure::of(
        "host-ctl run (trivial pod, default user-mode network: passt), wall",
        "s",
        &net,
    );
    let ratio = k.median / b.median;
    let net_ratio = n.median / k.median;
    report.add("baseline", k);
    report.add("baseline", b);
    report.add(
        "baseline",
        Figure::of("ratio host-ctl / baseline (medians)", "×", &[ratio]).target(1.05, false),
    );
    report.add("baseline", n);
    report.add(
        "baseline",
        Figure::of("user-mode network / none (medians)", "×", &[net_ratio]),
    );
    Ok(())
}

/// The QEMU command line host-ctl would use for `manifest`, booting the
/// baseline initramfs instead, and its initramfs, built.
fn baseline_vm(ctx: &Ctx, manifest: &Path) -> Result<BaselineVm> {
    let args = ctx.ok(&["args", path_str(manifest)?])?;
    let qemu_line = args
        .lines()
        .last()
        .ok_or_else(|| anyhow!("host-ctl args printed nothing"))?;
    let words = shell_words(qemu_line);
    let base_dir = ctx.host_dir("baseline")?;
    let initrd = base_dir.join("initramfs.img");
    let console = base_dir.join("console.log");
    // The same virtio transport as the machine host-ctl picked.
    let microvm = words
        .windows(2)
        .any(|w| w[0] == "-machine" && w[1].starts_with("microvm"));
    let transport = if microvm { "virtio_mmio" } else { "virtio_pci" };
    build_baseline_initramfs(ctx, manifest, transport, &initrd)?;
    Ok(BaselineVm {
        program: words.first().cloned().unwrap_or_default(),
        args: baseline_args(&words, &initrd, &console, &ctx.rootfs),
        console,
    })
}

/// host-ctl's QEMU arguments (after the program) rewritten for the
/// baseline: its initramfs and console, no vsock device, no shared memory
/// backend (vhost-user needs it, the baseline does not), and the pod's
/// share (`fs0`, the pod directory's `guest/`, which `args` does not
/// create) pointed at the app's root, which the baseline mounts as the
/// agent mounts a root's layer.
pub fn baseline_args(words: &[String], initrd: &Path, console: &Path, root: &Path) -> Vec<String> {
    let mut qemu = Vec::new();
    let mut i = 1;
    while i < words.len() {
        let w = &words[i];
        let next = words.get(i + 1).cloned().unwrap_or_default();
        match w.as_str() {
            "-initrd" => {
                qemu.push(w.clone());
                qemu.push(initrd.display().to_string());
                i += 2;
            }
            "-object" if next.starts_with("memory-backend-memfd") => i += 2,
            "-machine" => {
                qemu.push(w.clone());
                qemu.push(next.replace(",memory-backend=mem", ""));
                i += 2;
            }
            "-fsdev" if next.starts_with("local,id=fs0,") => {
                let rest = next
                    .split_once(",security_model")
                    .map(|(_, r)| r)
                    .unwrap_or("");
                qemu.push(w.clone());
                qemu.push(format!(
                    "local,id=fs0,path={},security_model{rest}",
                    root.display()
                ));
                i += 2;
            }
            "-chardev" if next.starts_with("socket,id=vsock") => i += 2,
            "-device"
                if next.starts_with("vhost-user-vsock") || next.starts_with("vhost-vsock") =>
            {
                i += 2
            }
            "-chardev" if next.starts_with("file,id=console") => {
                qemu.push(w.clone());
                qemu.push(format!("file,id=console,path={}", console.display()));
                i += 2;
            }
            _ => {
                qemu.push(w.clone());
                i += 1;
            }
        }
    }
    qemu
}

/// Boots the baseline VM once; its wall time, once it has done the pod's
/// work (written `hello` to the host volume `data`).
fn run_baseline(vm: &BaselineVm, data: &Path) -> Result<f64> {
    let _ = fs::remove_file(data.join("out.txt"));
    let start = Instant::now();
    let st = Command::new(&vm.program)
        .args(&vm.args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .with_context(|| format!("running {}", vm.program))?;
    let wall = start.elapsed().as_secs_f64();
    let wrote = fs::read_to_string(data.join("out.txt")).unwrap_or_default();
    if !st.success() || wrote != "hello\n" {
        bail!(
            "the baseline VM did not do its work (status {st}); console:\n{}",
            fs::read_to_string(&vm.console).unwrap_or_default()
        );
    }
    Ok(wall)
}

/// The baseline's initramfs: busybox (for the script itself), the same
/// modules in the same order, and an /init script doing the pod's work.
fn build_baseline_initramfs(ctx: &Ctx, manifest: &Path, transport: &str, out: &Path) -> Result<()> {
    use rootfs_builder::archive::{Archive, Entry};
    kvmpod_api::validate::load(manifest)?;
    let mut a = Archive::new();
    rootfs_builder::tree::add_dir(&mut a, &ctx.rootfs, "")?;
    a.add("dev/console", Entry::console())?;
    for d in ["proc", "mnt/data"] {
        a.add(d, Entry::dir(0o755))?;
    }
    let paths = add_stage1_modules(&mut a, transport)?;
    // The agent's work for the trivial pod: modules, the root's layer
    // over 9p under a tmpfs upper (overlayfs), the host volume, one shell.
    let init = format!(
        "#!/bin/sh\n\
         mount -t proc proc /proc\n\
         for m in {}; do insmod $m; done\n\
         mkdir -p /lo /up /app\n\
         mount -t 9p -o trans=virtio,version=9p2000.L,cache=loose,msize=512000,ro kvmpod /lo\n\
         mount -t tmpfs up /up && mkdir /up/u /up/w\n\
         mount -t overlay overlay -o lowerdir=/lo,upperdir=/up/u,workdir=/up/w /app\n\
         mkdir -p /app/mnt/data\n\
         mount -t 9p -o trans=virtio,version=9p2000.L,cache=mmap,msize=512000 data /app/mnt/data\n\
         chroot /app /bin/sh -c 'echo hello > /mnt/data/out.txt'\n\
         sync\n\
         umount /app/mnt/data\n\
         poweroff -f\n",
        paths.join(" ")
    );
    a.add("init", Entry::file(init.into_bytes(), 0o755))?;
    // Uncompressed, as host-ctl writes its own by default.
    rootfs_builder::write_initramfs(&a, out, rootfs_builder::Compression::None)?;
    Ok(())
}

/// Adds the kernel modules the stage1 image loads for `transport`, from
/// this host's kernel, to `a`; their paths in the guest, in load order.
pub fn add_stage1_modules(
    a: &mut rootfs_builder::archive::Archive,
    transport: &str,
) -> Result<Vec<String>> {
    use rootfs_builder::archive::Entry;
    let kernel = host_ctl::launch::host::kernel(None, None)?;
    let modules_dir = kernel
        .modules
        .ok_or_else(|| anyhow!("the kernel has no modules directory"))?;
    let kver = modules_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    let index = rootfs_builder::modules::ModuleIndex::load(&modules_dir)?;
    let wanted = rootfs_builder::initramfs::pod_modules()
        .remove(transport)
        .ok_or_else(|| anyhow!("no stage1 modules for transport {transport}"))?;
    let mut paths = Vec::new();
    for m in index.resolve(&wanted)? {
        let p = format!("lib/modules/{kver}/{}", m.guest_rel_path());
        a.add(&p, Entry::file(index.read_module(&m)?, 0o644))?;
        paths.push(format!("/{p}"));
    }
    Ok(paths)
}

/// Splits a shell-quoted line as `host-ctl args` prints it.
pub fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for q in chars.by_ref() {
                    if q == '\'' {
                        break;
                    }
                    cur.push(q);
                }
            }
            '\\' => {
                in_word = true;
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            ' ' if in_word => {
                words.push(std::mem::take(&mut cur));
                in_word = false;
            }
            ' ' => {}
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_undo_host_ctl_quoting() {
        assert_eq!(
            shell_words("qemu -append 'console=ttyS0 panic=-1' -name x,y 'it'\\''s'"),
            [
                "qemu",
                "-append",
                "console=ttyS0 panic=-1",
                "-name",
                "x,y",
                "it's"
            ]
        );
    }
}
