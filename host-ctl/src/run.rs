//! `host-ctl run`: a pod from manifest to exit code.
//!
//! Validate, build the initramfs, start vhost-device-vsock and QEMU, connect
//! to the agent, print the apps' output, wait for them, shut the VM down and
//! exit with the first failing app's status (manifest order) or 0.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use kvmpod_api::config::AgentConfig;
use kvmpod_api::layout::DEFAULT_VSOCK_PORT;
use kvmpod_api::manifest::{PodManifest, VolumeKind};
use kvmpod_api::protocol::agent_ttrpc::AgentClient;
use kvmpod_api::protocol::{
    AppState, LogsRequest, PodState, PodStatus, ShutdownRequest, WaitRequest,
};
use rootfs_builder::{build_archive, write_initramfs, Compression, InitramfsSpec, KernelModules};

use crate::accel::{self, AccelRequest};
use crate::agent_client::{self, ConnectError};
use crate::child::{tail, Supervised};
use crate::console;
use crate::output::Printer;
use crate::poddir::PodDir;
use crate::vmspec::{self, VmSpec, Vsock};
use crate::{bootkernel, qemu, tools};

/// Exit status of host-ctl when it fails itself (not an app).
pub const EXIT_HOST_ERROR: i32 = 125;

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub manifest: PathBuf,
    pub state_dir: PathBuf,
    pub kernel: Option<PathBuf>,
    pub modules_dir: Option<PathBuf>,
    pub agent: Option<PathBuf>,
    pub accel: AccelRequest,
    pub memory_mib: u32,
    pub cpus: u32,
    pub boot_timeout: Duration,
    pub grace: Duration,
    pub linger: Duration,
    pub timings: bool,
    pub debug: bool,
    pub rm: bool,
}

/// The kernel modules a pod needs, before their dependencies.
pub fn needed_modules(pod: &PodManifest) -> Vec<String> {
    let mut m = vec![
        "virtio_pci".to_string(),
        "vmw_vsock_virtio_transport".to_string(),
    ];
    if pod.volumes.iter().any(|v| v.kind == VolumeKind::Host) {
        m.push("9pnet_virtio".into());
        m.push("9p".into());
    }
    m
}

/// Host-side moments, for `--timings`.
struct HostClock {
    start: Instant,
    marks: Vec<(&'static str, Instant)>,
}

impl HostClock {
    fn mark(&mut self, name: &'static str) {
        self.marks.push((name, Instant::now()));
    }
}

pub async fn run(opts: RunOptions) -> Result<i32> {
    let mut clock = HostClock {
        start: Instant::now(),
        marks: Vec::new(),
    };
    // Everything that can be refused is refused before any VM starts.
    let pod = kvmpod_api::validate::load(&opts.manifest)?;
    let qemu_bin = tools::qemu()?;
    let vhost_bin = tools::vhost_device_vsock()?;
    let agent = tools::agent(opts.agent.as_deref())?;
    let kernel = tools::kernel(opts.kernel.as_deref(), opts.modules_dir.as_deref())?;
    let choice = accel::choose(opts.accel).map_err(|e| anyhow!(e))?;
    eprintln!(
        "host-ctl: accelerator {}: {}",
        choice.accel.name(),
        choice.reason
    );
    clock.mark("validated");

    let dir = PodDir::create(&opts.state_dir)?;
    let result = run_in(
        &opts,
        &pod,
        &dir,
        &qemu_bin,
        &vhost_bin,
        &agent,
        &kernel,
        choice.accel,
        &mut clock,
    )
    .await;
    dir.tidy();
    if opts.rm {
        if let Err(e) = dir.remove() {
            eprintln!("host-ctl: removing {}: {e}", dir.path.display());
        }
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn run_in(
    opts: &RunOptions,
    pod: &PodManifest,
    dir: &PodDir,
    qemu_bin: &std::path::Path,
    vhost_bin: &std::path::Path,
    agent: &std::path::Path,
    kernel: &tools::Kernel,
    accel: accel::Accel,
    clock: &mut HostClock,
) -> Result<i32> {
    std::fs::write(dir.manifest(), serde_json::to_vec_pretty(pod)?)
        .with_context(|| format!("writing {}", dir.manifest().display()))?;

    let config = AgentConfig {
        linger_secs: opts.linger.as_secs(),
        grace_ms: u32::try_from(opts.grace.as_millis()).unwrap_or(u32::MAX),
        debug: opts.debug,
        ..AgentConfig::default()
    };
    let spec = InitramfsSpec {
        agent: agent.to_path_buf(),
        manifest: pod.clone(),
        config,
        modules: kernel.modules.as_ref().map(|d| KernelModules {
            dir: d.clone(),
            wanted: needed_modules(pod),
        }),
    };
    let archive = build_archive(&spec).context("building the initramfs")?;
    write_initramfs(&archive, &dir.initramfs(), Compression::Gzip)
        .context("writing the initramfs")?;
    clock.mark("initramfs-built");

    let vhost_args = vec![
        "--vm".to_string(),
        format!(
            "guest-cid=3,socket={},uds-path={}",
            dir.vhost_socket().display(),
            dir.vsock_socket().display()
        ),
    ];
    let mut vhost = Supervised::spawn(
        "vhost-device-vsock",
        vhost_bin,
        &vhost_args,
        &dir.vhost_log(),
    )?;
    wait_for_socket(&mut vhost, &dir.vhost_socket(), Duration::from_secs(5)).await?;

    let boot = bootkernel::boot_kernel(&kernel.image, &opts.state_dir.join("cache"));
    clock.mark("kernel-ready");
    let vm_spec = VmSpec {
        name: dir.id.clone(),
        kernel: boot.path.clone(),
        initrd: dir.initramfs(),
        cmdline: vmspec::kernel_cmdline(opts.debug),
        memory_mib: opts.memory_mib,
        cpus: opts.cpus,
        accel,
        console_log: dir.console_log(),
        shares: vmspec::shares(pod),
        vsock: Vsock::VhostUser {
            socket: dir.vhost_socket(),
        },
    };
    let mut vm = Supervised::spawn("QEMU", qemu_bin, &qemu::argv(&vm_spec), &dir.qemu_log())?;
    clock.mark("vm-started");

    let until = Instant::now() + opts.boot_timeout;
    let client = match agent_client::connect(
        &dir.vsock_socket(),
        DEFAULT_VSOCK_PORT,
        &mut vm,
        until,
    )
    .await
    {
        Ok(c) => c,
        Err(e) => {
            vm.kill().await;
            vhost.kill().await;
            return Err(boot_failure(dir, &vm, e, opts.boot_timeout));
        }
    };
    clock.mark("agent-answered");

    let outcome = attached(&client, pod, &mut vm, opts).await;
    clock.mark("pod-finished");

    // Shut down whatever happened above; a lost reply is expected when the
    // guest powers off first.
    let mut req = ShutdownRequest::new();
    req.grace_ms = u32::try_from(opts.grace.as_millis()).unwrap_or(u32::MAX);
    let _ = client
        .shutdown(agent_client::deadline(Duration::from_secs(5)), &req)
        .await;
    let powered_off = tokio::select! {
        exit = vm.wait_for(opts.grace + Duration::from_secs(15)) => {
            if exit.is_none() {
                eprintln!("host-ctl: the VM did not power off; killing it");
            }
            exit.is_some()
        }
        _ = tokio::signal::ctrl_c() => {
            eprintln!("host-ctl: interrupted again; killing the VM");
            false
        }
    };
    if !powered_off {
        vm.kill().await;
    }
    vhost.kill().await;
    clock.mark("vm-exited");

    let (status, code) = outcome?;
    report_failures(&status);
    if opts.timings {
        print_timings(&status, clock);
    }
    Ok(code)
}

/// Streams the apps' output and waits for the pod; Ctrl-C stops it.
async fn attached(
    client: &AgentClient,
    pod: &PodManifest,
    vm: &mut Supervised,
    opts: &RunOptions,
) -> Result<(PodStatus, i32)> {
    let mut printer = Printer::new(pod.apps.iter().map(|a| a.name.as_str()));
    let logs_client = client.clone();
    let logs = tokio::spawn(async move {
        let mut req = LogsRequest::new();
        req.follow = true;
        let mut rx = logs_client.logs(agent_client::no_deadline(), &req).await?;
        while let Some(chunk) = rx.recv().await? {
            printer.print(&chunk);
        }
        printer.flush();
        Ok::<_, ttrpc::Error>(())
    });

    let wait_req = WaitRequest::new();
    let wait = client.wait(agent_client::no_deadline(), &wait_req);
    let status = tokio::select! {
        st = wait => st.context("waiting for the pod")?,
        _ = tokio::signal::ctrl_c() => {
            eprintln!(
                "host-ctl: interrupted; stopping the pod (apps get {}s after SIGTERM)",
                opts.grace.as_secs()
            );
            logs.abort();
            return Ok((PodStatus::new(), 130));
        }
        exit = vm.wait_for(Duration::MAX) => {
            logs.abort();
            bail!(
                "the VM exited ({}) before the pod finished; console tail:\n{}",
                exit.map(|s| s.to_string()).unwrap_or_else(|| "unknown status".into()),
                tail(&vm.log, 5)
            );
        }
    };
    // Every app is done; its output is complete in the agent's buffer and
    // the stream ends once it is delivered.
    match tokio::time::timeout(Duration::from_secs(10), logs).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => eprintln!("host-ctl: app output stream: {e}"),
        Ok(Err(_)) | Err(_) => eprintln!("host-ctl: app output did not finish streaming"),
    }
    let code = exit_code(&status);
    Ok((status, code))
}

/// The first non-zero app exit status, in manifest order, else 0.
pub fn exit_code(status: &PodStatus) -> i32 {
    if status.state.enum_value_or_default() == PodState::POD_STATE_FAILED
        && status.apps.iter().all(|a| a.exit_code == 0)
    {
        return EXIT_HOST_ERROR;
    }
    status
        .apps
        .iter()
        .map(|a| a.exit_code)
        .find(|&c| c != 0)
        .unwrap_or(0)
}

fn report_failures(status: &PodStatus) {
    if status.state.enum_value_or_default() == PodState::POD_STATE_FAILED {
        eprintln!("host-ctl: the pod could not be set up: {}", status.error);
    }
    for app in &status.apps {
        if let Some(line) = app_outcome(app) {
            eprintln!("host-ctl: {line}");
        }
    }
}

/// A line about an app that did not succeed, or None if it did.
pub fn app_outcome(app: &kvmpod_api::protocol::AppStatus) -> Option<String> {
    match app.state.enum_value_or_default() {
        AppState::APP_STATE_FAILED => Some(format!(
            "app {:?} could not start (status {}): {}",
            app.name, app.exit_code, app.error
        )),
        AppState::APP_STATE_EXITED if app.signal != 0 => {
            let name = nix::sys::signal::Signal::try_from(app.signal)
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|_| format!("signal {}", app.signal));
            Some(format!(
                "app {:?} was killed by {name} (status {})",
                app.name, app.exit_code
            ))
        }
        AppState::APP_STATE_EXITED if app.exit_code != 0 => Some(format!(
            "app {:?} exited with status {}",
            app.name, app.exit_code
        )),
        _ => None,
    }
}

fn boot_failure(
    dir: &PodDir,
    vm: &Supervised,
    e: ConnectError,
    timeout: Duration,
) -> anyhow::Error {
    let console_text = std::fs::read_to_string(dir.console_log()).unwrap_or_default();
    let progress = console::progress(&console_text);
    let what = match e {
        ConnectError::VmExited(status) => format!(
            "the VM exited ({status}) before its agent answered; QEMU said:\n{}",
            indent(&vm.log_tail(10))
        ),
        ConnectError::Timeout(last) => format!(
            "the agent did not answer within {}s (last error: {last})",
            timeout.as_secs()
        ),
    };
    let mut msg = format!("{what}\nthe guest got to: {}", progress.stage);
    if let Some(f) = progress.fatal {
        msg.push_str(&format!("\nthe agent reported: {f}"));
    }
    msg.push_str(&format!(
        "\nconsole ({}), last lines:\n{}",
        dir.console_log().display(),
        indent(&tail(&dir.console_log(), 15))
    ));
    anyhow!(msg)
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

async fn wait_for_socket(
    backend: &mut Supervised,
    path: &std::path::Path,
    limit: Duration,
) -> Result<()> {
    let until = Instant::now() + limit;
    while !path.exists() {
        if let Some(status) = backend.exited() {
            bail!(
                "{} exited ({status}) before creating {}:\n{}",
                backend.what,
                path.display(),
                indent(&backend.log_tail(10))
            );
        }
        if Instant::now() >= until {
            bail!(
                "{} did not create {} within {limit:?}",
                backend.what,
                path.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

fn print_timings(status: &PodStatus, clock: &HostClock) {
    eprintln!("host-ctl: boot timeline (guest CLOCK_BOOTTIME, from kernel start):");
    for e in &status.timeline {
        eprintln!("  {:>9.3}s  {}", e.boottime_ns as f64 / 1e9, e.name);
    }
    eprintln!("host-ctl: host timeline (wall clock, from host-ctl start):");
    for (name, at) in &clock.marks {
        eprintln!(
            "  {:>9.3}s  {name}",
            at.duration_since(clock.start).as_secs_f64()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvmpod_api::protocol::AppStatus;

    fn status(codes: &[i32]) -> PodStatus {
        let mut s = PodStatus::new();
        s.state = PodState::POD_STATE_EXITED.into();
        s.apps = codes
            .iter()
            .map(|&c| {
                let mut a = AppStatus::new();
                a.exit_code = c;
                a
            })
            .collect();
        s
    }

    #[test]
    fn first_failing_app_in_manifest_order_decides() {
        assert_eq!(exit_code(&status(&[0, 0])), 0);
        assert_eq!(exit_code(&status(&[0, 7, 3])), 7);
        let mut failed = status(&[0]);
        failed.state = PodState::POD_STATE_FAILED.into();
        assert_eq!(exit_code(&failed), EXIT_HOST_ERROR);
    }

    #[test]
    fn outcomes_name_codes_and_signals() {
        let mut a = AppStatus::new();
        a.name = "web".into();
        a.state = AppState::APP_STATE_EXITED.into();
        assert_eq!(app_outcome(&a), None);
        a.exit_code = 7;
        assert_eq!(app_outcome(&a).unwrap(), "app \"web\" exited with status 7");
        a.exit_code = 143;
        a.signal = 15;
        assert_eq!(
            app_outcome(&a).unwrap(),
            "app \"web\" was killed by SIGTERM (status 143)"
        );
        a.state = AppState::APP_STATE_FAILED.into();
        a.exit_code = 127;
        a.error = "\"x\" was not found".into();
        assert!(app_outcome(&a)
            .unwrap()
            .contains("could not start (status 127)"));
    }

    #[test]
    fn modules_follow_the_volumes() {
        let pod: PodManifest = kvmpod_api::validate::parse(
            r#"{"volumes": [{"name": "s", "kind": "empty"}], "apps": [{"name": "a", "rootfs": "/", "exec": ["x"]}]}"#,
        )
        .unwrap();
        assert_eq!(
            needed_modules(&pod),
            ["virtio_pci", "vmw_vsock_virtio_transport"]
        );
        let pod: PodManifest = kvmpod_api::validate::parse(
            r#"{"volumes": [{"name": "h", "kind": "host", "source": "/"}], "apps": [{"name": "a", "rootfs": "/", "exec": ["x"]}]}"#,
        )
        .unwrap();
        assert!(needed_modules(&pod).contains(&"9p".to_string()));
    }
}
