//! One process of a task, its init (the pod's app) or a command exec'd in
//! it: its FIFOs, its pid as containerd sees it, and how it ended, which
//! any number of waiters learn at once.

use std::path::Path;
use std::sync::Arc;

use containerd_shim::api::{StateResponse, Status};
use containerd_shim::protos::events::task::TaskExit;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::protos::topics::TASK_EXIT_EVENT_TOPIC;
use log::info;
use tokio::sync::watch;

use crate::events::Events;
use crate::stdio::Fifos;

/// How a process ended: its status and when the shim saw it.
#[derive(Debug, Clone)]
pub struct Ended {
    pub status: u32,
    pub at: Timestamp,
}

pub fn now() -> Timestamp {
    containerd_shim::util::timestamp().unwrap_or_default()
}

pub struct Proc {
    pub fifos: Fifos,
    pub pid: u32,
    pub started: bool,
    ended: watch::Receiver<Option<Ended>>,
    ended_tx: Arc<watch::Sender<Option<Ended>>>,
}

impl Proc {
    pub fn new(fifos: Fifos) -> Self {
        let (tx, rx) = watch::channel(None);
        Proc {
            fifos,
            pid: 0,
            started: false,
            ended: rx,
            ended_tx: Arc::new(tx),
        }
    }

    pub fn ended(&self) -> Option<Ended> {
        self.ended.borrow().clone()
    }

    /// What records the end, for the task that watches the process.
    pub fn end_sender(&self) -> Arc<watch::Sender<Option<Ended>>> {
        Arc::clone(&self.ended_tx)
    }

    /// What a waiter waits on, without holding the task's lock.
    pub fn waiter(&self) -> watch::Receiver<Option<Ended>> {
        self.ended.clone()
    }

    pub fn status(&self) -> Status {
        match (self.started, self.ended.borrow().is_some()) {
            (_, true) => Status::STOPPED,
            (true, false) => Status::RUNNING,
            (false, false) => Status::CREATED,
        }
    }

    pub fn state(&self, id: &str, exec_id: &str, bundle: &Path) -> StateResponse {
        let ended = self.ended();
        StateResponse {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            bundle: bundle.display().to_string(),
            pid: self.pid,
            status: self.status().into(),
            stdin: self.fifos.stdin.clone(),
            stdout: self.fifos.stdout.clone(),
            stderr: self.fifos.stderr.clone(),
            terminal: self.fifos.terminal,
            exit_status: ended.as_ref().map_or(0, |e| e.status),
            exited_at: MessageField::from_option(ended.map(|e| e.at)),
            ..Default::default()
        }
    }
}

/// Waits until the process has ended; None if it never will (its task is
/// gone).
pub async fn wait_end(mut rx: watch::Receiver<Option<Ended>>) -> Option<Ended> {
    loop {
        if let Some(e) = rx.borrow().clone() {
            return Some(e);
        }
        rx.changed().await.ok()?;
    }
}

/// Who ended, for [`report_end`].
pub struct Exited<'a> {
    pub container: &'a str,
    /// The exec ID; the container's ID for its init.
    pub id: &'a str,
    pub pid: u32,
    pub status: u32,
}

/// Records a process's end for its waiters and tells containerd.
pub async fn report_end(events: &Events, tx: &watch::Sender<Option<Ended>>, x: Exited<'_>) {
    let at = now();
    info!("{} {} exited with status {}", x.container, x.id, x.status);
    tx.send_replace(Some(Ended {
        status: x.status,
        at: at.clone(),
    }));
    let event = TaskExit {
        container_id: x.container.to_string(),
        id: x.id.to_string(),
        pid: x.pid,
        exit_status: x.status,
        exited_at: MessageField::some(at),
        ..Default::default()
    };
    events.publish(TASK_EXIT_EVENT_TOPIC, Box::new(event)).await;
}
