//! The pool's VMs: pod directories whose record says `pooled`.

use std::fs::File;
use std::path::Path;
use std::time::Duration;

use kvmpod_api::timeline::Stage;
use nix::fcntl::Flock;

use super::spec::{pool_dir, PoolSpec};
use super::{io, PoolError};
use crate::agent::console;
use crate::pod::record::{self, PodRecord, State};
use crate::pod::{lockfile, store, PodDir};

/// One VM of the pool.
#[derive(Debug, Clone)]
pub struct Member {
    pub dir: PodDir,
    pub record: PodRecord,
}

/// Where a member is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Its VM is starting.
    Booting,
    /// Its agent waits to be claimed.
    Waiting,
    /// Its VM is gone: it is removed, never handed out.
    Dead,
}

impl Readiness {
    pub fn as_str(self) -> &'static str {
        match self {
            Readiness::Booting => "booting",
            Readiness::Waiting => "waiting",
            Readiness::Dead => "dead",
        }
    }
}

impl Member {
    pub fn readiness(&self) -> Readiness {
        match self.record.vm {
            Some(vm) if !vm.alive() => Readiness::Dead,
            // A VM, and every backend it was started with, alive.
            Some(_) if self.record.processes().any(|p| !p.alive()) => Readiness::Dead,
            Some(_) if console::file_reached(&self.dir.console_log(), Stage::PoolWaiting) => {
                Readiness::Waiting
            }
            _ => Readiness::Booting,
        }
    }

    /// Kills its processes and removes it, with what it holds (CID lease,
    /// mounts).
    pub fn discard(&self) {
        for p in self.record.processes() {
            p.kill();
        }
        if let Err(e) = store::remove(&self.dir) {
            eprintln!("host-ctl: removing pool VM {}: {e}", self.dir.id);
        }
    }
}

/// The pool's members, oldest first.
pub fn members(state_dir: &Path) -> Result<Vec<Member>, PoolError> {
    Ok(store::all_dirs(state_dir)?
        .into_iter()
        .filter_map(|dir| {
            let record = record::read(&dir).ok()?;
            (record.state == State::Pooled).then_some(Member { dir, record })
        })
        .collect())
}

/// Takes `pool/<name>.lock`, waiting up to `wait` when another process
/// holds it; `None` if it could not.
pub(super) fn lock(
    state_dir: &Path,
    name: &str,
    wait: Duration,
) -> Result<Option<Flock<File>>, PoolError> {
    let dir = pool_dir(state_dir);
    std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
    let path = dir.join(format!("{name}.lock"));
    lockfile::try_lock(&path, wait).map_err(io("locking", &path))
}

/// Ends the pool: no more fills or claims, then every member removed (once
/// a fill under way has finished its boots). Returns the members removed.
pub fn stop(state_dir: &Path) -> Result<Vec<String>, PoolError> {
    PoolSpec::remove(state_dir)?;
    // A fill sees the pool gone before its next boot; its boots under way
    // take at most their boot timeout.
    let fill = lock(state_dir, "fill", Duration::from_secs(180))?;
    if fill.is_none() {
        return Err(PoolError::Invalid(
            "a pool fill is still booting VMs after 3 minutes; run `pool stop` again".into(),
        ));
    }
    let _claims = lock(state_dir, "claim", Duration::from_secs(30))?;
    let mut removed = Vec::new();
    for m in members(state_dir)? {
        m.discard();
        removed.push(m.dir.id);
    }
    let _ = std::fs::remove_dir_all(pool_dir(state_dir));
    Ok(removed)
}

/// What `gc` removes of the pool: members whose VM died or that no fill is
/// booting any more, and every member when the pool was stopped without
/// them (its spec is gone). Returns the members removed.
pub fn gc(state_dir: &Path) -> Result<Vec<String>, PoolError> {
    let pool = PoolSpec::read(state_dir)?;
    let no_fill = lock(state_dir, "fill", Duration::ZERO)?.is_some();
    let mut removed = Vec::new();
    for m in members(state_dir)? {
        let dead = m.readiness() == Readiness::Dead || (no_fill && m.record.vm.is_none());
        if dead || (no_fill && pool.is_none()) {
            m.discard();
            removed.push(m.dir.id);
        }
    }
    Ok(removed)
}
