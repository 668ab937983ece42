//! Ending the VM. PID 1 must never exit (the kernel would panic), so every
//! path ends here: sync, then power off, or reboot where the hypervisor
//! exits on a reboot and not on a power-off (lkvm: see `VmEnd`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kvmpod_api::config::VmEnd;
use nix::sys::reboot::{reboot, RebootMode};

/// Set once the host's settings say a reboot ends the VM; until they are
/// read, a power-off (QEMU's way).
static REBOOT_ENDS_VM: AtomicBool = AtomicBool::new(false);

/// Records how the host asked for the VM to be ended.
pub fn set_vm_end(end: VmEnd) {
    REBOOT_ENDS_VM.store(end == VmEnd::Reboot, Ordering::SeqCst);
}

/// Flushes file systems and ends the VM; never returns.
pub fn power_off() -> ! {
    nix::unistd::sync();
    crate::console::stage(kvmpod_api::timeline::Stage::PowerOff);
    let mode = if REBOOT_ENDS_VM.load(Ordering::SeqCst) {
        RebootMode::RB_AUTOBOOT
    } else {
        RebootMode::RB_POWER_OFF
    };
    let _ = reboot(mode);
    // Only reachable if the kernel refused; keep PID 1 alive rather than
    // panic the kernel.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
