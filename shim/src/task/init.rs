//! A task's container and its init process, the pod's app: created from
//! the bundle (its root mounted, its manifest written), started as a
//! detached pod, watched to its end.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use containerd_shim::api::CreateTaskRequest;
use log::warn;

use super::exec::Exec;
use super::process::{report_end, Exited, Proc};
use host_ctl::agent::Endpoint;

use crate::error::ShimError;
use crate::events::Events;
use crate::guest;
use crate::hostctl::{HostCtl, Stream};
use crate::spec::{self, APP};
use crate::stdio::{self, Fifos};
use crate::{rootfs, POD_FILE};

/// How often a pod is looked at for its end once its output is all out.
const POLL: Duration = Duration::from_millis(250);

/// The manifest the shim writes into the bundle.
const MANIFEST: &str = "kvmpod-pod.json";

pub struct Container {
    pub bundle: PathBuf,
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

/// Mounts the root, writes the pod's manifest from the OCI spec.
pub async fn create(req: &CreateTaskRequest) -> Result<Container, ShimError> {
    let bundle = PathBuf::from(&req.bundle);
    let spec = spec::read(&bundle)?;
    let root = spec.root_path(&bundle);
    let mounted = rootfs::mount(&req.rootfs, &bundle.join("rootfs")).await?;
    let written = async {
        let manifest = spec.manifest(&root, !req.stdin.is_empty())?;
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
        if mounted {
            let _ = rootfs::unmount(&bundle.join("rootfs"));
        }
        return Err(e);
    }
    Ok(Container {
        bundle,
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

/// Boots the container's pod and starts copying its output into the
/// FIFOs; the VM's pid, which is the task's pid.
pub async fn start(
    host_ctl: &HostCtl,
    events: &Events,
    id: &str,
    c: &mut Container,
) -> Result<u32, ShimError> {
    let pod = host_ctl.run_detached(&c.bundle.join(MANIFEST)).await?;
    let pod_file = c.bundle.join(POD_FILE);
    if let Err(e) = tokio::fs::write(&pod_file, &pod).await {
        warn!("writing {}: {e}", pod_file.display());
    }
    c.pod = Some(pod.clone());
    c.init.started = true;
    let view = host_ctl.status(&pod).await?;
    c.init.pid = view.vm.map_or(0, |v| v.pid);
    c.endpoint = view.endpoint;
    let mut followers = Vec::new();
    let fifos = c.init.fifos.clone();
    for (stream, fifo) in [
        (Stream::Stdout, &fifos.stdout),
        (Stream::Stderr, &fifos.stderr),
    ] {
        if let Some(to) = stdio::output(fifo)? {
            followers.push(host_ctl.follow(&pod, APP, stream, to)?);
        }
    }
    if !fifos.stdin.is_empty() || fifos.terminal {
        let endpoint = c
            .endpoint
            .as_ref()
            .ok_or_else(|| ShimError::Guest(format!("pod {pod} has no vsock endpoint")))?;
        let tx = guest::attach(endpoint, APP).await?;
        // At the end of the FIFO the app's stdin ends.
        if !fifos.stdin.is_empty() {
            guest::feed(tx.clone(), &fifos.stdin)?;
        }
        c.input = Some(tx);
    }
    let watch = WatchEnd {
        host_ctl: host_ctl.clone(),
        events: events.clone(),
        id: id.to_string(),
        pod,
        pid: c.init.pid,
        followers,
        ended: c.init.end_sender(),
    };
    tokio::spawn(watch.run());
    Ok(c.init.pid)
}

struct WatchEnd {
    host_ctl: HostCtl,
    events: Events,
    id: String,
    pod: String,
    pid: u32,
    followers: Vec<tokio::process::Child>,
    ended: std::sync::Arc<tokio::sync::watch::Sender<Option<super::process::Ended>>>,
}

impl WatchEnd {
    /// Waits for the pod's end (its output followers end with it, after
    /// its last byte), then reports the app's exit status.
    async fn run(mut self) {
        for f in &mut self.followers {
            let _ = f.wait().await;
        }
        let status = loop {
            match self.host_ctl.status(&self.pod).await {
                Ok(v) if v.exited() => break v.exit_status(APP),
                Ok(_) => {}
                Err(e) => {
                    warn!("pod {}: {e}", self.pod);
                    break 255;
                }
            }
            tokio::time::sleep(POLL).await;
        };
        let exited = Exited {
            container: &self.id,
            id: &self.id,
            pid: self.pid,
            status,
        };
        report_end(&self.events, &self.ended, exited).await;
    }
}
