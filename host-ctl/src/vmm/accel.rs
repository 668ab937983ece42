//! Choosing the accelerator: KVM only when it really works, TCG otherwise.
//!
//! A `/dev/kvm` that opens is not enough. Some hosts expose a KVM that
//! cannot run a stock kernel: a PVM host (the `kvm_pvm` module, a
//! paravirtual KVM for PVM-enabled guests only) hangs a normal guest in
//! early boot, and nested setups may fail to create a VM at all. So `auto`
//! checks for known-bad implementations and then runs a tiny real-mode guest
//! with a deadline; anything but the expected exit means TCG.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use kvm_ioctls::{Kvm, VcpuExit};

/// How long the probe guest may take; a working KVM needs well under 1 ms.
const PROBE_DEADLINE: Duration = Duration::from_millis(500);

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum AccelRequest {
    /// KVM when it works here, else TCG.
    Auto,
    /// KVM, even where the probe doubts it (fails if /dev/kvm is unusable).
    Kvm,
    /// QEMU's software emulator.
    Tcg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl std::fmt::Display for Accel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// The accelerator picked, and why, for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub accel: Accel,
    pub reason: String,
}

/// Picks the accelerator for `request`. Errors only when KVM was demanded
/// and cannot even be opened.
pub fn choose(request: AccelRequest) -> Result<Choice, super::VmmError> {
    match request {
        AccelRequest::Tcg => Ok(Choice {
            accel: Accel::Tcg,
            reason: "--accel tcg".into(),
        }),
        AccelRequest::Kvm => match probe(Path::new("/dev/kvm"), Path::new("/sys/module")) {
            Ok(()) => Ok(Choice {
                accel: Accel::Kvm,
                reason: "--accel kvm; the KVM probe passed".into(),
            }),
            Err(KvmProblem::Unusable(why)) => Err(super::VmmError::Unavailable(format!(
                "--accel kvm: KVM is unusable here: {why}"
            ))),
            Err(KvmProblem::Suspect(why)) => Ok(Choice {
                accel: Accel::Kvm,
                reason: format!("--accel kvm, although {why}"),
            }),
        },
        AccelRequest::Auto => Ok(
            match probe(Path::new("/dev/kvm"), Path::new("/sys/module")) {
                Ok(()) => Choice {
                    accel: Accel::Kvm,
                    reason: "KVM works (a probe guest ran)".into(),
                },
                Err(KvmProblem::Unusable(why) | KvmProblem::Suspect(why)) => Choice {
                    accel: Accel::Tcg,
                    reason: why,
                },
            },
        ),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvmProblem {
    /// KVM cannot be used at all.
    Unusable(String),
    /// KVM opens and runs a probe, but is known not to boot stock kernels.
    Suspect(String),
}

/// Checks KVM: the device, known-bad implementations, then a probe guest.
pub fn probe(dev: &Path, sys_module: &Path) -> Result<(), KvmProblem> {
    if !dev.exists() {
        return Err(KvmProblem::Unusable(format!(
            "{} does not exist",
            dev.display()
        )));
    }
    if let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open(dev) {
        return Err(KvmProblem::Unusable(format!("{}: {e}", dev.display())));
    }
    if sys_module.join("kvm_pvm").exists() {
        return Err(KvmProblem::Suspect(
            "this host's KVM is PVM (the kvm_pvm module), which hangs stock kernels in early boot"
                .into(),
        ));
    }
    run_probe_guest().map_err(|e| KvmProblem::Unusable(e.0))
}

/// Runs `mov al, 0x42; out 0x10, al; hlt` in real mode on a thread, with a
/// deadline: a KVM that hangs must not hang host-ctl.
fn run_probe_guest() -> Result<(), ProbeError> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(probe_guest());
    });
    match rx.recv_timeout(PROBE_DEADLINE) {
        Ok(result) => result,
        Err(_) => Err(ProbeError(format!(
            "a KVM probe guest did not finish within {PROBE_DEADLINE:?}"
        ))),
    }
}

/// Why the probe guest did not run as it should.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct ProbeError(String);

/// Wraps a failed step of the probe, naming it.
fn failed<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> ProbeError {
    move |e| ProbeError(format!("{what}: {e}"))
}

fn probe_guest() -> Result<(), ProbeError> {
    const CODE: [u8; 5] = [0xb0, 0x42, 0xe6, 0x10, 0xf4];
    const GUEST_ADDR: u64 = 0x1000;
    const SIZE: usize = 0x1000;
    let kvm = Kvm::new().map_err(failed("opening /dev/kvm"))?;
    if kvm.get_api_version() != 12 {
        return Err(ProbeError(format!(
            "unexpected KVM API version {}",
            kvm.get_api_version()
        )));
    }
    let vm = kvm.create_vm().map_err(failed("creating a VM"))?;
    // Guest memory: one page, page-aligned (KVM refuses a region that is
    // not: EINVAL, seen in a nested KVM host), leaked on purpose (the probe
    // runs once, and the VM may still reference it if the thread is
    // abandoned).
    let layout = std::alloc::Layout::from_size_align(SIZE, SIZE)
        .map_err(|e| ProbeError(format!("a page layout: {e}")))?;
    // SAFETY: the layout has a non-zero size.
    let page = unsafe { std::alloc::alloc_zeroed(layout) };
    if page.is_null() {
        return Err(ProbeError("allocating a page for the probe guest".into()));
    }
    // SAFETY: `page` is a fresh, zeroed, exclusively owned allocation of
    // SIZE bytes that is never freed.
    let mem: &'static mut [u8] = unsafe { std::slice::from_raw_parts_mut(page, SIZE) };
    mem[..CODE.len()].copy_from_slice(&CODE);
    let region = kvm_bindings::kvm_userspace_memory_region {
        slot: 0,
        guest_phys_addr: GUEST_ADDR,
        memory_size: SIZE as u64,
        userspace_addr: mem.as_mut_ptr() as u64,
        flags: 0,
    };
    // SAFETY: the region points at leaked memory that stays valid for the
    // life of the process, and its size is the buffer's.
    unsafe { vm.set_user_memory_region(region) }.map_err(failed("mapping guest memory"))?;
    let mut vcpu = vm.create_vcpu(0).map_err(failed("creating a vCPU"))?;
    let mut sregs = vcpu.get_sregs().map_err(failed("reading vCPU state"))?;
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.set_sregs(&sregs)
        .map_err(failed("setting vCPU state"))?;
    let mut regs = vcpu.get_regs().map_err(failed("reading vCPU registers"))?;
    regs.rip = GUEST_ADDR;
    regs.rflags = 2;
    vcpu.set_regs(&regs)
        .map_err(failed("setting vCPU registers"))?;
    let mut saw_out = false;
    for _ in 0..4 {
        match vcpu.run().map_err(failed("running the probe guest"))? {
            VcpuExit::IoOut(0x10, [0x42]) => saw_out = true,
            VcpuExit::Hlt if saw_out => return Ok(()),
            other => {
                return Err(ProbeError(format!(
                    "the probe guest stopped unexpectedly: {other:?}"
                )))
            }
        }
    }
    Err(ProbeError("the probe guest did not halt".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_device_is_unusable() {
        let dir = tempfile::tempdir().unwrap();
        let e = probe(&dir.path().join("kvm"), dir.path()).unwrap_err();
        assert!(
            matches!(e, KvmProblem::Unusable(ref w) if w.ends_with("kvm does not exist")),
            "{e:?}"
        );
    }

    #[test]
    fn pvm_is_suspect() {
        let dir = tempfile::tempdir().unwrap();
        let dev = dir.path().join("kvm");
        std::fs::write(&dev, "").unwrap();
        std::fs::create_dir(dir.path().join("kvm_pvm")).unwrap();
        let e = probe(&dev, dir.path()).unwrap_err();
        assert!(
            matches!(e, KvmProblem::Suspect(ref w) if w.contains("PVM")),
            "{e:?}"
        );
    }

    #[test]
    fn tcg_when_asked() {
        assert_eq!(choose(AccelRequest::Tcg).unwrap().accel, Accel::Tcg);
    }
}
