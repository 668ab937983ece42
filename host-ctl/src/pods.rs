//! Finding pods and keeping their records true.
//!
//! A record can fall behind reality when a monitor is killed: `reconcile`
//! catches up. A pod whose VM is gone is marked exited, with why; a
//! running pod whose monitor died gets a new monitor that adopts its VM.
//! So `list` never shows a pod as running when its VM is gone.

use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Result};
use kvmpod_api::layout::DEFAULT_VSOCK_PORT;
use kvmpod_api::protocol::agent_ttrpc::AgentClient;

use crate::agent_client;
use crate::poddir::PodDir;
use crate::record::{self, PodRecord, State};

/// How long a freshly created pod may have no monitor (it is being
/// prepared, or its monitor is starting).
const PREPARE_GRACE: Duration = Duration::from_secs(120);

pub struct Pod {
    pub dir: PodDir,
    pub record: PodRecord,
}

impl Pod {
    /// The pod named by `id` (a UUID or a unique prefix), reconciled.
    pub fn open(state_dir: &Path, id: &str) -> Result<Pod> {
        let path = record::find(state_dir, id)?;
        let record = reconcile(state_dir, &path)?;
        Ok(Pod {
            dir: PodDir::open(&path)?,
            record,
        })
    }

    /// A connection to the pod's agent; the pod must be running.
    pub async fn client(&self) -> Result<AgentClient> {
        if self.record.state != State::Running {
            bail!(
                "pod {} is {}{}",
                self.record.id,
                self.record.state.as_str(),
                self.record
                    .exit_reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            );
        }
        let endpoint = self
            .record
            .endpoint
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("pod {} has no vsock endpoint", self.record.id))?;
        agent_client::connect_once(endpoint, DEFAULT_VSOCK_PORT).await
    }
}

fn age(created: &str) -> Duration {
    humantime::parse_rfc3339(created)
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .unwrap_or(Duration::MAX)
}

/// Brings the record of the pod in `dir` up to date (see the module docs).
pub fn reconcile(state_dir: &Path, dir: &Path) -> Result<PodRecord> {
    let rec = record::read(dir)?;
    if rec.state == State::Exited || record::monitor_alive(dir) {
        return Ok(rec);
    }
    let vm_alive = rec.vm.is_some_and(|v| v.alive());
    if vm_alive && rec.state == State::Running {
        let pod_dir = PodDir::open(dir)?;
        let mut child = crate::run::spawn_monitor(state_dir, &pod_dir, true)?;
        // Wait until the new monitor holds the pod (or gave up).
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while !record::monitor_alive(dir) && std::time::Instant::now() < until {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        return record::read(dir);
    }
    if rec.state == State::Prepared && !vm_alive && age(&rec.created) < PREPARE_GRACE {
        return Ok(rec);
    }
    // Neither a monitor nor a VM: the pod ended without anyone recording
    // it. Say so, and clean up what is left.
    if let Some(b) = rec.vsock_backend.filter(|b| b.alive()) {
        // SAFETY: kill(2) on a process identified by pid and start time.
        unsafe {
            libc::kill(b.pid, libc::SIGKILL);
        }
    }
    let reason = match (rec.state, rec.vm, rec.monitor) {
        (State::Prepared, _, _) => "abandoned while starting (its monitor died)".to_string(),
        (_, Some(vm), Some(m)) => format!(
            "its monitor (pid {}) died, and its VM (pid {}) is gone",
            m.pid, vm.pid
        ),
        _ => "its VM is gone".to_string(),
    };
    let rec = record::update(dir, |r| {
        if r.state != State::Exited {
            r.state = State::Exited;
            r.finished = Some(record::now());
            r.exit_reason = Some(reason);
        }
    })?;
    if let Ok(d) = PodDir::open(dir) {
        crate::launch::release(state_dir, &d);
    }
    Ok(rec)
}

/// Every pod, reconciled, oldest first.
pub fn all(state_dir: &Path) -> Result<Vec<PodRecord>> {
    let mut out = Vec::new();
    for dir in record::all(state_dir)? {
        match reconcile(state_dir, &dir) {
            Ok(r) => out.push(r),
            Err(e) => eprintln!("host-ctl: {}: {e:#}", dir.display()),
        }
    }
    Ok(out)
}
