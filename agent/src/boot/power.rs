//! Ending the VM. PID 1 must never exit (the kernel would panic), so every
//! path ends here: sync, then power off.

use std::time::Duration;

use nix::sys::reboot::{reboot, RebootMode};

/// Flushes file systems and powers the VM off; never returns.
pub fn power_off() -> ! {
    nix::unistd::sync();
    crate::console::stage(kvmpod_api::timeline::Stage::PowerOff);
    let _ = reboot(RebootMode::RB_POWER_OFF);
    // Only reachable if the kernel refused; keep PID 1 alive rather than
    // panic the kernel.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
