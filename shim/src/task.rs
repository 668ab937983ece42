//! The task service containerd calls: a task is a kvmpod pod of one app.
//!
//! Create mounts the snapshot on the bundle's `rootfs/` and writes the
//! pod's manifest from the OCI spec; Start boots the pod (`host-ctl run
//! --detach`) and copies the app's output into containerd's FIFOs; Wait
//! returns once the pod is over and its output is all out; Kill signals
//! the app; Delete removes the pod and unmounts the root. Pause, Resume,
//! Checkpoint, Update, exec and terminal resizing answer "not supported".

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use containerd_shim::api::{
    ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse, DeleteRequest,
    DeleteResponse, Empty, KillRequest, ShutdownRequest, StartRequest, StartResponse, StateRequest,
    StateResponse, Status, WaitRequest, WaitResponse,
};
use containerd_shim::protos::events::task::{TaskCreate, TaskDelete, TaskExit, TaskStart};
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::{MessageDyn, MessageField};
use containerd_shim::protos::topics::{
    TASK_CREATE_EVENT_TOPIC, TASK_DELETE_EVENT_TOPIC, TASK_EXIT_EVENT_TOPIC, TASK_START_EVENT_TOPIC,
};
use containerd_shim::protos::ttrpc::context::Context;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{ExitSignal, Task, TtrpcContext, TtrpcResult};
use log::{info, warn};
use tokio::sync::{watch, Mutex};

use crate::error::ShimError;
use crate::hostctl::{HostCtl, Stream};
use crate::spec::{self, APP};
use crate::stdio::{self, Fifos};
use crate::{rootfs, POD_FILE};

/// How often a pod without output followers is looked at for its end.
const POLL: Duration = Duration::from_millis(250);

/// How a task ended: its status and when the shim saw it.
#[derive(Debug, Clone)]
struct Ended {
    status: u32,
    at: Timestamp,
}

struct Container {
    bundle: PathBuf,
    fifos: Fifos,
    /// The snapshot mounted on `<bundle>/rootfs` (to unmount at delete).
    mounted: bool,
    pod: Option<String>,
    /// The VM's pid, the task's pid as containerd sees it.
    pid: u32,
    ended: watch::Receiver<Option<Ended>>,
    ended_tx: Arc<watch::Sender<Option<Ended>>>,
}

impl Container {
    fn status(&self) -> Status {
        match (&self.pod, self.ended.borrow().is_some()) {
            (_, true) => Status::STOPPED,
            (Some(_), false) => Status::RUNNING,
            (None, false) => Status::CREATED,
        }
    }
}

pub struct Service {
    namespace: String,
    host_ctl: HostCtl,
    publisher: Arc<RemotePublisher>,
    exit: Arc<ExitSignal>,
    containers: Mutex<HashMap<String, Container>>,
}

fn now() -> Timestamp {
    containerd_shim::util::timestamp().unwrap_or_default()
}

impl Service {
    pub fn new(namespace: &str, publisher: RemotePublisher, exit: Arc<ExitSignal>) -> Self {
        Service {
            namespace: namespace.to_string(),
            host_ctl: HostCtl::locate(),
            publisher: Arc::new(publisher),
            exit,
            containers: Mutex::new(HashMap::new()),
        }
    }

    async fn publish(&self, topic: &str, event: Box<dyn MessageDyn>) {
        publish(&self.publisher, &self.namespace, topic, event).await;
    }

    async fn create_container(&self, req: &CreateTaskRequest) -> Result<Container, ShimError> {
        let bundle = PathBuf::from(&req.bundle);
        let spec = spec::read(&bundle)?;
        let root = spec.root_path(&bundle);
        let mounted = rootfs::mount(&req.rootfs, &bundle.join("rootfs")).await?;
        let manifest = spec.manifest(&root, !req.stdin.is_empty());
        let manifest = match manifest {
            Ok(m) => m,
            Err(e) => {
                if mounted {
                    let _ = rootfs::unmount(&bundle.join("rootfs"));
                }
                return Err(e);
            }
        };
        let text =
            serde_json::to_vec_pretty(&manifest).map_err(|e| ShimError::Spec(e.to_string()))?;
        let path = bundle.join("kvmpod-pod.json");
        tokio::fs::write(&path, text)
            .await
            .map_err(|source| ShimError::Io {
                what: format!("writing {}", path.display()),
                source,
            })?;
        let (tx, rx) = watch::channel(None);
        Ok(Container {
            bundle,
            fifos: Fifos {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
            },
            mounted,
            pod: None,
            pid: 0,
            ended: rx,
            ended_tx: Arc::new(tx),
        })
    }

    /// Boots the container's pod and starts copying its output; the VM's
    /// pid.
    async fn start_container(&self, id: &str, c: &mut Container) -> Result<u32, ShimError> {
        let manifest = c.bundle.join("kvmpod-pod.json");
        let pod = self.host_ctl.run_detached(&manifest).await?;
        let pod_file = c.bundle.join(POD_FILE);
        if let Err(e) = tokio::fs::write(&pod_file, &pod).await {
            warn!("writing {}: {e}", pod_file.display());
        }
        let view = self.host_ctl.status(&pod).await?;
        c.pid = view.vm.map_or(0, |v| v.pid);
        c.pod = Some(pod.clone());
        let mut followers = Vec::new();
        let streams = [
            (Stream::Stdout, &c.fifos.stdout),
            (Stream::Stderr, &c.fifos.stderr),
        ];
        for (stream, fifo) in streams {
            if let Some(to) = stdio::output(fifo)? {
                followers.push(self.host_ctl.follow(&pod, APP, stream, to)?);
            }
        }
        let feeder = match stdio::input(&c.fifos.stdin)? {
            Some(from) => Some(self.host_ctl.feed(&pod, APP, from)?),
            None => None,
        };
        tokio::spawn(watch_end(WatchEnd {
            host_ctl: self.host_ctl.clone(),
            publisher: Arc::clone(&self.publisher),
            namespace: self.namespace.clone(),
            id: id.to_string(),
            pod,
            pid: c.pid,
            followers,
            feeder,
            ended: Arc::clone(&c.ended_tx),
        }));
        Ok(c.pid)
    }
}

async fn publish(publisher: &RemotePublisher, ns: &str, topic: &str, event: Box<dyn MessageDyn>) {
    if let Err(e) = publisher
        .publish(Context::default(), topic, ns, event)
        .await
    {
        warn!("publishing {topic}: {e}");
    }
}

struct WatchEnd {
    host_ctl: HostCtl,
    publisher: Arc<RemotePublisher>,
    namespace: String,
    id: String,
    pod: String,
    pid: u32,
    followers: Vec<tokio::process::Child>,
    feeder: Option<tokio::process::Child>,
    ended: Arc<watch::Sender<Option<Ended>>>,
}

/// Waits for the pod's end (its output followers end with it, after its
/// last byte), records the app's exit status and publishes TaskExit.
async fn watch_end(mut w: WatchEnd) {
    for f in &mut w.followers {
        let _ = f.wait().await;
    }
    let status = loop {
        match w.host_ctl.status(&w.pod).await {
            Ok(v) if v.exited() => break v.exit_status(APP),
            Ok(_) => {}
            Err(e) => {
                warn!("pod {}: {e}", w.pod);
                break 255;
            }
        }
        tokio::time::sleep(POLL).await;
    };
    if let Some(mut f) = w.feeder.take() {
        let _ = f.kill().await;
    }
    let at = now();
    info!("task {} exited with status {status}", w.id);
    w.ended.send_replace(Some(Ended {
        status,
        at: at.clone(),
    }));
    let event = TaskExit {
        container_id: w.id.clone(),
        id: w.id.clone(),
        pid: w.pid,
        exit_status: status,
        exited_at: MessageField::some(at),
        ..Default::default()
    };
    publish(
        &w.publisher,
        &w.namespace,
        TASK_EXIT_EVENT_TOPIC,
        Box::new(event),
    )
    .await;
}

fn no_task(id: &str) -> containerd_shim::Error {
    ShimError::NoTask(id.to_string()).into()
}

fn refuse_exec(exec_id: &str) -> TtrpcResult<()> {
    if exec_id.is_empty() {
        Ok(())
    } else {
        Err(
            containerd_shim::Error::Unimplemented("exec processes are not supported yet".into())
                .into(),
        )
    }
}

#[async_trait]
impl Task for Service {
    async fn create(
        &self,
        _ctx: &TtrpcContext,
        req: CreateTaskRequest,
    ) -> TtrpcResult<CreateTaskResponse> {
        if req.terminal {
            return Err(containerd_shim::Error::Unimplemented(
                "a terminal (ctr run -t) is not supported yet".into(),
            )
            .into());
        }
        let c = self
            .create_container(&req)
            .await
            .map_err(containerd_shim::Error::from)?;
        self.containers.lock().await.insert(req.id.clone(), c);
        let event = TaskCreate {
            container_id: req.id.clone(),
            bundle: req.bundle.clone(),
            rootfs: req.rootfs.clone(),
            pid: 0,
            ..Default::default()
        };
        self.publish(TASK_CREATE_EVENT_TOPIC, Box::new(event)).await;
        Ok(CreateTaskResponse {
            pid: 0,
            ..Default::default()
        })
    }

    async fn start(&self, _ctx: &TtrpcContext, req: StartRequest) -> TtrpcResult<StartResponse> {
        refuse_exec(&req.exec_id)?;
        let mut containers = self.containers.lock().await;
        let c = containers
            .get_mut(&req.id)
            .ok_or_else(|| no_task(&req.id))?;
        if c.pod.is_some() {
            return Err(
                ShimError::Precondition(format!("task {} already started", req.id)).into_ttrpc(),
            );
        }
        let pid = self
            .start_container(&req.id, c)
            .await
            .map_err(containerd_shim::Error::from)?;
        drop(containers);
        let event = TaskStart {
            container_id: req.id.clone(),
            pid,
            ..Default::default()
        };
        self.publish(TASK_START_EVENT_TOPIC, Box::new(event)).await;
        Ok(StartResponse {
            pid,
            ..Default::default()
        })
    }

    async fn state(&self, _ctx: &TtrpcContext, req: StateRequest) -> TtrpcResult<StateResponse> {
        refuse_exec(&req.exec_id)?;
        let containers = self.containers.lock().await;
        let c = containers.get(&req.id).ok_or_else(|| no_task(&req.id))?;
        let ended = c.ended.borrow().clone();
        Ok(StateResponse {
            id: req.id.clone(),
            bundle: c.bundle.display().to_string(),
            pid: c.pid,
            status: c.status().into(),
            stdin: c.fifos.stdin.clone(),
            stdout: c.fifos.stdout.clone(),
            stderr: c.fifos.stderr.clone(),
            terminal: c.fifos.terminal,
            exit_status: ended.as_ref().map_or(0, |e| e.status),
            exited_at: MessageField::from_option(ended.map(|e| e.at)),
            ..Default::default()
        })
    }

    async fn wait(&self, _ctx: &TtrpcContext, req: WaitRequest) -> TtrpcResult<WaitResponse> {
        refuse_exec(&req.exec_id)?;
        let mut ended = {
            let containers = self.containers.lock().await;
            containers
                .get(&req.id)
                .ok_or_else(|| no_task(&req.id))?
                .ended
                .clone()
        };
        let e = loop {
            if let Some(e) = ended.borrow().clone() {
                break e;
            }
            if ended.changed().await.is_err() {
                return Err(no_task(&req.id).into());
            }
        };
        Ok(WaitResponse {
            exit_status: e.status,
            exited_at: MessageField::some(e.at),
            ..Default::default()
        })
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: KillRequest) -> TtrpcResult<Empty> {
        refuse_exec(&req.exec_id)?;
        let pod = {
            let containers = self.containers.lock().await;
            let c = containers.get(&req.id).ok_or_else(|| no_task(&req.id))?;
            if c.ended.borrow().is_some() {
                return Err(
                    ShimError::NoTask(format!("{}: its process has exited", req.id)).into_ttrpc(),
                );
            }
            c.pod.clone()
        };
        let Some(pod) = pod else {
            return Err(
                ShimError::Precondition(format!("task {} is not started", req.id)).into_ttrpc(),
            );
        };
        self.host_ctl
            .kill(&pod, APP, req.signal)
            .await
            .map_err(containerd_shim::Error::from)?;
        Ok(Empty::new())
    }

    async fn delete(&self, _ctx: &TtrpcContext, req: DeleteRequest) -> TtrpcResult<DeleteResponse> {
        refuse_exec(&req.exec_id)?;
        let c = self
            .containers
            .lock()
            .await
            .remove(&req.id)
            .ok_or_else(|| no_task(&req.id))?;
        let ended = c.ended.borrow().clone().unwrap_or(Ended {
            status: 137,
            at: now(),
        });
        if let Some(pod) = &c.pod {
            self.host_ctl
                .remove(pod)
                .await
                .map_err(containerd_shim::Error::from)?;
        }
        if c.mounted {
            rootfs::unmount(&c.bundle.join("rootfs")).map_err(containerd_shim::Error::from)?;
        }
        let event = TaskDelete {
            container_id: req.id.clone(),
            id: req.id.clone(),
            pid: c.pid,
            exit_status: ended.status,
            exited_at: MessageField::some(ended.at.clone()),
            ..Default::default()
        };
        self.publish(TASK_DELETE_EVENT_TOPIC, Box::new(event)).await;
        Ok(DeleteResponse {
            pid: c.pid,
            exit_status: ended.status,
            exited_at: MessageField::some(ended.at),
            ..Default::default()
        })
    }

    async fn connect(
        &self,
        _ctx: &TtrpcContext,
        req: ConnectRequest,
    ) -> TtrpcResult<ConnectResponse> {
        let task_pid = self
            .containers
            .lock()
            .await
            .get(&req.id)
            .map_or(0, |c| c.pid);
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        })
    }

    async fn shutdown(&self, _ctx: &TtrpcContext, _req: ShutdownRequest) -> TtrpcResult<Empty> {
        // One task per shim: once it is deleted, the shim's work is done.
        if self.containers.lock().await.is_empty() {
            self.exit.signal();
        }
        Ok(Empty::new())
    }
}

impl ShimError {
    fn into_ttrpc(self) -> containerd_shim::protos::ttrpc::Error {
        containerd_shim::Error::from(self).into()
    }
}

/// The `delete` command's clean-up, run by containerd after a shim died:
/// the pod the bundle names is removed, the root unmounted.
pub async fn clean_up(bundle: &Path) -> Result<(), ShimError> {
    let host_ctl = HostCtl::locate();
    if let Ok(pod) = tokio::fs::read_to_string(bundle.join(POD_FILE)).await {
        host_ctl.remove(pod.trim()).await?;
    }
    rootfs::unmount(&bundle.join("rootfs"))
}
