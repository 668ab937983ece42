//! Lock files: an `flock` on a file that is created on first use and never
//! removed while in use, so every holder locks the same inode. The pod's
//! record and monitor locks and the pool's fill and claim locks use them.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// How often a waiting [`try_lock`] tries again.
const RETRY: Duration = Duration::from_millis(20);

/// Opens (creating) the lock file at `path`.
pub fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
}

/// Takes the lock at `path`, waiting for as long as another process holds
/// it.
pub fn lock(path: &Path) -> io::Result<Flock<File>> {
    Flock::lock(open(path)?, FlockArg::LockExclusive).map_err(|(_, e)| e.into())
}

/// Takes the lock at `path`, waiting up to `wait` while another process
/// holds it; `None` when it is still held then.
pub fn try_lock(path: &Path, wait: Duration) -> io::Result<Option<Flock<File>>> {
    let until = Instant::now() + wait;
    let mut file = open(path)?;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(Some(lock)),
            Err((f, Errno::EWOULDBLOCK)) if Instant::now() < until => {
                file = f;
                std::thread::sleep(RETRY);
            }
            Err((_, Errno::EWOULDBLOCK)) => return Ok(None),
            Err((_, e)) => return Err(e.into()),
        }
    }
}

/// Whether some process holds the lock at `path` right now.
pub fn held(path: &Path) -> bool {
    matches!(try_lock(path, Duration::ZERO), Ok(None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_is_seen_and_waited_for_then_given_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        assert!(!held(&path));
        let first = try_lock(&path, Duration::ZERO).unwrap();
        assert!(first.is_some());
        // flock locks belong to the open file description: a second open
        // in this process contends like another process would.
        assert!(held(&path));
        let t = Instant::now();
        assert!(try_lock(&path, Duration::from_millis(100))
            .unwrap()
            .is_none());
        assert!(t.elapsed() >= Duration::from_millis(100));
        drop(first);
        assert!(try_lock(&path, Duration::from_secs(1)).unwrap().is_some());
        assert!(!held(&path));
    }
}
