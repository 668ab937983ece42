//! The guest's PID 1: see the library's documentation.

use kvmpod_agent::boot::{self, power_off};
use kvmpod_agent::{console, timeline};

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
        power_off();
    }));
    console::stage(kvmpod_api::timeline::Stage::Init);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| {
            console::fatal("starting the async runtime", &e);
            power_off()
        });
    runtime.block_on(boot::run(init_ns));
    power_off()
}
