//! Pod records: `<state>/pods/<uuid>/state.json`, what host-ctl knows of a
//! pod between commands. Every change is made under the pod's lock
//! (`flock` on `<pod dir>/lock`) and written atomically (write, fsync,
//! rename, fsync the directory), so concurrent host-ctl invocations never
//! see or leave half a record.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{anyhow, bail, Context, Result};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::poddir::PodDir;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Created; the VM is starting.
    Prepared,
    /// The agent answered; the pod runs.
    Running,
    /// Over: every app exited, it was stopped, or its VM died.
    Exited,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Prepared => "prepared",
            State::Running => "running",
            State::Exited => "exited",
        }
    }
}

/// A process, named by pid and start time so that a recycled pid is never
/// mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcRef {
    pub pid: i32,
    /// Field 22 of `/proc/<pid>/stat`: clock ticks after boot.
    pub start_time: u64,
}

impl ProcRef {
    /// The process `pid` as it is now.
    pub fn of(pid: u32) -> Option<ProcRef> {
        let pid = i32::try_from(pid).ok()?;
        Some(ProcRef {
            pid,
            start_time: start_time(pid)?,
        })
    }

    /// Whether this very process still exists (and is not a zombie).
    pub fn alive(&self) -> bool {
        match proc_stat(self.pid) {
            Some((state, start)) => start == self.start_time && state != 'Z' && state != 'X',
            None => false,
        }
    }
}

/// State letter and start time from `/proc/<pid>/stat`.
fn proc_stat(pid: i32) -> Option<(char, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: split after
    // the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

fn start_time(pid: i32) -> Option<u64> {
    proc_stat(pid).map(|(_, s)| s)
}

/// How an app ended, as far as the host knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppSummary {
    pub name: String,
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub signal: i32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub restarts: u32,
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodRecord {
    pub id: String,
    pub state: State,
    /// The manifest the user gave (the validated copy is `pod.json`).
    pub manifest: PathBuf,
    pub created: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
    /// Started with `--detach`: a monitor process owns the VM.
    pub detached: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accel: Option<String>,
    /// The process that owns the VM: host-ctl run, or a detached monitor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor: Option<ProcRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<ProcRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock_backend: Option<ProcRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hypervisor: Option<String>,
    /// The guest's vsock CID (leased in `<state>/cids`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cid: Option<u32>,
    /// Where the agent is reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<crate::vsock::Endpoint>,
    #[serde(default)]
    pub apps: Vec<AppSummary>,
    /// Why the pod ended (or failed to start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_reason: Option<String>,
    /// When `host-ctl stop` asked the pod to stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_requested: Option<String>,
    /// The size of the pod's initramfs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initramfs_bytes: Option<u64>,
    /// The guest's boot timeline as last seen (seconds after the kernel
    /// started).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<TimelineEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub name: String,
    pub seconds: f64,
}

/// Now, as an RFC 3339 UTC timestamp.
pub fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

impl PodRecord {
    pub fn new(dir: &PodDir, manifest: &Path, detached: bool) -> Self {
        PodRecord {
            id: dir.id.clone(),
            state: State::Prepared,
            manifest: manifest.to_path_buf(),
            created: now(),
            started: None,
            finished: None,
            detached,
            accel: None,
            monitor: None,
            vm: None,
            vsock_backend: None,
            hypervisor: None,
            cid: None,
            endpoint: None,
            apps: Vec::new(),
            exit_reason: None,
            stop_requested: None,
            initramfs_bytes: None,
            timeline: Vec::new(),
        }
    }

    /// The first non-zero app exit status in manifest order, else 0.
    pub fn exit_code(&self) -> i32 {
        self.apps
            .iter()
            .filter_map(|a| a.exit_code)
            .find(|&c| c != 0)
            .unwrap_or(0)
    }
}

fn state_path(dir: &Path) -> PathBuf {
    dir.join("state.json")
}

/// Reads a record without locking (a rename makes every read whole).
pub fn read(dir: &Path) -> Result<PodRecord> {
    let path = state_path(dir);
    let text = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("{} is not a pod record", path.display()))
}

/// The pod's lock, held for the duration of a read-modify-write.
pub fn lock(dir: &Path) -> Result<Flock<File>> {
    let path = dir.join("lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, e)| anyhow!("locking {}: {e}", path.display()))
}

/// Writes `record` atomically (the caller holds the lock).
pub fn write(dir: &Path, record: &PodRecord) -> Result<()> {
    let path = state_path(dir);
    let tmp = dir.join("state.json.tmp");
    let mut f = File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(&serde_json::to_vec_pretty(record)?)?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// Creates the record of a new pod.
pub fn create(dir: &Path, record: &PodRecord) -> Result<()> {
    let _guard = lock(dir)?;
    write(dir, record)
}

/// Reads, changes and writes the record under the lock; returns the new
/// record.
pub fn update(dir: &Path, change: impl FnOnce(&mut PodRecord)) -> Result<PodRecord> {
    let _guard = lock(dir)?;
    let mut r = read(dir)?;
    change(&mut r);
    write(dir, &r)?;
    Ok(r)
}

/// The lock a pod's monitor holds for as long as it lives.
fn monitor_lock_file(dir: &Path) -> Result<File> {
    let path = dir.join("monitor.lock");
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))
}

/// Takes the monitor lock, waiting up to 2 s (a probe may hold it for an
/// instant); None when another monitor has it.
pub fn take_monitor_lock(dir: &Path) -> Result<Option<Flock<File>>> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let mut file = monitor_lock_file(dir)?;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(Some(lock)),
            Err((f, nix::errno::Errno::EWOULDBLOCK)) if std::time::Instant::now() < deadline => {
                file = f;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Ok(None),
            Err((_, e)) => bail!("locking {}: {e}", dir.join("monitor.lock").display()),
        }
    }
}

/// Whether a monitor (or an attached `run`) owns the pod right now.
pub fn monitor_alive(dir: &Path) -> bool {
    let Ok(file) = monitor_lock_file(dir) else {
        return false;
    };
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(_probe) => false,
        Err(_) => true,
    }
}

/// The pod directories under `state_dir`, oldest first.
pub fn all(state_dir: &Path) -> Result<Vec<PathBuf>> {
    let pods = state_dir.join("pods");
    let entries = match fs::read_dir(&pods) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", pods.display())),
    };
    let mut dirs: Vec<(SystemTime, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| state_path(p).is_file())
        .map(|p| {
            let t = fs::metadata(state_path(&p))
                .and_then(|m| m.created().or_else(|_| m.modified()))
                .unwrap_or(SystemTime::UNIX_EPOCH);
            (t, p)
        })
        .collect();
    dirs.sort();
    Ok(dirs.into_iter().map(|(_, p)| p).collect())
}

/// The pod directory named by `id`: a whole UUID or a unique prefix.
pub fn find(state_dir: &Path, id: &str) -> Result<PathBuf> {
    if id.is_empty() || id.contains('/') {
        bail!("{id:?} is not a pod ID");
    }
    let matches: Vec<PathBuf> = all(state_dir)?
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(id))
        })
        .collect();
    match matches.len() {
        0 => bail!(
            "no pod {id:?} in {} (`host-ctl list` shows the pods)",
            state_dir.join("pods").display()
        ),
        1 => Ok(matches.into_iter().next().unwrap_or_default()),
        n => bail!("{id:?} names {n} pods; give more of the ID"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_update_atomically() {
        let state = tempfile::tempdir().unwrap();
        let dir = PodDir::create(state.path()).unwrap();
        let rec = PodRecord::new(&dir, Path::new("/srv/pod.json"), true);
        create(&dir.path, &rec).unwrap();
        assert_eq!(read(&dir.path).unwrap(), rec);
        let r = update(&dir.path, |r| {
            r.state = State::Exited;
            r.apps.push(AppSummary {
                name: "a".into(),
                state: "exited".into(),
                exit_code: Some(3),
                signal: 0,
                error: String::new(),
                restarts: 0,
            });
        })
        .unwrap();
        assert_eq!(r.exit_code(), 3);
        assert_eq!(read(&dir.path).unwrap().state, State::Exited);
        assert!(!dir.path.join("state.json.tmp").exists());
    }

    #[test]
    fn concurrent_updates_lose_nothing() {
        let state = tempfile::tempdir().unwrap();
        let dir = PodDir::create(state.path()).unwrap();
        create(&dir.path, &PodRecord::new(&dir, Path::new("p"), false)).unwrap();
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let d = dir.path.clone();
                std::thread::spawn(move || {
                    for j in 0..10 {
                        update(&d, |r| {
                            r.apps.push(AppSummary {
                                name: format!("{i}-{j}"),
                                state: String::new(),
                                exit_code: None,
                                signal: 0,
                                error: String::new(),
                                restarts: 0,
                            })
                        })
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(read(&dir.path).unwrap().apps.len(), 80);
    }

    #[test]
    fn pods_are_found_by_unique_prefix() {
        let state = tempfile::tempdir().unwrap();
        let a = PodDir::create(state.path()).unwrap();
        create(&a.path, &PodRecord::new(&a, Path::new("p"), false)).unwrap();
        assert_eq!(find(state.path(), &a.id[..8]).unwrap(), a.path);
        assert!(find(state.path(), "zzz")
            .unwrap_err()
            .to_string()
            .contains("no pod"));
        assert!(find(state.path(), "../x").is_err());
    }

    #[test]
    fn processes_are_recognised_by_pid_and_start_time() {
        let me = ProcRef::of(std::process::id()).unwrap();
        assert!(me.alive());
        let recycled = ProcRef {
            pid: me.pid,
            start_time: me.start_time + 1,
        };
        assert!(!recycled.alive());
        assert!(!ProcRef {
            pid: i32::MAX,
            start_time: 0
        }
        .alive());
    }
}
