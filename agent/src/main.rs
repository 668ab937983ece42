//! kvmpod-agent: PID 1 of a kvmpod guest.
//!
//! It mounts the guest's file systems, loads the kernel modules the host
//! chose, serves the agent API over vsock, mounts the pod's volumes, starts
//! and supervises the apps, and powers the VM off when the host asks (or
//! when the apps are done and nobody asked). PID 1 must never exit or
//! panic: every path ends in a clean power-off.

mod boot;
mod cgroups;
mod console;
mod early;
mod error;
mod events;
mod exec;
mod forward;
mod kmod;
mod logbuf;
mod mounts;
mod net;
mod pod;
mod power;
mod reaper;
mod resolve;
mod service;
mod shutdown;
mod spawn;
mod supervisor;
mod timeline;
mod users;
mod volumes;

fn main() {
    let init_ns = timeline::boottime_ns();
    if nix::unistd::getpid().as_raw() != 1 {
        // Powering off is PID 1's job in a guest; anywhere else it would
        // take the host down.
        eprintln!("kvmpod-agent: refusing to run: this is the guest init of a kvmpod VM and must be PID 1");
        std::process::exit(2);
    }
    // The last line of defence: report, sync, power off (the kernel would
    // panic if PID 1 exited).
    std::panic::set_hook(Box::new(|info| {
        console::fatal("panic", info);
        power::power_off();
    }));
    console::stage("init");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| {
            console::fatal("starting the async runtime", &e);
            power::power_off()
        });
    runtime.block_on(boot::run(init_ns));
    power::power_off()
}
