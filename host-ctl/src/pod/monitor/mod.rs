//! The monitor: the one process that owns a pod's VM while it runs.
//!
//! For `host-ctl run` it is the run process itself; for `run --detach` it
//! is a process of its own session, and if it dies, the next host-ctl
//! command starts another that adopts the VM. It keeps vhost-device-vsock
//! alive, copies every app's output into the pod's log files (and, when
//! attached, to the terminal) through one collector per app, which
//! reconnects by itself and resumes where its file ends, waits for the pod
//! to end, records how it ended and ends the VM. SIGINT or SIGTERM stops
//! the pod gracefully; a second one kills the VM.

mod added;
mod end;
pub mod keeper;
mod publish;
pub mod spawn;
mod supervise;

use std::fs::File;
use std::time::{Duration, Instant, SystemTime};

use kvmpod_api::layout::DEFAULT_VSOCK_PORT;
use kvmpod_api::manifest::PodManifest;
use kvmpod_api::protocol::PodStatus;
use nix::fcntl::Flock;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use super::dir::PodDir;
use super::record::{self, PodRecord, State};
use super::store;
use super::vm_launch::VmLaunch;
use super::PodError;
use crate::agent::{self, console, AgentClient, Endpoint};
use crate::logs::Rotation;
use crate::ui::text::error_chain;
use crate::vmm::process::ProcRef;
use crate::vmm::{Supervised, VmProcesses};
use end::{boot_failure, record_end};

type Result<T> = std::result::Result<T, PodError>;

/// How a pod's run ended.
pub struct Outcome {
    pub record: PodRecord,
    /// The agent's last status, when it could be had.
    pub status: Option<PodStatus>,
    pub interrupted: bool,
}

pub struct Monitor {
    pub dir: PodDir,
    pod: PodManifest,
    vm: VmProcesses,
    client: AgentClient,
    endpoint: Endpoint,
    /// Wall-clock time of the guest's boot, for log timestamps.
    guest_boot: SystemTime,
    grace: Duration,
    log_rotation: Rotation,
    /// Ports the monitor relays itself (see [`publish`]).
    _published: Option<publish::Publisher>,
    _lock: Flock<File>,
}

/// Counts SIGINT and SIGTERM: the first stops the pod, the second kills it.
pub fn interrupts() -> Result<watch::Receiver<u32>> {
    let (tx, rx) = watch::channel(0u32);
    let io = |source| PodError::Io {
        what: "handling signals in",
        path: "host-ctl".into(),
        source,
    };
    let mut int = signal(SignalKind::interrupt()).map_err(io)?;
    let mut term = signal(SignalKind::terminate()).map_err(io)?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            tx.send_modify(|n| *n += 1);
        }
    });
    Ok(rx)
}

fn already_monitored(dir: &PodDir) -> PodError {
    PodError::Invalid(format!("pod {} already has a monitor", dir.id))
}

impl Monitor {
    /// Starts a prepared pod's VM and connects to its agent. On failure the
    /// record says why and the VM is gone.
    pub async fn boot(
        dir: PodDir,
        pod: PodManifest,
        launch: &VmLaunch,
        die_with_parent: bool,
    ) -> Result<Monitor> {
        let Some(lock) = record::take_monitor_lock(&dir)? else {
            return Err(already_monitored(&dir));
        };
        match Self::boot_locked(&dir, launch, die_with_parent).await {
            Ok((vm, client, guest_boot, published)) => {
                let r = record::update(&dir, |r| {
                    r.state = State::Running;
                    r.started = Some(record::now());
                    r.monitor = ProcRef::of(std::process::id());
                    r.vm = vm.vm.proc_ref();
                    r.vsock_backend = vm.vsock_backend.as_ref().and_then(Supervised::proc_ref);
                    r.net_backend = vm.net_backend.as_ref().and_then(Supervised::proc_ref);
                });
                if let Err(e) = r {
                    eprintln!("host-ctl: recording the pod as running: {e}");
                }
                Ok(Monitor {
                    dir,
                    pod,
                    vm,
                    client,
                    endpoint: launch.endpoint.clone(),
                    guest_boot,
                    grace: Duration::from_millis(u64::from(launch.grace_ms)),
                    log_rotation: launch.log_rotation,
                    _published: published,
                    _lock: lock,
                })
            }
            Err(e) => {
                let _ = record_end(&dir, None, format!("boot failed: {}", error_chain(&e)));
                store::release(&dir);
                Err(e)
            }
        }
    }

    async fn boot_locked(
        dir: &PodDir,
        launch: &VmLaunch,
        die_with_parent: bool,
    ) -> Result<(
        VmProcesses,
        AgentClient,
        SystemTime,
        Option<publish::Publisher>,
    )> {
        let mut vm = launch.start(dir, die_with_parent).await?;
        let timeout = Duration::from_secs(launch.boot_timeout_secs);
        let until = Instant::now() + timeout;
        console::wait_until_ready(&dir.console_log(), &mut || vm.vm.exited().is_some(), until)
            .await;
        let connected = agent::connect_with_status(
            &launch.endpoint,
            DEFAULT_VSOCK_PORT,
            &mut || vm.vm.exited(),
            until,
        )
        .await;
        let (client, status) = match connected {
            Ok(c) => c,
            Err(e) => {
                vm.kill().await;
                return Err(boot_failure(dir, &vm.vm, e, timeout));
            }
        };
        match publish(launch).await {
            Ok(published) => {
                let boot = guest_boot_time(&status);
                Ok((vm, client, boot, published))
            }
            Err(e) => {
                vm.kill().await;
                Err(e)
            }
        }
    }

    /// Takes over a running pod whose monitor died, or a VM of the warm
    /// pool its pod just claimed (still `prepared`: it runs from now).
    pub async fn adopt(dir: PodDir, adoption: Adoption) -> Result<Monitor> {
        let Some(lock) = record::take_monitor_lock(&dir)? else {
            return Err(already_monitored(&dir));
        };
        let rec = record::read(&dir)?;
        let launch = VmLaunch::read(&dir)?;
        let pod = read_manifest(&dir)?;
        let mut vm = match adopt_processes(&dir, &rec, &launch) {
            Ok(vm) => vm,
            Err(e) => {
                let reason = format!("its monitor died and then its VM: {}", error_chain(&e));
                let _ = record_end(&dir, None, reason);
                return Err(e);
            }
        };
        let until = Instant::now() + adoption.agent_wait();
        let connected = agent::connect_with_status(
            &launch.endpoint,
            DEFAULT_VSOCK_PORT,
            &mut || vm.vm.exited(),
            until,
        )
        .await;
        let Ok((client, status)) = connected else {
            vm.kill().await;
            let _ = record_end(&dir, None, adoption.silent_agent().to_string());
            return Err(PodError::NotRunning(format!(
                "pod {}: the agent does not answer; the VM was killed",
                dir.id
            )));
        };
        let published = match publish(&launch).await {
            Ok(p) => p,
            Err(e) => {
                vm.kill().await;
                let _ = record_end(
                    &dir,
                    None,
                    format!("re-publishing its ports: {}", error_chain(&e)),
                );
                store::release(&dir);
                return Err(e);
            }
        };
        record::update(&dir, |r| {
            r.monitor = ProcRef::of(std::process::id());
            if r.state == State::Prepared {
                r.state = State::Running;
                r.started = Some(record::now());
            }
        })?;
        let guest_boot = guest_boot_time(&status);
        Ok(Monitor {
            dir,
            pod,
            vm,
            client,
            endpoint: launch.endpoint.clone(),
            guest_boot,
            grace: Duration::from_millis(u64::from(launch.grace_ms)),
            log_rotation: launch.log_rotation,
            _published: published,
            _lock: lock,
        })
    }
}

/// Whose VM a monitor adopts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adoption {
    /// A pod whose monitor died: its agent may be busy for a while.
    Orphan,
    /// A pool VM its pod just claimed, whose agent said on the console
    /// that it serves: it answers at once, or it will not.
    Claimed,
}

impl Adoption {
    /// How long the agent may take to answer.
    fn agent_wait(self) -> Duration {
        match self {
            Adoption::Orphan => Duration::from_secs(30),
            Adoption::Claimed => Duration::from_secs(5),
        }
    }

    /// The pod's end when it does not.
    fn silent_agent(self) -> &'static str {
        match self {
            Adoption::Orphan => "its monitor died and its agent stopped answering",
            Adoption::Claimed => "the agent of the pool VM it claimed did not answer",
        }
    }
}

/// The ports this monitor relays, bound now; none for most pods.
async fn publish(launch: &VmLaunch) -> Result<Option<publish::Publisher>> {
    if launch.relayed_ports.is_empty() {
        return Ok(None);
    }
    publish::Publisher::start(&launch.relayed_ports, &launch.endpoint)
        .await
        .map(Some)
}

/// The validated manifest kept in the pod's directory.
pub fn read_manifest(dir: &PodDir) -> Result<PodManifest> {
    let path = dir.manifest();
    let text = std::fs::read(&path).map_err(|source| PodError::Io {
        what: "reading",
        path: path.clone(),
        source,
    })?;
    serde_json::from_slice(&text).map_err(|source| PodError::BadFile { path, source })
}

/// Watches the processes of a VM started by a monitor that died.
fn adopt_processes(dir: &PodDir, rec: &PodRecord, launch: &VmLaunch) -> Result<VmProcesses> {
    let Some(vm_ref) = rec.vm else {
        return Err(PodError::NotRunning(format!(
            "pod {} has no VM to adopt",
            dir.id
        )));
    };
    let logs = launch.logs(dir);
    let what = crate::vmm::hypervisor(launch.hypervisor).display_name();
    Ok(VmProcesses {
        vm: Supervised::adopt(what, vm_ref, &logs.vm)?,
        vsock_backend: rec
            .vsock_backend
            .map(|b| Supervised::adopt("vhost-device-vsock", b, &logs.vsock_backend))
            .transpose()?,
        net_backend: rec
            .net_backend
            .map(|b| Supervised::adopt("passt", b, &logs.net_backend))
            .transpose()?,
    })
}

/// The guest's boot in wall-clock time: now minus its uptime (from a
/// status just received).
fn guest_boot_time(status: &PodStatus) -> SystemTime {
    SystemTime::now() - Duration::from_nanos(status.now_ns)
}
