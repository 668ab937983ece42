//! `host-ctl stop <pod> [--timeout S]`: a graceful stop. The apps get
//! SIGTERM and S seconds, then SIGKILL; the agent syncs, unmounts the
//! volumes and powers off; the monitor records the end.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use kvmpod_api::protocol::ShutdownRequest;

use crate::agent;
use crate::pod::record::{self, PodRecord, State};
use crate::pod::{store, StoredPod};
use crate::ui::progress;

pub async fn run(state_dir: &Path, id: &str, timeout: Duration) -> Result<i32> {
    let waiting = progress::step(format!("stopping pod {id}"));
    let stopped = stop(state_dir, id, timeout).await;
    drop(waiting);
    match stopped? {
        Stopped::Already(id) => println!("pod {id} has already exited"),
        Stopped::Now(r) => {
            println!("pod {} stopped", r.id);
            for a in &r.apps {
                if let Some(code) = a.exit_code {
                    println!("  {}: status {code}", a.name);
                }
            }
        }
    }
    Ok(0)
}

/// What `stop` found.
pub enum Stopped {
    /// The pod had exited before (its ID).
    Already(String),
    /// It has stopped now: its final record.
    Now(Box<PodRecord>),
}

/// Stops the pod and waits until its monitor has recorded the end and
/// released what it held; prints nothing.
pub async fn stop(state_dir: &Path, id: &str, timeout: Duration) -> Result<Stopped> {
    let pod = StoredPod::open(state_dir, id)?;
    match pod.record.state {
        State::Exited => return Ok(Stopped::Already(pod.record.id)),
        State::Pooled => bail!("{} is a VM of the warm pool, not a pod", pod.record.id),
        State::Prepared => bail!(
            "pod {} is still starting; try again in a moment",
            pod.record.id
        ),
        State::Running => {}
    }
    record::update(&pod.dir, |r| {
        r.stop_requested.get_or_insert_with(record::now);
    })?;
    let client = pod.client().await?;
    let mut req = ShutdownRequest::new();
    req.grace_ms = u32::try_from(timeout.as_millis())
        .unwrap_or(u32::MAX)
        .max(1);
    client
        .shutdown(agent::deadline(Duration::from_secs(10)), &req)
        .await
        .map_err(|e| anyhow!("asking pod {} to stop: {e}", pod.record.id))?;
    let until = Instant::now() + timeout + Duration::from_secs(30);
    loop {
        let r = store::reconcile(&pod.dir)?;
        // Over once recorded and its monitor has finished (the VM is off
        // and what the pod held on the host is released).
        if r.state == State::Exited && !record::monitor_alive(&pod.dir) {
            return Ok(Stopped::Now(Box::new(r)));
        }
        if Instant::now() > until {
            bail!(
                "pod {} did not stop within {}s",
                r.id,
                (timeout + Duration::from_secs(30)).as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
