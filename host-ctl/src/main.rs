//! host-ctl: kvmpod's command line. It validates a pod manifest, builds the
//! guest initramfs, boots the pod's VM and talks to the agent inside.

use host_ctl::commands::{self, run::EXIT_HOST_ERROR};
use host_ctl::launch::{ImageRun, PodSource, RunOptions};
use host_ctl::logs::{parse_size, Rotation, Stream};
use host_ctl::pod::DEFAULT_STATE_DIR;
use host_ctl::pool::PoolSpec;
use host_ctl::ui::notes::Verbosity;
use host_ctl::ui::signals;
use host_ctl::vmm::accel::AccelRequest;
use host_ctl::vmm::vsock::VsockMode;
use host_ctl::vmm::HypervisorKind;
use kvmpod_api::network::{Network, PortMapping};

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use commands::Format;

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
    #[arg(long, global = true, env = "KVMPOD_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Say every choice made about this host (accelerator, vsock,
    /// machine) on every command, not only when it changes.
    #[arg(long, global = true, conflicts_with = "quiet")]
    verbose: bool,
    /// Say nothing but errors and warnings.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

impl Cli {
    fn verbosity(&self) -> Verbosity {
        match (self.quiet, self.verbose) {
            (true, _) => Verbosity::Quiet,
            (_, true) => Verbosity::Verbose,
            _ => Verbosity::Normal,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Boot a pod, print its apps' output, and exit with its status.
    ///
    /// The exit status is the first non-zero app exit status in manifest
    /// order (128 + N for an app killed by signal N), 0 when every app
    /// succeeded, 125 when host-ctl itself failed and 130 when interrupted.
    /// With --detach, print the pod's ID once its agent answers and leave
    /// it running under a monitor process.
    Run(RunArgs),
    /// Print the commands `run` would start (vsock backend, hypervisor),
    /// shell-quoted, without starting anything. Paths under the pod's
    /// directory are created by `run`.
    Args(VmArgs),
    /// Show what this host gives pods: the accelerator and vsock transport
    /// `run` would choose and why, the hypervisors, kernel and agent found,
    /// the stage1 images, and what the state directory holds.
    Info {
        #[arg(long, default_value = "table")]
        format: Format,
    },
    /// List the pods.
    List {
        #[arg(long, default_value = "table")]
        format: Format,
    },
    /// Show a pod's state, its apps and its boot timeline.
    Status {
        pod: String,
        #[arg(long, default_value = "table")]
        format: Format,
    },
    /// Print everything known of pods, as JSON: their records, a running
    /// pod's live state, the manifest it runs and how its VM was started.
    Inspect {
        #[arg(required = true)]
        pods: Vec<String>,
    },
    /// Wait until pods have exited, and print each one's exit status (the
    /// first non-zero app status in manifest order; 125 when a pod ended
    /// before its apps did).
    Wait {
        #[arg(required = true)]
        pods: Vec<String>,
    },
    /// Print apps' output (while the pod runs and after it exited).
    Logs(LogsArgs),
    /// Run a command in an app's root, with its environment and user.
    Exec(ExecArgs),
    /// Follow an app's output (and feed its stdin, if it has one).
    Attach {
        pod: String,
        app: String,
        /// The keys that leave an app on a terminal running and end the
        /// session (docker's spelling: ctrl-<c> or a character, separated
        /// by commas; empty: none).
        #[arg(long, value_name = "KEYS", default_value = host_ctl::ui::detach_keys::DEFAULT)]
        detach_keys: String,
    },
    /// Copy files and directories between the host and an app:
    /// POD:APP:/path on one side, a host path (or - for a tar archive on
    /// stdin or stdout) on the other.
    Cp {
        /// What to copy: POD:APP:/path, a host path, or - (a tar archive
        /// on stdin).
        src: String,
        /// Where to: an existing directory gets the source under its own
        /// name, any other path is the copy's new name; - writes a tar
        /// archive to stdout.
        dest: String,
    },
    /// Send a signal to an app, or to every app.
    Kill {
        pod: String,
        app: Option<String>,
        /// A name (TERM, SIGKILL, RTMIN+1) or a number.
        #[arg(short, long, default_value = "TERM", value_parser = parse_signal)]
        signal: i32,
    },
    /// Stop a pod: SIGTERM, a grace period, SIGKILL, sync, power off.
    Stop {
        pod: String,
        /// Seconds between SIGTERM and SIGKILL.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=3600))]
        timeout: u64,
    },
    /// Show each app's memory, CPU and process figures.
    Stats {
        pod: String,
        #[arg(long, default_value = "table")]
        format: Format,
    },
    /// List the processes running in a pod's apps (or in one app).
    Top {
        pod: String,
        app: Option<String>,
        #[arg(long, default_value = "table")]
        format: Format,
    },
    /// Stream a pod's events.
    Events {
        pod: String,
        /// Print the events so far and stop.
        #[arg(long)]
        no_follow: bool,
        #[arg(long, default_value = "table")]
        format: Format,
    },
    /// Forward a TCP port on the host's loopback to a port in the pod.
    PortForward {
        pod: String,
        /// HOSTPORT:GUESTPORT (HOSTPORT 0 picks a free port).
        ports: String,
    },
    /// Remove pods that have exited.
    Rm {
        #[arg(required = true)]
        pods: Vec<String>,
        /// Stop running pods first.
        #[arg(short, long)]
        force: bool,
    },
    /// Remove every exited pod, after marking pods whose VM died (and the
    /// warm pool's dead VMs).
    Gc,
    /// Everything `gc` removes, then everything `image prune` removes.
    Prune,
    /// The warm pool: VMs booted ahead, which `run` takes when a pod fits
    /// (same hypervisor, memory, vCPUs, kernel, network) instead of booting.
    #[command(subcommand)]
    Pool(PoolCommand),
    /// The OCI images pods run from: import, ls, inspect, rm, prune.
    #[command(subcommand)]
    Image(commands::image::ImageCommand),
    /// Apps added to and removed from a running sandbox pod.
    #[command(subcommand)]
    App(commands::app::AppCommand),
    /// The stage1 guest images: the agent and kernel modules pods boot.
    #[command(subcommand)]
    Stage1(commands::stage1::Stage1Command),
    /// Print a shell's completion script (`make install` installs them):
    /// `source <(host-ctl completion bash)` for this shell.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// (internal) Write host-ctl's manual pages, one per command, into a
    /// directory (`make install` does, under share/man/man1).
    #[command(hide = true)]
    Manpages { dir: PathBuf },
    /// (internal) Run a hypervisor in its filesystem jail.
    #[command(hide = true)]
    VmmJail {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// (internal) Keep a detached pod's monitor alive.
    #[command(hide = true)]
    Keeper {
        #[arg(long, value_enum)]
        start: host_ctl::pod::monitor::spawn::KeeperStart,
        dir: PathBuf,
    },
    /// (internal) Own a detached pod's VM.
    #[command(hide = true)]
    Monitor {
        /// Take over a running VM whose monitor died.
        #[arg(long)]
        adopt: bool,
        dir: PathBuf,
    },
}

#[derive(clap::Args)]
struct LogsArgs {
    pod: String,
    /// One app; all apps when omitted (each line prefixed by its app).
    app: Option<String>,
    /// Keep printing new output until the pod ends.
    #[arg(short, long)]
    follow: bool,
    /// Only the last N lines.
    #[arg(long, value_name = "N")]
    tail: Option<usize>,
    /// Prefix each line with the time it was written.
    #[arg(long)]
    timestamps: bool,
    /// Only one stream.
    #[arg(long, value_enum)]
    stream: Option<Stream>,
}

impl LogsArgs {
    fn options(self) -> (String, commands::logs::Options) {
        let o = commands::logs::Options {
            app: self.app,
            follow: self.follow,
            tail: self.tail,
            timestamps: self.timestamps,
            stream: self.stream,
        };
        (self.pod, o)
    }
}

#[derive(clap::Args)]
struct ExecArgs {
    /// Pass stdin to the command.
    #[arg(short, long)]
    interactive: bool,
    /// Give the command a terminal.
    #[arg(short, long)]
    tty: bool,
    /// Set an environment variable for the command (K=V, or K for
    /// this host's value).
    #[arg(short = 'e', long = "env", value_name = "K=V")]
    env: Vec<String>,
    /// Run as this user (name or uid in the app's root), with this
    /// group, instead of the app's.
    #[arg(short, long, value_name = "USER[:GROUP]")]
    user: Option<String>,
    /// Start in this directory of the app's root.
    #[arg(short, long, value_name = "DIR")]
    workdir: Option<String>,
    /// With -i -t on a terminal, these keys leave the command running and
    /// end exec (docker's spelling: ctrl-p,ctrl-q; empty: none).
    #[arg(long, value_name = "KEYS", default_value = host_ctl::ui::detach_keys::DEFAULT)]
    detach_keys: String,
    pod: String,
    app: String,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

impl ExecArgs {
    fn options(self) -> (String, commands::exec::Options) {
        let o = commands::exec::Options {
            app: self.app,
            argv: self.command,
            env: self.env,
            interactive: self.interactive,
            tty: self.tty,
            user: self.user,
            workdir: self.workdir,
            detach_keys: self.detach_keys,
        };
        (self.pod, o)
    }
}

fn parse_signal(s: &str) -> Result<i32, signals::BadSignal> {
    signals::parse(s)
}

/// A log size of at least 4 KiB.
fn parse_log_size(s: &str) -> Result<u64, String> {
    match parse_size(s)? {
        n if n < 4096 => Err(format!("{s:?} is too small (at least 4KiB)")),
        n => Ok(n),
    }
}

#[derive(clap::Args)]
struct RunArgs {
    #[command(flatten)]
    vm: VmArgs,
    /// Start the pod and return its ID once its agent answers.
    #[arg(short, long)]
    detach: bool,
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
    /// Remove the pod's directory when it ends (not with --detach, and
    /// not once the detach keys left it running).
    #[arg(long, conflicts_with = "detach")]
    rm: bool,
    /// With -i -t on a terminal, these keys leave the pod running, in a
    /// monitor of its own, and end run (docker's spelling: ctrl-p,ctrl-q;
    /// empty: none).
    #[arg(long, value_name = "KEYS", default_value = host_ctl::ui::detach_keys::DEFAULT)]
    detach_keys: String,
    /// Rotate an app's log file (logs/<app>.log) before it grows past this
    /// size: bytes, or with a unit (512KiB, 20MiB, 1GiB).
    #[arg(long, value_name = "SIZE", default_value = "20MiB", value_parser = parse_log_size)]
    log_max_size: u64,
    /// Log files kept per app, the one being written included (as
    /// Docker's max-file): <app>.log, then <app>.log.1 (newest rotated) to
    /// .N-1; older output is deleted. The defaults keep at least the last
    /// 100 MiB.
    #[arg(long, value_name = "N", default_value_t = 6, value_parser = clap::value_parser!(u32).range(2..=1000))]
    log_max_files: u32,
}

/// What a pod's VM is made of.
#[derive(clap::Args)]
struct VmArgs {
    /// A pod manifest (a JSON file), or an image in the image store to run
    /// as a pod of one app (docker's `run IMAGE [COMMAND...]`).
    #[arg(value_name = "MANIFEST|IMAGE")]
    target: String,
    /// With an image: the command, replacing the image's Cmd.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    command: Vec<String>,
    #[command(flatten)]
    image: ImageFlags,
    /// The hypervisor.
    #[arg(long, value_enum, default_value_t = HypervisorKind::Qemu)]
    hypervisor: HypervisorKind,
    /// How the host reaches the guest's vsock.
    #[arg(long, value_enum, default_value_t = VsockMode::Auto)]
    vsock: VsockMode,
    /// The pod's network: none (loopback only), user[,host-loopback]
    /// (user-mode: passt for QEMU, lkvm's own), tap=DEVICE, or
    /// tap,netns=PATH (the namespace's interface, as CNI made it)
    /// [default: the manifest's, else user].
    #[arg(long = "net", value_name = "MODE")]
    net: Option<Network>,
    /// Publish a guest port on the host: [HOSTIP:]HOSTPORT:GUESTPORT[/tcp|udp]
    /// (bound to 127.0.0.1 unless HOSTIP is given).
    #[arg(
        short = 'p',
        long = "publish",
        value_name = "[HOSTIP:]HOSTPORT:GUESTPORT[/PROTO]"
    )]
    publish: Vec<PortMapping>,
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
    #[arg(long, value_enum, default_value_t = AccelRequest::Auto)]
    accel: AccelRequest,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(64..=65536))]
    memory: u32,
    /// Guest vCPUs.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    cpus: u32,
    /// Verbose guest console (kernel messages and agent debug lines).
    #[arg(long)]
    debug: bool,
    /// Boot a gzipped stage1 image: smaller on disk, but slower to boot
    /// (the guest kernel unpacks it; under TCG that costs more than it
    /// saves).
    #[arg(long)]
    gzip_initramfs: bool,
    /// The stage1 image to boot: a digest (or a unique prefix) from
    /// `host-ctl stage1 ls`, or an image file [default: the one for this
    /// agent and kernel, built on first use].
    #[arg(long, value_name = "DIGEST|FILE")]
    stage1: Option<String>,
}

#[derive(Subcommand)]
enum PoolCommand {
    /// Boot the pool's VMs and keep it full; returns once they wait.
    Start(PoolArgs),
    /// The pool's shape and its VMs: booting, waiting or dead.
    Status {
        #[arg(long, default_value = "table")]
        format: Format,
    },
    /// Remove the pool and every VM waiting in it.
    Stop,
    /// Boot VMs until the pool is full (started by `pool start` and `run`).
    #[command(hide = true)]
    Fill,
}

/// The pool's VMs: a pod fits when `run` would give it the same VM.
#[derive(clap::Args)]
struct PoolArgs {
    /// How many VMs wait.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    size: u32,
    /// The hypervisor (QEMU only, for now).
    #[arg(long, value_enum, default_value_t = HypervisorKind::Qemu)]
    hypervisor: HypervisorKind,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(64..=65536))]
    memory: u32,
    /// Guest vCPUs.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    cpus: u32,
    /// The VMs' network: none or user[,host-loopback] [default: what a
    /// pod that does not choose gets].
    #[arg(long = "net", value_name = "MODE")]
    net: Option<Network>,
    #[arg(long, value_enum, default_value_t = AccelRequest::Auto)]
    accel: AccelRequest,
    #[arg(long, value_enum, default_value_t = VsockMode::Auto)]
    vsock: VsockMode,
    /// The guest kernel [default: the newest /boot/vmlinuz-*].
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// The guest agent binary [default: found next to host-ctl].
    #[arg(long)]
    agent: Option<PathBuf>,
    /// Seconds a VM may take to boot.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    boot_timeout: u64,
}

impl PoolArgs {
    fn spec(self) -> PoolSpec {
        PoolSpec {
            size: self.size,
            hypervisor: self.hypervisor,
            memory_mib: self.memory,
            cpus: self.cpus,
            accel: self.accel,
            vsock: self.vsock,
            network: self.net,
            kernel: self.kernel,
            modules_dir: None,
            agent: self.agent,
            stage1: None,
            debug: false,
            boot_timeout_secs: self.boot_timeout,
        }
    }
}

/// docker and podman's flags for the app of `run IMAGE`.
#[derive(clap::Args)]
struct ImageFlags {
    /// The pod's name (and hostname); every command accepts it.
    #[arg(long)]
    name: Option<String>,
    /// Set an environment variable (K=V, or K for the host's value).
    #[arg(short = 'e', long = "env", value_name = "K=V")]
    env: Vec<String>,
    /// Share a host directory: HOSTDIR:PATH[:ro].
    #[arg(short = 'v', long = "volume", value_name = "HOSTDIR:PATH[:ro]")]
    volumes: Vec<String>,
    /// The working directory in the app's root.
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    workdir: Option<String>,
    /// The user (and group) to run as: USER[:GROUP], names or ids.
    #[arg(short = 'u', long = "user", value_name = "USER[:GROUP]")]
    user: Option<String>,
    /// Replace the image's Entrypoint (and drop its Cmd).
    #[arg(long, value_name = "PROGRAM")]
    entrypoint: Option<String>,
    /// Send this terminal's stdin to the app (an image's app gets a stdin;
    /// with a manifest, the one app with "stdin": true).
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Run the image's app on a terminal of its own (with -i, this
    /// terminal's keys reach it, in raw mode).
    #[arg(short = 't', long)]
    tty: bool,
}

impl VmArgs {
    /// A manifest when TARGET is a file, else an image.
    fn source(&mut self) -> anyhow::Result<PodSource> {
        let path = PathBuf::from(&self.target);
        let i = &self.image;
        let image_flags = !i.env.is_empty()
            || !i.volumes.is_empty()
            || i.workdir.is_some()
            || i.user.is_some()
            || i.entrypoint.is_some()
            || i.tty;
        if path.is_file() {
            if !self.command.is_empty() || image_flags {
                anyhow::bail!(
                    "{} is a manifest: a command, -e, -v, -w, -u, -t and --entrypoint go with an image (put them in the manifest; -t is an app's \"terminal\": true)",
                    path.display()
                );
            }
            return Ok(PodSource::Manifest(path));
        }
        if self.target.ends_with(".json") || self.target.contains("/./") {
            anyhow::bail!("no manifest {}", path.display());
        }
        Ok(PodSource::Image(ImageRun {
            image: self.target.clone(),
            command: std::mem::take(&mut self.command),
            entrypoint: i.entrypoint.clone(),
            env: i.env.clone(),
            volumes: i.volumes.clone(),
            workdir: i.workdir.clone(),
            user: i.user.clone(),
            hostname: i.name.clone(),
            stdin: i.interactive,
            terminal: i.tty,
        }))
    }

    fn options(mut self, state_dir: PathBuf) -> anyhow::Result<RunOptions> {
        let source = self.source()?;
        Ok(RunOptions {
            name: self.image.name.clone(),
            kernel: self.kernel,
            modules_dir: self.modules_dir,
            agent: self.agent,
            accel: self.accel,
            hypervisor: self.hypervisor,
            vsock: self.vsock,
            memory_mib: self.memory,
            cpus: self.cpus,
            debug: self.debug,
            gzip_initramfs: self.gzip_initramfs,
            stage1: self.stage1,
            network: self.net,
            publish: self.publish,
            ..RunOptions::new(source, state_dir)
        })
    }
}

/// `host-ctl run`: its flags as options.
async fn run(a: RunArgs, state: PathBuf, verbosity: Verbosity) -> anyhow::Result<i32> {
    let interactive = a.vm.image.interactive;
    let options = RunOptions {
        boot_timeout: Duration::from_secs(a.boot_timeout),
        grace: Duration::from_secs(a.grace),
        linger: Duration::from_secs(a.linger),
        detach: a.detach,
        log_rotation: Rotation {
            max_size: a.log_max_size,
            max_files: a.log_max_files - 1,
        },
        verbosity,
        ..a.vm.options(state)?
    };
    let attached = commands::run::Attached {
        timings: a.timings,
        rm: a.rm,
        interactive: interactive && !a.detach,
        detach_keys: host_ctl::ui::detach_keys::DetachKeys::parse(&a.detach_keys)
            .map_err(|e| anyhow::anyhow!("--detach-keys: {e}"))?,
    };
    commands::run::run(options, attached).await
}

async fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    let verbosity = cli.verbosity();
    let state = cli.state_dir;
    match cli.command {
        Command::Run(a) => run(a, state, verbosity).await,
        Command::Args(a) => commands::args::run(&a.options(state)?),
        Command::Info { format } => commands::info::run(&state, format),
        Command::List { format } => commands::list::run(&state, format),
        Command::Inspect { pods } => commands::inspect::run(&state, &pods).await,
        Command::Wait { pods } => commands::wait::run(&state, &pods).await,
        Command::Status { pod, format } => commands::status::run(&state, &pod, format).await,
        Command::Logs(a) => {
            let (pod, o) = a.options();
            commands::logs::run(&state, &pod, o).await
        }
        Command::Exec(a) => {
            let (pod, o) = a.options();
            commands::exec::run(&state, &pod, o).await
        }
        Command::Attach {
            pod,
            app,
            detach_keys,
        } => commands::attach::run(&state, &pod, &app, &detach_keys).await,
        Command::Cp { src, dest } => commands::cp::run(&state, &src, &dest).await,
        Command::Kill { pod, app, signal } => {
            commands::kill::run(&state, &pod, app.as_deref(), signal).await
        }
        Command::Stop { pod, timeout } => {
            commands::stop::run(&state, &pod, Duration::from_secs(timeout)).await
        }
        Command::Stats { pod, format } => commands::stats::run(&state, &pod, format).await,
        Command::Top { pod, app, format } => {
            commands::top::run(&state, &pod, app.as_deref(), format).await
        }
        Command::Events {
            pod,
            no_follow,
            format,
        } => commands::events::run(&state, &pod, !no_follow, format).await,
        Command::PortForward { pod, ports } => {
            commands::port_forward::run(&state, &pod, &ports).await
        }
        Command::Rm { pods, force } => commands::rm::rm(&state, &pods, force).await,
        Command::Gc => commands::rm::gc(&state),
        Command::Prune => commands::prune::run(&state),
        Command::Pool(c) => match c {
            PoolCommand::Start(a) => commands::pool::start(&state, a.spec()),
            PoolCommand::Status { format } => commands::pool::status(&state, format),
            PoolCommand::Stop => commands::pool::stop(&state),
            PoolCommand::Fill => commands::pool::fill(&state).await,
        },
        Command::Image(c) => commands::image::run(&state, c),
        Command::App(c) => commands::app::run(&state, c).await,
        Command::Stage1(c) => commands::stage1::run(&state, c),
        Command::Completion { shell } => commands::generate::completion(&Cli::command(), shell),
        Command::Manpages { dir } => commands::generate::manpages(&Cli::command(), &dir),
        Command::VmmJail { args } => commands::vmm_jail::run(&args),
        Command::Keeper { start, dir } => commands::keeper::run(&dir, start).await,
        Command::Monitor { adopt, dir } => commands::monitor::run(&dir, adopt).await,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    host_ctl::ui::progress::init(cli.verbosity());
    // One thread: child processes get PR_SET_PDEATHSIG from the thread that
    // spawned them, which must live as long as host-ctl.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("host-ctl: error: starting the async runtime: {e}");
            return ExitCode::from(EXIT_HOST_ERROR as u8);
        }
    };
    let result = runtime.block_on(dispatch(cli));
    // A task blocked reading stdin must not keep host-ctl from exiting.
    runtime.shutdown_background();
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("host-ctl: error: {e:#}");
            ExitCode::from(EXIT_HOST_ERROR as u8)
        }
    }
}
