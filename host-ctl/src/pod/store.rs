//! The pods under a state directory: finding them, keeping their records
//! true, releasing what they hold on the host and removing them.
//!
//! A record can fall behind reality when a monitor is killed: `reconcile`
//! catches up. A pod whose VM is gone is marked exited, with why; a
//! running pod whose monitor died gets a new monitor that adopts its VM.
//! So `list` never shows a pod as running when its VM is gone.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use kvmpod_api::layout::DEFAULT_VSOCK_PORT;

use super::dir::{pods_dir, PodDir};
use super::monitor::spawn::{spawn_keeper, KeeperStart};
use super::record::{self, PodRecord, State};
use super::vm_launch::VmLaunch;
use super::{apps_share, cids, names, PodError};
use crate::agent::{self, AgentClient};
use crate::image::ImageStore;
use crate::vmm;

type Result<T> = std::result::Result<T, PodError>;

/// How long a freshly created pod may have no monitor (it is being
/// prepared, or its monitor is starting).
const PREPARE_GRACE: Duration = Duration::from_secs(120);

/// A pod found in the store, with its record brought up to date.
pub struct StoredPod {
    pub dir: PodDir,
    pub record: PodRecord,
}

impl StoredPod {
    /// The pod named by `id` (a UUID or a unique prefix), reconciled.
    pub fn open(state_dir: &Path, id: &str) -> Result<StoredPod> {
        let dir = find(state_dir, id)?;
        let record = reconcile(&dir)?;
        Ok(StoredPod { dir, record })
    }

    /// A connection to the pod's agent; the pod must be running.
    pub async fn client(&self) -> Result<AgentClient> {
        if self.record.state != State::Running {
            return Err(PodError::NotRunning(format!(
                "pod {} is {}",
                self.record.id,
                self.record.describe_state()
            )));
        }
        let endpoint = self.record.endpoint.as_ref().ok_or_else(|| {
            PodError::Invalid(format!("pod {} has no vsock endpoint", self.record.id))
        })?;
        Ok(agent::connect_once(endpoint, DEFAULT_VSOCK_PORT).await?)
    }

    /// Waits up to `limit` for the pod's monitor to finish (an exited pod's
    /// monitor may still be powering the VM off); whether it did.
    pub async fn wait_for_monitor(&self, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        while record::monitor_alive(&self.dir) {
            if Instant::now() > until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        true
    }
}

/// The pod directories under `state_dir`, oldest first.
pub fn all_dirs(state_dir: &Path) -> Result<Vec<PodDir>> {
    let pods = pods_dir(state_dir);
    let entries = match fs::read_dir(&pods) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(PodError::Io {
                what: "reading",
                path: pods,
                source,
            })
        }
    };
    let mut dirs: Vec<(SystemTime, PodDir)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| PodDir::open(&e.path()).ok())
        .map(|d| {
            let t = fs::metadata(d.record())
                .and_then(|m| m.created().or_else(|_| m.modified()))
                .unwrap_or(SystemTime::UNIX_EPOCH);
            (t, d)
        })
        .collect();
    dirs.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.id.cmp(&b.1.id)));
    Ok(dirs.into_iter().map(|(_, d)| d).collect())
}

/// The pod named by `id`: a whole UUID or a unique prefix.
pub fn find(state_dir: &Path, id: &str) -> Result<PodDir> {
    if id.is_empty() || id.contains('/') {
        return Err(PodError::NotFound(format!("{id:?} is not a pod ID")));
    }
    // A name first, as docker resolves names before ID prefixes.
    if let Some(named) = names::lookup(state_dir, id) {
        return Ok(PodDir::of(state_dir, &named));
    }
    let mut matches: Vec<PodDir> = all_dirs(state_dir)?
        .into_iter()
        .filter(|d| d.id.starts_with(id) && !is_pooled(d))
        .collect();
    match matches.len() {
        0 => Err(PodError::NotFound(format!(
            "no pod named {id:?} or with that ID in {} (`host-ctl list` shows the pods)",
            pods_dir(state_dir).display()
        ))),
        1 => Ok(matches.remove(0)),
        n => Err(PodError::NotFound(format!(
            "{id:?} names {n} pods; give more of the ID"
        ))),
    }
}

/// Whether `dir` is a VM of the warm pool (not a pod yet).
pub fn is_pooled(dir: &PodDir) -> bool {
    record::read(dir).is_ok_and(|r| r.state == State::Pooled)
}

fn age(created: &str) -> Duration {
    humantime::parse_rfc3339(created)
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .unwrap_or(Duration::MAX)
}

/// Brings the record of the pod in `dir` up to date (see the module docs).
pub fn reconcile(dir: &PodDir) -> Result<PodRecord> {
    let rec = record::read(dir)?;
    // A pool member is the pool's to keep (see `crate::pool`).
    if matches!(rec.state, State::Exited | State::Pooled) || record::monitor_alive(dir) {
        return Ok(rec);
    }
    let vm_alive = rec.vm.is_some_and(|v| v.alive());
    if vm_alive && rec.state == State::Running {
        // A live keeper is restarting the monitor already.
        if !rec.keeper.is_some_and(|k| k.alive()) {
            readopt(dir)?;
        }
        wait_for_monitor(dir, None);
        return record::read(dir);
    }
    // Being prepared, its monitor starting; or a pool VM its pod has
    // claimed and its monitor is about to adopt.
    if rec.state == State::Prepared
        && age(&rec.created) < PREPARE_GRACE
        && (!vm_alive || rec.claimed.is_some())
    {
        return Ok(rec);
    }
    abandon(dir, rec)
}

/// A pod with no monitor, and no VM or one nobody will adopt, ended
/// without anyone recording it: says so, and cleans up what is left.
pub fn abandon(dir: &PodDir, rec: PodRecord) -> Result<PodRecord> {
    for p in rec.processes() {
        p.kill();
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
    release(dir);
    Ok(rec)
}

/// Starts a keeper whose monitor adopts the running VM.
fn readopt(dir: &PodDir) -> Result<()> {
    let child = spawn_keeper(dir, KeeperStart::Adopt)?;
    wait_for_monitor(dir, Some(child));
    Ok(())
}

/// Waits (up to 5 s) until a monitor holds the pod, or `keeper` gave up.
fn wait_for_monitor(dir: &PodDir, mut keeper: Option<std::process::Child>) {
    let until = Instant::now() + Duration::from_secs(5);
    while !record::monitor_alive(dir) && Instant::now() < until {
        if let Some(Ok(Some(_))) = keeper.as_mut().map(|k| k.try_wait()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every pod, reconciled, oldest first (not the warm pool's VMs).
pub fn all(state_dir: &Path) -> Result<Vec<PodRecord>> {
    let mut out = Vec::new();
    for dir in all_dirs(state_dir)? {
        match reconcile(&dir) {
            Ok(r) if r.state == State::Pooled => {}
            Ok(r) => out.push(r),
            Err(e) => eprintln!("host-ctl: {}: {e}", dir.path.display()),
        }
    }
    Ok(out)
}

/// Releases what a pod holds on the host once it is over: its CID lease,
/// share aliases, sockets and initramfs. Safe to call more than once.
pub fn release(dir: &PodDir) {
    if let Ok(r) = record::read(dir) {
        if let Some(cid) = r.cid {
            cids::release(&dir.state_dir(), cid, &dir.id);
        }
    }
    vmm::unmount_aliases(&dir.aliases_dir());
    vmm::unmount_in(&dir.guest_roots());
    vmm::unmount_in(&dir.pool_volumes());
    apps_share::release(dir);
    // Once: the namespace may hold another pod by the time this pod is
    // removed.
    if let Ok(mut launch) = VmLaunch::read(dir) {
        if let Some(w) = launch.tap_wiring.take() {
            vmm::tapns::unwire(&w);
            if let Err(e) = launch.write(dir) {
                eprintln!("host-ctl: {}: {e}", dir.path.display());
            }
        }
    }
    if let Some(images) = ImageStore::existing(&dir.state_dir()) {
        images.release(&dir.id);
    }
    dir.tidy();
}

/// Releases and deletes an exited pod whose monitor is gone, and frees
/// its name.
pub fn remove(dir: &PodDir) -> Result<()> {
    release(dir);
    if let Some(name) = record::read(dir).ok().and_then(|r| r.name) {
        names::release(&dir.state_dir(), &name, &dir.id);
    }
    fs::remove_dir_all(&dir.path).map_err(|source| PodError::Io {
        what: "removing",
        path: dir.path.clone(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::process::ProcRef;

    #[test]
    fn pods_are_found_by_unique_prefix() {
        let state = tempfile::tempdir().unwrap();
        let a = PodDir::create(state.path()).unwrap();
        record::create(&a, &PodRecord::new(&a, Path::new("p"), false)).unwrap();
        assert_eq!(find(state.path(), &a.id[..8]).unwrap(), a);
        assert!(find(state.path(), "zzz")
            .unwrap_err()
            .to_string()
            .contains("no pod"));
        assert!(find(state.path(), "../x").is_err());
    }

    /// A young `prepared` pod with a live VM and no monitor is left alone
    /// only when it claimed that VM from the pool (its monitor is about
    /// to adopt it); otherwise its monitor died mid-boot and it ends now.
    #[test]
    fn only_a_claimed_vm_waits_for_its_monitor() {
        let state = tempfile::tempdir().unwrap();
        for claimed in [true, false] {
            let mut vm = std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .unwrap();
            let dir = PodDir::create(state.path()).unwrap();
            let mut rec = PodRecord::new(&dir, Path::new("p"), true);
            rec.vm = ProcRef::of(vm.id());
            rec.claimed = claimed.then(record::now);
            record::create(&dir, &rec).unwrap();
            let after = reconcile(&dir).unwrap();
            if claimed {
                assert_eq!(after.state, State::Prepared);
                assert!(vm.try_wait().unwrap().is_none(), "the claimed VM runs on");
                vm.kill().unwrap();
            } else {
                assert_eq!(after.state, State::Exited);
                assert!(after
                    .exit_reason
                    .unwrap()
                    .contains("abandoned while starting"));
                assert!(!vm.wait().unwrap().success(), "the VM was killed");
            }
        }
    }
}
