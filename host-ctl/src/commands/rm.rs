//! `host-ctl rm` and `host-ctl gc`: removing pods that are over.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Result};

use crate::pod::record::{self, State};
use crate::pod::{cids, store, StoredPod};
use crate::ui::progress;

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
    let pod = StoredPod::open(state_dir, id)?;
    let _waiting = progress::step(format!("removing pod {}", pod.record.id));
    if pod.record.state != State::Exited {
        if !force {
            bail!(
                "pod {} is {}; stop it first, or use --force",
                pod.record.id,
                pod.record.state.as_str()
            );
        }
        super::stop::stop(state_dir, id, Duration::ZERO).await?;
    }
    // An exited pod's monitor may still be powering the VM off.
    if !pod.wait_for_monitor(Duration::from_secs(30)).await {
        bail!(
            "pod {} is still shutting down; try again in a moment",
            pod.record.id
        );
    }
    store::remove(&pod.dir)?;
    Ok(pod.record.id)
}

/// Removes every pod that is over, after marking pods whose VM died as
/// exited (with why), and reclaims CID leases left by pods that are gone.
pub fn gc(state_dir: &Path) -> Result<i32> {
    for dir in store::all_dirs(state_dir)? {
        let r = match store::reconcile(&dir) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("host-ctl: {}: {e}", dir.path.display());
                continue;
            }
        };
        // Not over, or its monitor is still powering the VM off. (The
        // warm pool's VMs are `pool stop`'s, or the pool's below.)
        if r.state != State::Exited || record::monitor_alive(&dir) {
            continue;
        }
        store::remove(&dir)?;
        println!(
            "removed {} ({})",
            r.id,
            r.exit_reason.as_deref().unwrap_or("exited")
        );
    }
    for id in crate::pool::gc(state_dir)? {
        println!("removed pool VM {id}");
    }
    let stale = cids::reclaim(state_dir);
    if stale > 0 {
        println!("reclaimed {stale} CID lease(s) of pods that are gone");
    }
    Ok(0)
}
