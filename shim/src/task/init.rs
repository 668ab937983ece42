//! A task's container and its init process, the pod's app: created from
//! the bundle (its root mounted, its manifest written), started as a
//! detached pod, watched to its end.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use containerd_shim::api::CreateTaskRequest;
use log::warn;
use tokio::sync::watch;

use super::exec::Exec;
use super::process::{report_end, Ended, Exited, Proc};
use host_ctl::agent::Endpoint;

use crate::error::ShimError;
use crate::events::Events;
use crate::guest;
use crate::hostctl::{HostCtl, PodView, Stream};
use crate::spec::{self, Role};
use crate::stdio::{self, Fifos};
use crate::{mounts, rootfs, POD_FILE};

/// How often a pod is looked at for its end.
const POLL: Duration = Duration::from_millis(250);
/// How long output may still be copying into the FIFOs after the pod is
/// over before a follower whose FIFO nobody reads is stopped.
const DRAIN: Duration = Duration::from_secs(10);
/// How often a pod whose followers have not ended is looked at.
const SLOW_POLL: Duration = Duration::from_secs(5);

/// The manifest the shim writes into the bundle.
const MANIFEST: &str = "kvmpod-pod.json";

pub struct Container {
    pub bundle: PathBuf,
    /// The follower of its OOM kills, stopped when it is deleted.
    pub oom: Option<tokio::task::AbortHandle>,
    /// A pod of its own, a pod sandbox, or a container of a sandbox.
    pub role: Role,
    /// Its app in its pod.
    pub app: String,
    /// The snapshot mounted on `<bundle>/rootfs` (to unmount at delete).
    pub mounted: bool,
    pub pod: Option<String>,
    /// Where the pod's agent is reached, once it runs.
    pub endpoint: Option<Endpoint>,
    pub init: Proc,
    /// The app's attach session (stdin, terminal size), if it has either.
    pub input: Option<guest::Sender>,
    pub execs: HashMap<String, Exec>,
}

/// Mounts the root and the single files the spec binds, writes the pod's
/// manifest from the OCI spec.
pub async fn create(req: &CreateTaskRequest) -> Result<Container, ShimError> {
    let bundle = PathBuf::from(&req.bundle);
    let spec = spec::read(&bundle)?;
    let mounted = rootfs::mount(&req.rootfs, &bundle.join("rootfs")).await?;
    let role = spec.role(&req.id);
    let written = async {
        let manifest = spec.manifest(&req.id, &bundle, !req.stdin.is_empty())?;
        mounts::bind_files(&spec.file_binds(&bundle))?;
        let text =
            serde_json::to_vec_pretty(&manifest).map_err(|e| ShimError::Spec(e.to_string()))?;
        let path = bundle.join(MANIFEST);
        tokio::fs::write(&path, text)
            .await
            .map_err(|source| ShimError::Io {
                what: format!("writing {}", path.display()),
                source,
            })
    };
    if let Err(e) = written.await {
        mounts::unbind_files(&bundle.join(spec::FILES_DIR));
        if mounted {
            let _ = rootfs::unmount(&bundle.join("rootfs"));
        }
        return Err(e);
    }
    Ok(Container {
        bundle,
        oom: None,
        app: role.app_name(&req.id),
        role,
        mounted,
        pod: None,
        endpoint: None,
        input: None,
        init: Proc::new(Fifos {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        }),
        execs: HashMap::new(),
    })
}

/// What a started init brings back to its container.
pub struct Started {
    pub pod: String,
    pub app: String,
    pub pid: u32,
    pub endpoint: Option<Endpoint>,
    pub input: Option<guest::Sender>,
    /// To be run once TaskStart is out (so TaskExit never comes first).
    pub watch: WatchEnd,
}

/// What starting needs of the container, taken under the task lock so
/// that the boot itself runs without it.
pub struct StartPlan {
    pub bundle: PathBuf,
    pub app: String,
    /// For a container of a pod sandbox: the sandbox's pod, which it joins.
    pub sandbox_pod: Option<String>,
    /// The task ends with its pod (a plain container), not with its app
    /// (a sandbox's pause container, a container of a sandbox).
    pub whole_pod: bool,
    pub fifos: Fifos,
    pub ended: Arc<watch::Sender<Option<Ended>>>,
}

/// Boots the container's pod (or adds its app to its sandbox's pod) and
/// starts copying its output into the FIFOs. A failure after that removes
/// the pod (or the app) again. The bundle keeps what `delete` must remove
/// should the shim die: the pod, or the app in the sandbox's pod.
pub async fn start(
    host_ctl: &HostCtl,
    events: &Events,
    id: &str,
    plan: StartPlan,
) -> Result<Started, ShimError> {
    let manifest = plan.bundle.join(MANIFEST);
    let (pod, kept) = match &plan.sandbox_pod {
        Some(pod) => {
            if let Err(e) = host_ctl.app_add(pod, &manifest).await {
                // It may be in the pod anyway (added, but it could not
                // start): nothing of it stays behind.
                let _ = host_ctl.app_remove(pod, &plan.app).await;
                return Err(e);
            }
            (pod.clone(), format!("{pod} {}", plan.app))
        }
        None => {
            let pod = host_ctl.run_detached(&manifest).await?;
            (pod.clone(), pod)
        }
    };
    let pod_file = plan.bundle.join(POD_FILE);
    if let Err(e) = tokio::fs::write(&pod_file, &kept).await {
        warn!("writing {}: {e}", pod_file.display());
    }
    let mut followers = Vec::new();
    match connect(host_ctl, &pod, &plan.app, &plan.fifos, &mut followers).await {
        Ok((pid, endpoint, input)) => Ok(Started {
            watch: WatchEnd {
                host_ctl: host_ctl.clone(),
                events: events.clone(),
                id: id.to_string(),
                pod: pod.clone(),
                app: plan.app.clone(),
                whole_pod: plan.whole_pod,
                pid,
                followers,
                ended: plan.ended,
            },
            pod,
            app: plan.app,
            pid,
            endpoint,
            input,
        }),
        Err(e) => {
            for f in &mut followers {
                let _ = f.kill().await;
            }
            let removed = match plan.sandbox_pod {
                Some(_) => host_ctl.app_remove(&pod, &plan.app).await,
                None => host_ctl.remove(&pod).await,
            };
            if let Err(rm) = removed {
                warn!(
                    "removing pod {pod} (app {}) after a failed start: {rm}",
                    plan.app
                );
            }
            Err(e)
        }
    }
}

/// The booted pod's VM pid and endpoint; its output followed into the
/// FIFOs (`followers`), its stdin and terminal attached.
async fn connect(
    host_ctl: &HostCtl,
    pod: &str,
    app: &str,
    fifos: &Fifos,
    followers: &mut Vec<tokio::process::Child>,
) -> Result<(u32, Option<Endpoint>, Option<guest::Sender>), ShimError> {
    let view = host_ctl.status(pod).await?;
    let pid = view.vm.map_or(0, |v| v.pid);
    for (stream, fifo) in [
        (Stream::Stdout, &fifos.stdout),
        (Stream::Stderr, &fifos.stderr),
    ] {
        if let Some(to) = stdio::output(fifo)? {
            followers.push(host_ctl.follow(pod, app, stream, to)?);
        }
    }
    if followers.is_empty() {
        // Without FIFOs, a follower into nothing still ends with the pod:
        // what tells the watcher, without polling, that it is over.
        let null = std::process::Stdio::null();
        followers.push(host_ctl.follow(pod, app, Stream::Stdout, null)?);
    }
    let mut input = None;
    if !fifos.stdin.is_empty() || fifos.terminal {
        let endpoint = view
            .endpoint
            .as_ref()
            .ok_or_else(|| ShimError::Guest(format!("pod {pod} has no vsock endpoint")))?;
        let tx = guest::attach(endpoint, app).await?;
        if !fifos.stdin.is_empty() {
            // A pipe's end ends the app's stdin; a terminal's gets
            // CloseIO (its end is not the user typing ^D).
            guest::feed(tx.clone(), &fifos.stdin, !fifos.terminal)?;
        }
        input = Some(tx);
    }
    Ok((pid, view.endpoint, input))
}

pub struct WatchEnd {
    host_ctl: HostCtl,
    events: Events,
    id: String,
    pod: String,
    app: String,
    /// The task ends with its pod, not with its app.
    whole_pod: bool,
    pid: u32,
    followers: Vec<tokio::process::Child>,
    ended: Arc<watch::Sender<Option<Ended>>>,
}

impl WatchEnd {
    /// Waits for the pod's end, lets the output followers finish (they
    /// end with the pod, after its last byte; one whose FIFO nobody reads
    /// any more is stopped after DRAIN), then reports the app's exit
    /// status.
    pub async fn run(mut self) {
        let mut followers = std::mem::take(&mut self.followers);
        let all_done = async {
            for f in &mut followers {
                let _ = f.wait().await;
            }
        };
        // Normally the followers end with the pod; a follower stuck on a
        // FIFO nobody reads does not, and a slow look at the pod sees it
        // over anyway.
        tokio::select! {
            () = all_done => {}
            () = self.until_over(SLOW_POLL) => {}
        }
        let status = self.exit_status().await;
        for f in &mut followers {
            if tokio::time::timeout(DRAIN, f.wait()).await.is_err() {
                warn!("pod {}: its output is not read; it stops here", self.pod);
                let _ = f.kill().await;
            }
        }
        let exited = Exited {
            container: &self.id,
            id: &self.id,
            pid: self.pid,
            status,
        };
        report_end(&self.events, &self.ended, exited).await;
    }

    /// The task's exit status once it is over: when the pod is, or (a
    /// sandbox's pause container, a container of a sandbox) when its app
    /// is.
    fn over(&self, v: &PodView) -> Option<u32> {
        if v.exited() {
            return Some(v.exit_status(&self.app));
        }
        if self.whole_pod {
            return None;
        }
        v.app_over(&self.app)
    }

    /// Resolves once the task is seen over, looking every `every`.
    async fn until_over(&self, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            if matches!(self.host_ctl.status(&self.pod).await, Ok(v) if self.over(&v).is_some()) {
                return;
            }
        }
    }

    /// Polls the pod until the task is over; its app's status. A few
    /// failed looks in a row (the pod removed under it) give 255.
    async fn exit_status(&self) -> u32 {
        let mut failures = 0;
        loop {
            match self.host_ctl.status(&self.pod).await {
                Ok(v) => {
                    if let Some(status) = self.over(&v) {
                        return status;
                    }
                    failures = 0;
                }
                Err(e) => {
                    failures += 1;
                    if failures >= 5 {
                        warn!("pod {}: {e}", self.pod);
                        return 255;
                    }
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }
}
