//! The monitor: the one process that owns a pod's VM while it runs.
//!
//! For `host-ctl run` it is the run process itself; for `run --detach` it
//! is a process of its own session, and if it dies, the next host-ctl
//! command starts another that adopts the VM. It keeps vhost-device-vsock
//! alive, copies every app's output into the pod's log files (and, when
//! attached, to the terminal), waits for the pod to end, records how it
//! ended and powers the VM off. SIGINT or SIGTERM stops the pod gracefully;
//! a second one kills the VM.

use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Result};
use kvmpod_api::layout::DEFAULT_VSOCK_PORT;
use kvmpod_api::manifest::PodManifest;
use kvmpod_api::protocol::agent_ttrpc::AgentClient;
use kvmpod_api::protocol::{
    LogStream, LogsRequest, PodState, PodStatus, ShutdownRequest, StatusRequest, WaitRequest,
};
use nix::fcntl::Flock;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::agent_client::{self, ConnectError};
use crate::child::{tail, Supervised};
use crate::console;
use crate::hostlog::{self, Record, Stream};
use crate::launch::{self, indent, Launch, Vm};
use crate::output::Printer;
use crate::poddir::PodDir;
use crate::record::{self, AppSummary, PodRecord, State};

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
    vm: Vm,
    client: AgentClient,
    endpoint: crate::vsock::Endpoint,
    /// Wall-clock time of the guest's boot, for log timestamps.
    guest_boot: SystemTime,
    grace: Duration,
    _lock: Flock<File>,
}

/// Counts SIGINT and SIGTERM: the first stops the pod, the second kills it.
pub fn interrupts() -> Result<watch::Receiver<u32>> {
    let (tx, rx) = watch::channel(0u32);
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
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

fn summaries(status: &PodStatus) -> Vec<AppSummary> {
    status
        .apps
        .iter()
        .map(|a| {
            let state = a.state.enum_value_or_default();
            let done = state.is_done();
            AppSummary {
                name: a.name.clone(),
                state: state.name().into(),
                exit_code: done.then_some(a.exit_code),
                signal: a.signal,
                error: a.error.clone(),
                restarts: a.restarts,
            }
        })
        .collect()
}

/// Records the pod's end (once: an exited record is never rewritten).
fn record_end(dir: &Path, status: Option<&PodStatus>, reason: String) -> Result<PodRecord> {
    record::update(dir, |r| {
        if r.state == State::Exited {
            return;
        }
        r.state = State::Exited;
        r.finished = Some(record::now());
        if let Some(st) = status {
            r.apps = summaries(st);
            r.timeline = st
                .timeline
                .iter()
                .map(|e| record::TimelineEntry {
                    name: e.name.clone(),
                    seconds: e.boottime_ns as f64 / 1e9,
                })
                .collect();
        }
        let reason = match (&r.stop_requested, status) {
            (Some(_), _) => "stopped by host-ctl stop".to_string(),
            (None, Some(st)) if st.state.enum_value_or_default() == PodState::POD_STATE_FAILED => {
                format!("pod setup failed: {}", st.error)
            }
            _ => reason,
        };
        r.exit_reason = Some(reason);
    })
}

impl Monitor {
    /// Starts a prepared pod's VM and connects to its agent. On failure the
    /// record says why and the VM is gone.
    pub async fn boot(
        dir: PodDir,
        pod: PodManifest,
        launch: &Launch,
        die_with_parent: bool,
    ) -> Result<Monitor> {
        let Some(lock) = record::take_monitor_lock(&dir.path)? else {
            bail!("pod {} already has a monitor", dir.id);
        };
        let result = Self::boot_locked(&dir, launch, die_with_parent).await;
        match result {
            Ok((vm, client, guest_boot)) => {
                let r = record::update(&dir.path, |r| {
                    r.state = State::Running;
                    r.started = Some(record::now());
                    r.monitor = crate::record::ProcRef::of(std::process::id());
                    r.vm = vm.vm.proc_ref();
                    r.vsock_backend = vm.vhost.as_ref().and_then(Supervised::proc_ref);
                });
                if let Err(e) = r {
                    eprintln!("host-ctl: recording the pod as running: {e:#}");
                }
                Ok(Monitor {
                    dir,
                    pod,
                    vm,
                    client,
                    endpoint: launch.endpoint.clone(),
                    guest_boot,
                    grace: Duration::from_millis(u64::from(launch.grace_ms)),
                    _lock: lock,
                })
            }
            Err(e) => {
                let msg = format!("{e:#}");
                let _ = record_end(&dir.path, None, format!("boot failed: {msg}"));
                launch::release(&dir.state_dir(), &dir);
                Err(e)
            }
        }
    }

    async fn boot_locked(
        dir: &PodDir,
        launch: &Launch,
        die_with_parent: bool,
    ) -> Result<(Vm, AgentClient, SystemTime)> {
        let mut vm = launch::start(dir, launch, die_with_parent).await?;
        let until = Instant::now() + Duration::from_secs(launch.boot_timeout_secs);
        wait_for_ready_line(&dir.console_log(), &mut vm.vm, until).await;
        match agent_client::connect(&launch.endpoint, DEFAULT_VSOCK_PORT, &mut vm.vm, until).await {
            Ok(client) => {
                let boot = guest_boot_time(&client).await;
                Ok((vm, client, boot))
            }
            Err(e) => {
                vm.vm.kill().await;
                if let Some(v) = vm.vhost.as_mut() {
                    v.kill().await;
                }
                Err(boot_failure(
                    dir,
                    &vm.vm,
                    e,
                    Duration::from_secs(launch.boot_timeout_secs),
                ))
            }
        }
    }

    /// Takes over a running pod whose monitor died.
    pub async fn adopt(dir: PodDir) -> Result<Monitor> {
        let Some(lock) = record::take_monitor_lock(&dir.path)? else {
            bail!("pod {} already has a monitor", dir.id);
        };
        let rec = record::read(&dir.path)?;
        let launch = Launch::read(&dir.path)?;
        let pod: PodManifest = serde_json::from_slice(&std::fs::read(dir.manifest())?)?;
        let Some(vm_ref) = rec.vm else {
            bail!("pod {} has no VM to adopt", dir.id);
        };
        let adopted = (|| -> Result<Vm> {
            Ok(Vm {
                vm: Supervised::adopt("the VM", vm_ref, &dir.qemu_log())?,
                vhost: rec
                    .vsock_backend
                    .map(|b| Supervised::adopt("vhost-device-vsock", b, &dir.vhost_log()))
                    .transpose()?,
            })
        })();
        let mut vm = match adopted {
            Ok(vm) => vm,
            Err(e) => {
                let _ = record_end(
                    &dir.path,
                    None,
                    format!("its monitor died and then its VM: {e:#}"),
                );
                return Err(e);
            }
        };
        let until = Instant::now() + Duration::from_secs(30);
        let client =
            match agent_client::connect(&launch.endpoint, DEFAULT_VSOCK_PORT, &mut vm.vm, until)
                .await
            {
                Ok(c) => c,
                Err(_) => {
                    vm.vm.kill().await;
                    if let Some(v) = vm.vhost.as_mut() {
                        v.kill().await;
                    }
                    let _ = record_end(
                        &dir.path,
                        None,
                        "its monitor died and its agent stopped answering".into(),
                    );
                    bail!(
                        "pod {}: the agent does not answer; the VM was killed",
                        dir.id
                    );
                }
            };
        record::update(&dir.path, |r| {
            r.monitor = crate::record::ProcRef::of(std::process::id())
        })?;
        let guest_boot = guest_boot_time(&client).await;
        Ok(Monitor {
            dir,
            pod,
            vm,
            client,
            endpoint: launch.endpoint.clone(),
            guest_boot,
            grace: Duration::from_millis(u64::from(launch.grace_ms)),
            _lock: lock,
        })
    }

    /// Runs the pod to its end: see the module documentation.
    pub async fn supervise(
        mut self,
        printer: Option<Printer>,
        mut interrupts: watch::Receiver<u32>,
    ) -> Result<Outcome> {
        let printer = printer.map(|p| Arc::new(Mutex::new(p)));
        let collectors: Vec<_> = self
            .pod
            .apps
            .iter()
            .map(|a| {
                tokio::spawn(collect(
                    self.client.clone(),
                    self.dir.path.clone(),
                    a.name.clone(),
                    printer.clone(),
                    self.guest_boot,
                ))
            })
            .collect();

        enum Ending {
            Finished(PodStatus),
            Interrupted,
            VmDied(String),
        }
        let wait_req = WaitRequest::new();
        let ending = loop {
            tokio::select! {
                st = self.client.wait(agent_client::no_deadline(), &wait_req) => match st {
                    Ok(st) => break Ending::Finished(st),
                    Err(e) => {
                        // The connection broke; the VM may still be fine.
                        if let Some(end) = self.vm.vm.wait_for(Duration::from_millis(200)).await {
                            break Ending::VmDied(end);
                        }
                        let until = Instant::now() + Duration::from_secs(30);
                        match agent_client::connect(&self.endpoint, DEFAULT_VSOCK_PORT, &mut self.vm.vm, until).await {
                            Ok(c) => self.client = c,
                            Err(_) => break Ending::VmDied(format!("its agent stopped answering ({e})")),
                        }
                    }
                },
                _ = interrupts.changed() => break Ending::Interrupted,
                end = self.vm.vm.wait_for(Duration::MAX) => break Ending::VmDied(end.unwrap_or_default()),
            }
        };

        let outcome = match ending {
            Ending::Finished(status) => {
                finish_collectors(collectors).await;
                let record = record_end(&self.dir.path, Some(&status), "every app exited".into())?;
                self.power_off(&mut interrupts).await;
                Outcome {
                    record,
                    status: Some(status),
                    interrupted: false,
                }
            }
            Ending::Interrupted => {
                eprintln!(
                    "host-ctl: stopping pod {} (apps get {}s after SIGTERM; interrupt again to kill it)",
                    self.dir.id,
                    self.grace.as_secs()
                );
                let _ = self.shutdown_request().await;
                let until = self.grace + Duration::from_secs(15);
                let status = tokio::select! {
                    st = tokio::time::timeout(until, self.client.wait(agent_client::no_deadline(), &wait_req)) => st.ok().and_then(Result::ok),
                    _ = interrupts.changed() => None,
                };
                finish_collectors(collectors).await;
                let record = record_end(&self.dir.path, status.as_ref(), "interrupted".into())?;
                self.power_off(&mut interrupts).await;
                Outcome {
                    record,
                    status,
                    interrupted: true,
                }
            }
            Ending::VmDied(how) => {
                for c in collectors {
                    c.abort();
                }
                if let Some(v) = self.vm.vhost.as_mut() {
                    v.kill().await;
                }
                let console = tail(&self.dir.console_log(), 5);
                let record = record_end(
                    &self.dir.path,
                    None,
                    format!(
                        "the VM exited unexpectedly ({how}); console tail:\n{}",
                        indent(&console)
                    ),
                )?;
                Outcome {
                    record,
                    status: None,
                    interrupted: false,
                }
            }
        };
        launch::release(&self.dir.state_dir(), &self.dir);
        Ok(outcome)
    }

    async fn shutdown_request(&self) -> ttrpc::Result<()> {
        let mut req = ShutdownRequest::new();
        req.grace_ms = u32::try_from(self.grace.as_millis()).unwrap_or(u32::MAX);
        self.client
            .shutdown(agent_client::deadline(Duration::from_secs(5)), &req)
            .await
            .map(|_| ())
    }

    /// Asks the agent to power off and waits for QEMU to exit; kills it if
    /// it does not, or at a second interrupt. Then the vsock backend goes.
    async fn power_off(&mut self, interrupts: &mut watch::Receiver<u32>) {
        // A lost reply is expected when the guest powers off first.
        let _ = self.shutdown_request().await;
        let exited = tokio::select! {
            end = self.vm.vm.wait_for(self.grace + Duration::from_secs(15)) => {
                if end.is_none() {
                    eprintln!("host-ctl: the VM of pod {} did not power off; killing it", self.dir.id);
                }
                end.is_some()
            }
            _ = interrupts.changed() => {
                eprintln!("host-ctl: interrupted again; killing the VM");
                false
            }
        };
        if !exited {
            self.vm.vm.kill().await;
        }
        if let Some(v) = self.vm.vhost.as_mut() {
            v.kill().await;
        }
    }
}

async fn finish_collectors(collectors: Vec<tokio::task::JoinHandle<Result<()>>>) {
    let all = async {
        for c in collectors {
            match c.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("host-ctl: collecting app output: {e:#}"),
                Err(_) => {}
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(10), all)
        .await
        .is_err()
    {
        eprintln!("host-ctl: app output did not finish streaming");
    }
}

/// The guest's boot in wall-clock time: now minus its uptime.
/// Waits until the guest's console shows the agent serving, the VM ends,
/// or `until`; the first connection attempt follows. Attempting earlier,
/// before the guest's vsock driver is up, is not just wasted:
/// vhost-device-vsock 0.3.0 queued those requests and then stopped
/// answering handshakes at all in slow boots (seen in the 40-volume boot
/// test). Kata solved the same race by letting the guest speak first.
async fn wait_for_ready_line(console: &Path, vm: &mut Supervised, until: Instant) {
    let mut seen = 0;
    let mut tail = Vec::new();
    while Instant::now() < until && vm.exited().is_none() {
        if let Ok(mut f) = File::open(console) {
            use std::io::{Read, Seek, SeekFrom};
            if f.seek(SeekFrom::Start(seen)).is_ok() {
                let mut new = Vec::new();
                if let Ok(n) = f.read_to_end(&mut new) {
                    seen += n as u64;
                    tail.extend_from_slice(&new);
                    if console::agent_ready(&tail) {
                        return;
                    }
                    // Keep only the unfinished last line.
                    let keep = tail.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                    tail.drain(..keep);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn guest_boot_time(client: &AgentClient) -> SystemTime {
    match client
        .status(
            agent_client::deadline(Duration::from_secs(5)),
            &StatusRequest::new(),
        )
        .await
    {
        Ok(st) => SystemTime::now() - Duration::from_nanos(st.now_ns),
        Err(_) => SystemTime::now(),
    }
}

/// Copies one app's output from the agent into its log file (and to the
/// terminal), resuming where the file ends.
async fn collect(
    client: AgentClient,
    dir: std::path::PathBuf,
    app: String,
    printer: Option<Arc<Mutex<Printer>>>,
    boot: SystemTime,
) -> Result<()> {
    let mut writer = hostlog::Writer::open(&dir, &app)?;
    let mut req = LogsRequest::new();
    req.app = app.clone();
    req.follow = true;
    req.offset = writer.next;
    let mut rx = client
        .logs(agent_client::no_deadline(), &req)
        .await
        .map_err(|e| anyhow!("app {app}: {e}"))?;
    loop {
        let chunk = match rx.recv().await {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(e) => {
                writer.sync()?;
                return Err(anyhow!("app {app}: {e}"));
            }
        };
        let stream = if chunk.stream.enum_value_or_default() == LogStream::LOG_STREAM_STDERR {
            Stream::Stderr
        } else {
            Stream::Stdout
        };
        let time = hostlog::wall_time(boot, chunk.boottime_ns);
        writer.append(&Record::new(
            time,
            stream,
            chunk.offset,
            &chunk.data,
            chunk.dropped,
        ))?;
        if let Some(p) = &printer {
            p.lock().unwrap_or_else(|e| e.into_inner()).print(&chunk);
        }
    }
    if let Some(p) = &printer {
        p.lock().unwrap_or_else(|e| e.into_inner()).flush_app(&app);
    }
    writer.sync()
}

pub fn boot_failure(
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
