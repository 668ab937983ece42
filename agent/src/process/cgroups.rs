//! Per-app cgroups (v2) in the guest: limits from the manifest
//! (`memory.max`, `cpu.weight`, `pids.max`), usage for `Stats`, and the OOM
//! kill count for events. Each app, and everything exec'd in it, lives in
//! `/sys/fs/cgroup/app-<name>`.

use std::fs;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use kvmpod_api::layout::CGROUP_ROOT;
use kvmpod_api::manifest::Resources;
use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::mount::{mount, MsFlags};
use nix::sys::stat::Mode;

use crate::error::{Context, SysError};

/// Mounts the cgroup2 hierarchy and hands the memory, cpu and pids
/// controllers down to the apps' cgroups. A controller the kernel lacks is
/// reported and left out; the pod still runs.
pub fn setup() -> Result<(), SysError> {
    let mount_with = |options: &str| {
        mount(
            Some("cgroup2"),
            CGROUP_ROOT,
            Some("cgroup2"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some(options),
        )
    };
    // `favordynmods`: moving a process into a cgroup (every app start)
    // then skips an RCU grace period, at a small cost to fork and exit.
    // Kernels before 6.0 do not know it.
    let mounted = match mount_with("nsdelegate,favordynmods") {
        Err(Errno::EINVAL) => mount_with("nsdelegate"),
        other => other,
    };
    match mounted {
        Ok(()) | Err(Errno::EBUSY) => {}
        Err(errno) => {
            return Err(SysError {
                context: format!("mounting cgroup2 at {CGROUP_ROOT}"),
                errno,
            })
        }
    }
    let control = Path::new(CGROUP_ROOT).join("cgroup.subtree_control");
    for controller in ["+memory", "+cpu", "+pids"] {
        if let Err(e) = fs::write(&control, controller) {
            log::warn!("cgroup controller {controller} unavailable: {e}");
        }
    }
    Ok(())
}

/// One app's cgroup.
#[derive(Debug, Clone)]
pub struct AppCgroup {
    dir: PathBuf,
}

/// Usage figures of one cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub memory_current: u64,
    pub memory_peak: u64,
    /// 0 when there is no limit.
    pub memory_max: u64,
    pub cpu_usage_usec: u64,
    pub pids_current: u64,
    pub oom_kills: u64,
}

impl AppCgroup {
    /// Creates (or reuses) the app's cgroup and applies its limits.
    pub fn create(app: &str, resources: &Resources) -> Result<Self, SysError> {
        let dir = Path::new(CGROUP_ROOT).join(format!("app-{app}"));
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).context(|| format!("creating cgroup {}", dir.display())),
        }
        let cg = AppCgroup { dir };
        if let Some(max) = resources.memory_limit {
            cg.write("memory.max", &max.to_string())?;
            // Without swap in the guest this is moot, but a limit should
            // not be escapable through swap either.
            let _ = fs::write(cg.dir.join("memory.swap.max"), "0");
        }
        if let Some(weight) = resources.cpu_weight {
            cg.write("cpu.weight", &weight.to_string())?;
        }
        if let Some(pids) = resources.pids_limit {
            cg.write("pids.max", &pids.to_string())?;
        }
        Ok(cg)
    }

    fn write(&self, file: &str, value: &str) -> Result<(), SysError> {
        let path = self.dir.join(file);
        fs::write(&path, value).context(|| format!("setting {} to {value}", path.display()))
    }

    /// `cgroup.procs`, opened for a child to write "0" to between fork and
    /// exec: it then starts inside the cgroup, before it can fork.
    pub fn procs_fd(&self) -> Result<OwnedFd, SysError> {
        let path = self.dir.join("cgroup.procs");
        open(&path, OFlag::O_WRONLY | OFlag::O_CLOEXEC, Mode::empty())
            .context(|| format!("opening {}", path.display()))
    }

    /// The processes in the cgroup and in any cgroup below it (an app
    /// with the cgroup file system may make its own), in PID order: the
    /// app's, its children's and those exec'd in it; an empty list once
    /// the cgroup has been removed.
    pub fn pids(&self) -> Result<Vec<i32>, SysError> {
        let mut pids = Vec::new();
        let mut dirs = vec![self.dir.clone()];
        while let Some(dir) = dirs.pop() {
            let procs = dir.join("cgroup.procs");
            match fs::read_to_string(&procs) {
                Ok(text) => pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok())),
                // Removed meanwhile, with whatever ran in it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).context(|| format!("reading {}", procs.display())),
            }
            // Only directories are cgroups; a child removed meanwhile is
            // no loss.
            for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    dirs.push(entry.path());
                }
            }
        }
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }

    pub fn usage(&self) -> Usage {
        let read = |f: &str| fs::read_to_string(self.dir.join(f)).unwrap_or_default();
        let number = |f: &str| read(f).trim().parse::<u64>().unwrap_or(0);
        Usage {
            memory_current: number("memory.current"),
            memory_peak: number("memory.peak"),
            memory_max: number("memory.max"), // "max" parses as 0: no limit
            cpu_usage_usec: keyed(&read("cpu.stat"), "usage_usec"),
            pids_current: number("pids.current"),
            oom_kills: self.oom_kills(),
        }
    }

    /// SIGKILLs every process left in the cgroup (`cgroup.kill`), as an
    /// app leaves its pod: a daemon it started goes too.
    pub fn kill_all(&self) -> Result<(), SysError> {
        self.write("cgroup.kill", "1")
    }

    /// Removes the cgroup once its processes are gone (waiting briefly for
    /// the kernel to reap them), so a later app of the same name starts
    /// with no limits of this one's.
    pub fn remove(&self) -> Result<(), SysError> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match fs::remove_dir(&self.dir) {
                Err(e)
                    if e.raw_os_error() == Some(libc::EBUSY)
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => {
                    return other.context(|| format!("removing cgroup {}", self.dir.display()))
                }
            }
        }
    }

    /// How many of the app's processes the OOM killer has killed.
    pub fn oom_kills(&self) -> u64 {
        keyed(
            &fs::read_to_string(self.dir.join("memory.events")).unwrap_or_default(),
            "oom_kill",
        )
    }
}

/// The value of `key` in a flat-keyed cgroup file ("key value" lines).
fn keyed(text: &str, key: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_keyed_files_parse() {
        let stat = "usage_usec 12345\nuser_usec 10000\nsystem_usec 2345\n";
        assert_eq!(keyed(stat, "usage_usec"), 12345);
        assert_eq!(keyed(stat, "system_usec"), 2345);
        assert_eq!(
            keyed("low 0\nhigh 0\nmax 3\noom 2\noom_kill 1\n", "oom_kill"),
            1
        );
        assert_eq!(keyed("", "oom_kill"), 0);
    }

    #[test]
    fn pids_include_cgroups_below_and_a_removed_one_has_none() {
        let dir = tempfile::tempdir().unwrap();
        let cg = AppCgroup {
            dir: dir.path().join("app-web"),
        };
        assert_eq!(cg.pids().unwrap(), Vec::<i32>::new());
        fs::create_dir_all(cg.dir.join("workers/one")).unwrap();
        fs::write(cg.dir.join("cgroup.procs"), "12\n7\n").unwrap();
        fs::write(cg.dir.join("cgroup.events"), "populated 1\n").unwrap();
        fs::write(cg.dir.join("workers/cgroup.procs"), "").unwrap();
        fs::write(cg.dir.join("workers/one/cgroup.procs"), "40\n").unwrap();
        assert_eq!(cg.pids().unwrap(), [7, 12, 40]);
    }
}
