//! `host-ctl rm` and `host-ctl gc`: removing pods that are over.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::pods::{self, Pod};
use crate::record::State;

/// Removes the named pods; a running pod only with `force` (it is stopped
/// first, without a grace period).
pub async fn rm(state_dir: &Path, ids: &[String], force: bool) -> Result<i32> {
    let mut failed = false;
    for id in ids {
        match remove_one(state_dir, id, force).await {
            Ok(removed) => println!("{removed}"),
            Err(e) => {
                eprintln!("host-ctl: {e:#}");
                failed = true;
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

async fn remove_one(state_dir: &Path, id: &str, force: bool) -> Result<String> {
    let pod = Pod::open(state_dir, id)?;
    if pod.record.state != State::Exited {
        if !force {
            bail!(
                "pod {} is {}; stop it first, or use --force",
                pod.record.id,
                pod.record.state.as_str()
            );
        }
        super::stop::run(state_dir, id, Duration::ZERO).await?;
    }
    // An exited pod's monitor may still be powering the VM off.
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while crate::record::monitor_alive(&pod.dir.path) {
        if std::time::Instant::now() > until {
            bail!(
                "pod {} is still shutting down; try again in a moment",
                pod.record.id
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    crate::launch::release(state_dir, &pod.dir);
    std::fs::remove_dir_all(&pod.dir.path)
        .with_context(|| format!("removing {}", pod.dir.path.display()))?;
    Ok(pod.record.id)
}

/// Removes every pod that is over, after marking pods whose VM died as
/// exited (with why), and reclaims CID leases left by pods that are gone.
pub fn gc(state_dir: &Path) -> Result<i32> {
    for r in pods::all(state_dir)? {
        let dir = crate::record::find(state_dir, &r.id)?;
        // Not over, or its monitor is still powering the VM off.
        if r.state != State::Exited || crate::record::monitor_alive(&dir) {
            continue;
        }
        if let Ok(d) = crate::poddir::PodDir::open(&dir) {
            crate::launch::release(state_dir, &d);
        }
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        println!(
            "removed {} ({})",
            r.id,
            r.exit_reason.as_deref().unwrap_or("exited")
        );
    }
    let stale = crate::cids::reclaim(state_dir);
    if stale > 0 {
        println!("reclaimed {stale} CID lease(s) of pods that are gone");
    }
    Ok(0)
}
