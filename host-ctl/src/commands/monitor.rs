//! `host-ctl monitor <pod dir>` (hidden): the life of a detached pod's
//! monitor process, started by `run --detach` or, with `--adopt`, to take
//! over a running VM whose monitor died.

use std::path::Path;

use anyhow::Result;

use crate::pod::monitor::spawn::{spawn_keeper, KeeperStart};
use crate::pod::monitor::{self, read_manifest, Adoption};
use crate::pod::record;
use crate::pod::{Monitor, PodDir, VmLaunch};

pub async fn run(dir: &Path, adopt: bool) -> Result<i32> {
    let dir = PodDir::open(dir)?;
    let interrupts = monitor::interrupts()?;
    keep_a_keeper(&dir)?;
    let monitor = if adopt {
        eprintln!(
            "host-ctl monitor: adopting pod {} at {}",
            dir.id,
            record::now()
        );
        Monitor::adopt(dir, Adoption::Orphan).await?
    } else {
        let launch = VmLaunch::read(&dir)?;
        let pod = read_manifest(&dir)?;
        Monitor::boot(dir, pod, &launch, false).await?
    };
    let outcome = monitor.supervise(None, interrupts).await?;
    eprintln!(
        "host-ctl monitor: pod {} ended at {}: {}",
        outcome.record.id,
        record::now(),
        outcome.record.exit_reason.as_deref().unwrap_or("")
    );
    Ok(0)
}

/// The keeper that started this monitor sends SIGHUP when it dies (its
/// parent-death signal); a new keeper then watches this monitor, so the
/// pod stays kept.
fn keep_a_keeper(dir: &PodDir) -> Result<()> {
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let dir = dir.clone();
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            eprintln!(
                "host-ctl monitor: pod {}: its keeper died at {}; starting another",
                dir.id,
                record::now()
            );
            if let Err(e) = spawn_keeper(&dir, KeeperStart::Watch) {
                eprintln!("host-ctl monitor: starting a keeper: {e}");
            }
        }
    });
    Ok(())
}
