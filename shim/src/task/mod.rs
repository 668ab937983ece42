//! The task service containerd calls: a task is a kvmpod pod of one app
//! (`init`), and commands exec'd in it (`exec`).
//!
//! Create mounts the snapshot on the bundle's `rootfs/` and writes the
//! pod's manifest from the OCI spec; Start boots the pod (`host-ctl run
//! --detach`) and copies the app's output into containerd's FIFOs; Wait
//! returns once the pod is over and its output is all out; Kill signals
//! the app; Delete removes the pod and unmounts the root. Stdin, terminal
//! sizes and execs are io streams of the shim's own with the agent
//! (`guest`); Pids and Stats ask the guest (`host-ctl status` and
//! `stats`). Pause, Resume, Checkpoint and Update answer "not supported".

mod exec;
mod init;
mod metrics;
mod process;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim::api::ResizePtyRequest;
use containerd_shim::api::{
    CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse,
    DeleteRequest, DeleteResponse, Empty, ExecProcessRequest, KillRequest, PidsRequest,
    PidsResponse, ShutdownRequest, StartRequest, StartResponse, StateRequest, StateResponse,
    StatsRequest, StatsResponse, WaitRequest, WaitResponse,
};
use containerd_shim::protos::api::ProcessInfo;
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskStart,
};
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::protos::topics::{
    TASK_CREATE_EVENT_TOPIC, TASK_DELETE_EVENT_TOPIC, TASK_EXEC_ADDED_EVENT_TOPIC,
    TASK_EXEC_STARTED_EVENT_TOPIC, TASK_START_EVENT_TOPIC,
};
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{ExitSignal, Task, TtrpcContext, TtrpcResult};
use tokio::sync::Mutex;

use crate::error::ShimError;
use crate::events::Events;
use crate::guest;
use crate::hostctl::HostCtl;
use crate::spec::Role;
use crate::{oom, rootfs, POD_FILE};
use init::Container;
use process::{now, wait_end, Ended, Proc};

pub struct Service {
    host_ctl: HostCtl,
    events: Events,
    exit: Arc<ExitSignal>,
    /// The shim's tasks: one, or a Kubernetes pod sandbox and its
    /// containers (grouped into the sandbox's shim).
    containers: Mutex<std::collections::HashMap<String, Container>>,
}

fn rpc_error(e: ShimError) -> containerd_shim::protos::ttrpc::Error {
    containerd_shim::Error::from(e).into()
}

fn no_task(id: &str) -> containerd_shim::protos::ttrpc::Error {
    rpc_error(ShimError::NoTask(id.to_string()))
}

impl Service {
    /// Takes the task out: its pod, or its app from its sandbox's pod. A
    /// sandbox's pod that is already gone leaves nothing to take.
    async fn remove(&self, pod: &str, app: &str, role: &Role) -> Result<(), ShimError> {
        match role {
            Role::Pod | Role::Sandbox => self.host_ctl.remove(pod).await,
            Role::InSandbox(_) => match self.host_ctl.app_remove(pod, app).await {
                Ok(()) => Ok(()),
                Err(e) => match self.host_ctl.status(pod).await {
                    Ok(v) if !v.exited() => Err(e),
                    _ => Ok(()),
                },
            },
        }
    }

    pub fn new(namespace: &str, publisher: RemotePublisher, exit: Arc<ExitSignal>) -> Self {
        Service {
            host_ctl: HostCtl::locate(),
            events: Events::new(publisher, namespace),
            exit,
            containers: Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Runs `f` on the process `exec_id` (the init when empty) of task `id`.
    async fn with_proc<T>(
        &self,
        id: &str,
        exec_id: &str,
        f: impl FnOnce(&Container, &Proc) -> T,
    ) -> TtrpcResult<T> {
        let containers = self.containers.lock().await;
        let c = containers.get(id).ok_or_else(|| no_task(id))?;
        if exec_id.is_empty() {
            return Ok(f(c, &c.init));
        }
        let e = c
            .execs
            .get(exec_id)
            .ok_or_else(|| no_task(&format!("{id} exec {exec_id}")))?;
        Ok(f(c, &e.proc))
    }

    /// The io session of process `exec_id` (the init when empty) of task
    /// `id`.
    async fn session(&self, id: &str, exec_id: &str) -> TtrpcResult<guest::Sender> {
        let containers = self.containers.lock().await;
        let c = containers.get(id).ok_or_else(|| no_task(id))?;
        let input = if exec_id.is_empty() {
            c.input.as_ref()
        } else {
            c.execs.get(exec_id).and_then(|e| e.input.as_ref())
        };
        input.cloned().ok_or_else(|| {
            rpc_error(ShimError::Precondition(format!(
                "{id} {exec_id} has no stdin or terminal"
            )))
        })
    }

    /// The pod and app of task `id`, which must be running.
    async fn running_pod(&self, id: &str) -> TtrpcResult<(String, String)> {
        let containers = self.containers.lock().await;
        let c = containers.get(id).ok_or_else(|| no_task(id))?;
        match (&c.pod, c.init.ended()) {
            (Some(pod), None) => Ok((pod.clone(), c.app.clone())),
            _ => Err(rpc_error(ShimError::Precondition(format!(
                "task {id} is not running"
            )))),
        }
    }

    /// Starts an exec; its session is opened without the task lock.
    async fn start_exec(&self, id: &str, exec_id: &str) -> TtrpcResult<u32> {
        let (endpoint, plan) = {
            let mut containers = self.containers.lock().await;
            let c = containers.get_mut(id).ok_or_else(|| no_task(id))?;
            let endpoint = match (&c.endpoint, c.init.ended()) {
                (Some(endpoint), None) => endpoint.clone(),
                _ => {
                    return Err(rpc_error(ShimError::Precondition(format!(
                        "task {id} is not running"
                    ))))
                }
            };
            let app = c.app.clone();
            let e = c
                .execs
                .get_mut(exec_id)
                .ok_or_else(|| no_task(&format!("{id} exec {exec_id}")))?;
            if e.proc.started {
                return Err(rpc_error(ShimError::Precondition(format!(
                    "exec {exec_id} already started"
                ))));
            }
            (endpoint, e.plan(&app))
        };
        let started = exec::start(&endpoint, &self.events, (id, exec_id), plan).await;
        let mut containers = self.containers.lock().await;
        let e = containers
            .get_mut(id)
            .and_then(|c| c.execs.get_mut(exec_id))
            .ok_or_else(|| no_task(&format!("{id} exec {exec_id}")))?;
        let (input, watch) = match started {
            Ok(s) => s,
            Err(err) => {
                e.proc.started = false;
                return Err(rpc_error(err));
            }
        };
        e.input = Some(input);
        drop(containers);
        let event = TaskExecStarted {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
            pid: 0,
            ..Default::default()
        };
        self.events
            .publish(TASK_EXEC_STARTED_EVENT_TOPIC, Box::new(event))
            .await;
        tokio::spawn(watch);
        Ok(0)
    }

    /// Boots the task's pod. The boot runs without the task lock (other
    /// calls, Kill and State among them, are answered meanwhile); a
    /// second Start is refused from the moment the first begins.
    async fn start_init(&self, id: &str) -> TtrpcResult<u32> {
        let plan = {
            let mut containers = self.containers.lock().await;
            let c = containers.get_mut(id).ok_or_else(|| no_task(id))?;
            if c.init.started {
                return Err(rpc_error(ShimError::Precondition(format!(
                    "task {id} already started"
                ))));
            }
            let (app, role) = (c.app.clone(), c.role.clone());
            let sandbox_pod = match &role {
                Role::InSandbox(sandbox) => Some(sandbox_pod(&containers, sandbox)?),
                Role::Pod | Role::Sandbox => None,
            };
            let Some(c) = containers.get_mut(id) else {
                return Err(no_task(id));
            };
            c.init.started = true;
            init::StartPlan {
                bundle: c.bundle.clone(),
                app,
                sandbox_pod,
                whole_pod: role == Role::Pod,
                fifos: c.init.fifos.clone(),
                ended: c.init.end_sender(),
            }
        };
        let started = init::start(&self.host_ctl, &self.events, id, plan).await;
        let mut containers = self.containers.lock().await;
        let c = containers.get_mut(id).ok_or_else(|| no_task(id))?;
        let started = match started {
            Ok(s) => s,
            Err(e) => {
                c.init.started = false;
                return Err(rpc_error(e));
            }
        };
        c.pod = Some(started.pod);
        c.init.pid = started.pid;
        c.endpoint = started.endpoint.clone();
        c.input = started.input;
        let pid = started.pid;
        drop(containers);
        let event = TaskStart {
            container_id: id.to_string(),
            pid,
            ..Default::default()
        };
        self.events
            .publish(TASK_START_EVENT_TOPIC, Box::new(event))
            .await;
        tokio::spawn(started.watch.run());
        if let Some(endpoint) = started.endpoint {
            let app = started.app;
            let events = self.events.clone();
            let follower = tokio::spawn(oom::follow(endpoint, events, id.to_string(), app));
            if let Some(c) = self.containers.lock().await.get_mut(id) {
                c.oom = Some(follower.abort_handle());
            }
        }
        Ok(pid)
    }

    /// Removes the task's pod and unmounts its root; the task is
    /// forgotten only once both are done, so a failed Delete can be
    /// retried.
    async fn delete_init(&self, id: &str) -> TtrpcResult<DeleteResponse> {
        let (pod, mounted, bundle, app, role) = {
            let containers = self.containers.lock().await;
            let c = containers.get(id).ok_or_else(|| no_task(id))?;
            (
                c.pod.clone(),
                c.mounted,
                c.bundle.clone(),
                c.app.clone(),
                c.role.clone(),
            )
        };
        if let Some(pod) = &pod {
            self.remove(pod, &app, &role).await.map_err(rpc_error)?;
        }
        crate::mounts::unbind_files(&bundle.join(crate::spec::FILES_DIR));
        if mounted {
            rootfs::unmount(&bundle.join("rootfs")).map_err(rpc_error)?;
        }
        let c = self
            .containers
            .lock()
            .await
            .remove(id)
            .ok_or_else(|| no_task(id))?;
        if let Some(oom) = &c.oom {
            oom.abort();
        }
        let ended = c.init.ended().unwrap_or(Ended {
            status: 137,
            at: now(),
        });
        let event = TaskDelete {
            container_id: id.to_string(),
            id: id.to_string(),
            pid: c.init.pid,
            exit_status: ended.status,
            exited_at: MessageField::some(ended.at.clone()),
            ..Default::default()
        };
        self.events
            .publish(TASK_DELETE_EVENT_TOPIC, Box::new(event))
            .await;
        Ok(DeleteResponse {
            pid: c.init.pid,
            exit_status: ended.status,
            exited_at: MessageField::some(ended.at),
            ..Default::default()
        })
    }
}

#[async_trait]
impl Task for Service {
    async fn create(
        &self,
        _ctx: &TtrpcContext,
        req: CreateTaskRequest,
    ) -> TtrpcResult<CreateTaskResponse> {
        let c = init::create(&req).await.map_err(rpc_error)?;
        self.containers.lock().await.insert(req.id.clone(), c);
        let event = TaskCreate {
            container_id: req.id.clone(),
            bundle: req.bundle.clone(),
            rootfs: req.rootfs.clone(),
            ..Default::default()
        };
        self.events
            .publish(TASK_CREATE_EVENT_TOPIC, Box::new(event))
            .await;
        Ok(CreateTaskResponse::default())
    }

    async fn start(&self, _ctx: &TtrpcContext, req: StartRequest) -> TtrpcResult<StartResponse> {
        let pid = if req.exec_id.is_empty() {
            self.start_init(&req.id).await?
        } else {
            self.start_exec(&req.id, &req.exec_id).await?
        };
        Ok(StartResponse {
            pid,
            ..Default::default()
        })
    }

    async fn exec(&self, _ctx: &TtrpcContext, req: ExecProcessRequest) -> TtrpcResult<Empty> {
        let e = exec::parse(&req).map_err(rpc_error)?;
        {
            let mut containers = self.containers.lock().await;
            let c = containers
                .get_mut(&req.id)
                .ok_or_else(|| no_task(&req.id))?;
            if c.execs.contains_key(&req.exec_id) {
                return Err(rpc_error(ShimError::Precondition(format!(
                    "exec {} already exists",
                    req.exec_id
                ))));
            }
            c.execs.insert(req.exec_id.clone(), e);
        }
        let event = TaskExecAdded {
            container_id: req.id.clone(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        };
        self.events
            .publish(TASK_EXEC_ADDED_EVENT_TOPIC, Box::new(event))
            .await;
        Ok(Empty::new())
    }

    async fn state(&self, _ctx: &TtrpcContext, req: StateRequest) -> TtrpcResult<StateResponse> {
        self.with_proc(&req.id, &req.exec_id, |c, p| {
            p.state(&req.id, &req.exec_id, &c.bundle)
        })
        .await
    }

    async fn wait(&self, _ctx: &TtrpcContext, req: WaitRequest) -> TtrpcResult<WaitResponse> {
        let waiter = self
            .with_proc(&req.id, &req.exec_id, |_, p| p.waiter())
            .await?;
        let e = wait_end(waiter).await.ok_or_else(|| no_task(&req.id))?;
        Ok(WaitResponse {
            exit_status: e.status,
            exited_at: MessageField::some(e.at),
            ..Default::default()
        })
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: KillRequest) -> TtrpcResult<Empty> {
        let containers = self.containers.lock().await;
        let c = containers.get(&req.id).ok_or_else(|| no_task(&req.id))?;
        if !req.exec_id.is_empty() {
            let e = c
                .execs
                .get(&req.exec_id)
                .ok_or_else(|| no_task(&req.exec_id))?;
            let input = match (&e.input, e.proc.ended()) {
                (Some(input), None) => input.clone(),
                _ => return Err(no_task(&format!("{}: it is not running", req.exec_id))),
            };
            drop(containers);
            return guest::signal(&input, req.signal)
                .await
                .map(|()| Empty::new())
                .map_err(rpc_error);
        }
        if c.init.ended().is_some() {
            return Err(no_task(&format!("{}: its process has exited", req.id)));
        }
        let pod = c.pod.clone().ok_or_else(|| {
            rpc_error(ShimError::Precondition(format!(
                "task {} is not started",
                req.id
            )))
        })?;
        let app = c.app.clone();
        drop(containers);
        if let Err(e) = self.host_ctl.kill(&pod, &app, req.signal).await {
            // The app may have exited between the look above and the kill.
            if matches!(self.host_ctl.status(&pod).await, Ok(v) if v.exited() || v.app_over(&app).is_some())
            {
                return Err(no_task(&format!("{}: its process has exited", req.id)));
            }
            return Err(rpc_error(e));
        }
        Ok(Empty::new())
    }

    async fn delete(&self, _ctx: &TtrpcContext, req: DeleteRequest) -> TtrpcResult<DeleteResponse> {
        if req.exec_id.is_empty() {
            return self.delete_init(&req.id).await;
        }
        let mut containers = self.containers.lock().await;
        let c = containers
            .get_mut(&req.id)
            .ok_or_else(|| no_task(&req.id))?;
        let e = c
            .execs
            .remove(&req.exec_id)
            .ok_or_else(|| no_task(&req.exec_id))?;
        let ended = e.proc.ended().unwrap_or(Ended {
            status: 137,
            at: now(),
        });
        Ok(DeleteResponse {
            pid: e.proc.pid,
            exit_status: ended.status,
            exited_at: MessageField::some(ended.at),
            ..Default::default()
        })
    }

    async fn resize_pty(&self, _ctx: &TtrpcContext, req: ResizePtyRequest) -> TtrpcResult<Empty> {
        let input = self.session(&req.id, &req.exec_id).await?;
        guest::resize(&input, req.width, req.height)
            .await
            .map_err(rpc_error)?;
        Ok(Empty::new())
    }

    async fn close_io(&self, _ctx: &TtrpcContext, req: CloseIORequest) -> TtrpcResult<Empty> {
        if req.stdin {
            let input = self.session(&req.id, &req.exec_id).await?;
            guest::close_stdin(&input).await.map_err(rpc_error)?;
        }
        Ok(Empty::new())
    }

    async fn pids(&self, _ctx: &TtrpcContext, req: PidsRequest) -> TtrpcResult<PidsResponse> {
        let (pod, app) = self.running_pod(&req.id).await?;
        let view = self.host_ctl.status(&pod).await.map_err(rpc_error)?;
        let processes = view
            .guest_pid(&app)
            .map(|pid| ProcessInfo {
                pid,
                ..Default::default()
            })
            .into_iter()
            .collect();
        Ok(PidsResponse {
            processes,
            ..Default::default()
        })
    }

    async fn stats(&self, _ctx: &TtrpcContext, req: StatsRequest) -> TtrpcResult<StatsResponse> {
        let (pod, app) = self.running_pod(&req.id).await?;
        let s = self.host_ctl.stats(&pod, &app).await.map_err(rpc_error)?;
        let stats = containerd_shim::util::convert_to_any(Box::new(metrics::of(&s)))
            .map_err(|e| rpc_error(ShimError::Precondition(format!("encoding metrics: {e}"))))?;
        Ok(StatsResponse {
            stats: MessageField::some(stats),
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
            .map_or(0, |c| c.init.pid);
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        })
    }

    async fn shutdown(&self, _ctx: &TtrpcContext, _req: ShutdownRequest) -> TtrpcResult<Empty> {
        // Once every task is deleted, the shim's work is done.
        if self.containers.lock().await.is_empty() {
            self.exit.signal();
        }
        Ok(Empty::new())
    }
}

/// The pod of sandbox task `sandbox`, which a container joins.
fn sandbox_pod(
    containers: &std::collections::HashMap<String, Container>,
    sandbox: &str,
) -> TtrpcResult<String> {
    containers
        .get(sandbox)
        .and_then(|s| s.pod.clone().filter(|_| s.init.ended().is_none()))
        .ok_or_else(|| {
            rpc_error(ShimError::Precondition(format!(
                "pod sandbox {sandbox} is not running in this shim"
            )))
        })
}

/// The `delete` command's clean-up, run by containerd after a shim died:
/// the pod the bundle names is removed, the root unmounted.
pub async fn clean_up(bundle: &Path) -> Result<(), ShimError> {
    let host_ctl = HostCtl::locate();
    if let Ok(kept) = tokio::fs::read_to_string(bundle.join(POD_FILE)).await {
        // "<pod>", or "<pod> <app>" for a container of a pod sandbox.
        match kept.split_whitespace().collect::<Vec<_>>()[..] {
            [pod, app] => {
                if let Err(e) = host_ctl.app_remove(pod, app).await {
                    log::warn!("removing app {app} of pod {pod}: {e}");
                }
            }
            [pod] => host_ctl.remove(pod).await?,
            _ => {}
        }
    }
    crate::mounts::unbind_files(&bundle.join(crate::spec::FILES_DIR));
    rootfs::unmount(&bundle.join("rootfs"))
}
