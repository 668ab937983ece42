//! Guest CIDs. AF_VSOCK addresses are global to the host kernel, so no two
//! running pods may share one. A CID is leased to a pod by a file
//! `<state>/cids/<cid>` naming it, taken under a lock; it is released when
//! the pod ends, and reclaimed from pods that are gone or over.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use super::dir::{cids_dir, PodDir};
use super::record::{self, State};
use super::PodError;

type Result<T> = std::result::Result<T, PodError>;

/// CIDs 0 to 2 are reserved (hypervisor, local, host).
pub const FIRST: u32 = 3;
/// How many CIDs kvmpod hands out.
const SPAN: u32 = 4096;

fn dir(state_dir: &Path) -> PathBuf {
    cids_dir(state_dir)
}

fn lock(state_dir: &Path) -> Result<Flock<fs::File>> {
    let d = dir(state_dir);
    let io = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| PodError::Io { what, path, source }
    };
    fs::create_dir_all(&d).map_err(io("creating", &d))?;
    let lock = d.join(".lock");
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock)
        .map_err(io("opening", &lock))?;
    Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| io("locking", &lock)(e.into()))
}

/// Whether the pod holding a lease still needs its CID.
fn holder_alive(state_dir: &Path, pod: &str) -> bool {
    match record::read(&PodDir::of(state_dir, pod)) {
        Ok(r) => r.state != State::Exited,
        Err(_) => false,
    }
}

/// Leases the lowest free CID to `pod`.
pub fn allocate(state_dir: &Path, pod: &str) -> Result<u32> {
    let _guard = lock(state_dir)?;
    for cid in FIRST..FIRST + SPAN {
        let lease = dir(state_dir).join(cid.to_string());
        match fs::read_to_string(&lease) {
            Ok(holder) if holder_alive(state_dir, holder.trim()) => continue,
            Ok(_) | Err(_) => {
                fs::write(&lease, pod).map_err(|source| PodError::Io {
                    what: "writing",
                    path: lease.clone(),
                    source,
                })?;
                return Ok(cid);
            }
        }
    }
    Err(PodError::Invalid(format!(
        "no free guest CID among {SPAN}: remove exited pods with `host-ctl gc`"
    )))
}

/// The CID `allocate` would give now (for `host-ctl args`, which leases
/// nothing).
pub fn peek(state_dir: &Path) -> u32 {
    (FIRST..FIRST + SPAN)
        .find(
            |cid| match fs::read_to_string(dir(state_dir).join(cid.to_string())) {
                Ok(holder) => !holder_alive(state_dir, holder.trim()),
                Err(_) => true,
            },
        )
        .unwrap_or(FIRST)
}

/// Releases `pod`'s lease on `cid` (a lease since taken by another pod is
/// left alone).
pub fn release(state_dir: &Path, cid: u32, pod: &str) {
    let Ok(_guard) = lock(state_dir) else { return };
    let lease = dir(state_dir).join(cid.to_string());
    if fs::read_to_string(&lease).is_ok_and(|h| h.trim() == pod) {
        let _ = fs::remove_file(lease);
    }
}

/// Removes every lease whose pod is gone or over; returns how many.
pub fn reclaim(state_dir: &Path) -> usize {
    let Ok(_guard) = lock(state_dir) else {
        return 0;
    };
    let Ok(entries) = fs::read_dir(dir(state_dir)) else {
        return 0;
    };
    let mut n = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let holder = fs::read_to_string(e.path()).unwrap_or_default();
        if !holder_alive(state_dir, holder.trim()) && fs::remove_file(e.path()).is_ok() {
            n += 1;
        }
    }
    n
}

/// The leases held now: (CID, pod).
#[cfg(test)]
pub fn leases(state_dir: &Path) -> Vec<(u32, String)> {
    let Ok(entries) = fs::read_dir(dir(state_dir)) else {
        return Vec::new();
    };
    let mut out: Vec<(u32, String)> = entries
        .flatten()
        .filter_map(|e| {
            let cid = e.file_name().to_string_lossy().parse().ok()?;
            Some((cid, fs::read_to_string(e.path()).ok()?.trim().to_string()))
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::record::PodRecord;

    fn pod(state: &Path, st: State) -> String {
        let d = PodDir::create(state).unwrap();
        let mut r = PodRecord::new(&d, Path::new("p"), false);
        r.state = st;
        record::create(&d, &r).unwrap();
        d.id
    }

    #[test]
    fn leases_are_distinct_released_and_reclaimed() {
        let state = tempfile::tempdir().unwrap();
        let s = state.path();
        let a = pod(s, State::Running);
        let b = pod(s, State::Running);
        let ca = allocate(s, &a).unwrap();
        let cb = allocate(s, &b).unwrap();
        assert_eq!((ca, cb), (3, 4));
        assert_eq!(peek(s), 5);
        release(s, ca, &b); // not b's: kept
        assert_eq!(leases(s).len(), 2);
        release(s, ca, &a);
        assert_eq!(allocate(s, &pod(s, State::Running)).unwrap(), 3);
        // A lease held by an exited pod, or a removed one, is reclaimed.
        record::update(&PodDir::of(s, &b), |r| r.state = State::Exited).unwrap();
        assert_eq!(reclaim(s), 1);
        assert_eq!(leases(s).iter().map(|l| l.0).collect::<Vec<_>>(), [3]);
    }

    #[test]
    fn concurrent_allocations_never_collide() {
        let state = tempfile::tempdir().unwrap();
        let s = state.path().to_path_buf();
        let ids: Vec<String> = (0..16).map(|_| pod(&s, State::Running)).collect();
        let threads: Vec<_> = ids
            .into_iter()
            .map(|id| {
                let s = s.clone();
                std::thread::spawn(move || allocate(&s, &id).unwrap())
            })
            .collect();
        let mut cids: Vec<u32> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        cids.sort();
        cids.dedup();
        assert_eq!(cids.len(), 16);
    }
}
