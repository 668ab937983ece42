//! host-ctl: kvmpod's command line. It validates a pod manifest, builds the
//! guest initramfs, boots the pod's VM and talks to the agent inside.

mod accel;
mod agent_client;
mod bootkernel;
mod child;
mod console;
mod output;
mod poddir;
mod qemu;
mod run;
mod tools;
mod vmspec;
mod vsock;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "host-ctl",
    version,
    about = "Run pods in lightweight VMs",
    long_about = "Run a pod (apps sharing volumes) inside its own lightweight VM: \
a static agent is PID 1 in the guest, host volumes travel over 9p, \
and host-ctl talks to the agent over vsock."
)]
struct Cli {
    /// Where pods keep their state.
    #[arg(long, global = true, env = "KVMPOD_STATE_DIR", default_value = poddir::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Boot a pod, print its apps' output, and exit with its status.
    ///
    /// The exit status is the first non-zero app exit status in manifest
    /// order (128 + N for an app killed by signal N), 0 when every app
    /// succeeded, and 125 when host-ctl itself failed.
    Run(RunArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// The pod manifest (JSON).
    manifest: PathBuf,
    /// The guest kernel [default: the newest /boot/vmlinuz-*].
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// The guest kernel's modules [default: /lib/modules/<its version>].
    #[arg(long)]
    modules_dir: Option<PathBuf>,
    /// The guest agent binary [default: found next to host-ctl].
    #[arg(long)]
    agent: Option<PathBuf>,
    /// The accelerator: KVM only where it really works, else TCG.
    #[arg(long, value_enum, default_value_t = accel::AccelRequest::Auto)]
    accel: accel::AccelRequest,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(64..=65536))]
    memory: u32,
    /// Guest vCPUs.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    cpus: u32,
    /// Seconds to wait for the agent to answer after the VM starts.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    boot_timeout: u64,
    /// Seconds apps get between SIGTERM and SIGKILL when the pod stops.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=3600))]
    grace: u64,
    /// Seconds the agent waits, after the apps exit, for host-ctl to collect
    /// the final status before it powers off by itself.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86400))]
    linger: u64,
    /// Print the guest's boot timeline and host-side timings.
    #[arg(long)]
    timings: bool,
    /// Verbose guest console (kernel messages and agent debug lines).
    #[arg(long)]
    debug: bool,
    /// Remove the pod's directory when it ends.
    #[arg(long)]
    rm: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One thread: child processes get PR_SET_PDEATHSIG from the thread that
    // spawned them, which must live as long as host-ctl.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("host-ctl: error: starting the async runtime: {e}");
            return ExitCode::from(run::EXIT_HOST_ERROR as u8);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(a) => {
                run::run(run::RunOptions {
                    manifest: a.manifest,
                    state_dir: cli.state_dir,
                    kernel: a.kernel,
                    modules_dir: a.modules_dir,
                    agent: a.agent,
                    accel: a.accel,
                    memory_mib: a.memory,
                    cpus: a.cpus,
                    boot_timeout: Duration::from_secs(a.boot_timeout),
                    grace: Duration::from_secs(a.grace),
                    linger: Duration::from_secs(a.linger),
                    timings: a.timings,
                    debug: a.debug,
                    rm: a.rm,
                })
                .await
            }
        }
    });
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("host-ctl: error: {e:#}");
            ExitCode::from(run::EXIT_HOST_ERROR as u8)
        }
    }
}
