//! `host-ctl stop <pod> [--timeout S]`: a graceful stop. The apps get
//! SIGTERM and S seconds, then SIGKILL; the agent syncs, unmounts the
//! volumes and powers off; the monitor records the end.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use kvmpod_api::protocol::ShutdownRequest;

use crate::agent;
use crate::pod::record::{self, State};
use crate::pod::{store, StoredPod};

pub async fn run(state_dir: &Path, id: &str, timeout: Duration) -> Result<i32> {
    let pod = StoredPod::open(state_dir, id)?;
    match pod.record.state {
        State::Exited => {
            println!("pod {} has already exited", pod.record.id);
            return Ok(0);
        }
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
            println!("pod {} stopped", r.id);
            for a in &r.apps {
                if let Some(code) = a.exit_code {
                    println!("  {}: status {code}", a.name);
                }
            }
            return Ok(0);
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
