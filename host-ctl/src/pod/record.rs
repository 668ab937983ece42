//! Pod records: `<pod dir>/state.json`, what host-ctl knows of a pod
//! between commands. Every change is made under the pod's lock (`flock` on
//! `<pod dir>/lock`) and written atomically (write, fsync, rename, fsync
//! the directory), so concurrent host-ctl invocations never see or leave
//! half a record.

use kvmpod_api::network::Network;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use kvmpod_api::protocol::{AppState, AppStatus, TimelineEvent};
use nix::fcntl::Flock;
use serde::{Deserialize, Serialize};

use super::dir::PodDir;
use super::lockfile;
use super::PodError;
use crate::agent::Endpoint;
use crate::vmm::process::ProcRef;
use crate::vmm::{Accel, HypervisorKind};

type Result<T> = std::result::Result<T, PodError>;

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PodError {
    let path = path.to_path_buf();
    move |source| PodError::Io { what, path, source }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// A VM of the warm pool, booted before its pod is known: not a pod
    /// yet (not listed), until a pod claims it.
    Pooled,
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
            State::Pooled => "pooled",
            State::Prepared => "prepared",
            State::Running => "running",
            State::Exited => "exited",
        }
    }
}

/// An app's state as the host records it (the agent's `AppState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppPhase {
    Pending,
    Running,
    Exited,
    Failed,
    Restarting,
    Unknown,
}

impl From<AppState> for AppPhase {
    fn from(s: AppState) -> Self {
        match s {
            AppState::APP_STATE_PENDING => AppPhase::Pending,
            AppState::APP_STATE_RUNNING => AppPhase::Running,
            AppState::APP_STATE_EXITED => AppPhase::Exited,
            AppState::APP_STATE_FAILED => AppPhase::Failed,
            AppState::APP_STATE_RESTARTING => AppPhase::Restarting,
            AppState::APP_STATE_UNSPECIFIED => AppPhase::Unknown,
        }
    }
}

impl AppPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            AppPhase::Pending => "pending",
            AppPhase::Running => "running",
            AppPhase::Exited => "exited",
            AppPhase::Failed => "failed",
            AppPhase::Restarting => "restarting",
            AppPhase::Unknown => "unknown",
        }
    }
}

/// An app as the host last saw it: recorded when the pod ends, shown live
/// by `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppSummary {
    pub name: String,
    pub state: AppPhase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub signal: i32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    /// Seconds after the guest kernel started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exited: Option<f64>,
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub restarts: u32,
    /// Bytes of output the agent dropped (non-blocking log mode only).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub dropped_bytes: u64,
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

fn secs(ns: u64) -> Option<f64> {
    (ns > 0).then(|| ns as f64 / 1e9)
}

impl AppSummary {
    /// An app that has not started yet.
    pub fn pending(name: &str) -> Self {
        AppSummary {
            name: name.to_string(),
            state: AppPhase::Pending,
            pid: None,
            exit_code: None,
            signal: 0,
            error: String::new(),
            started: None,
            exited: None,
            restarts: 0,
            dropped_bytes: 0,
        }
    }

    /// The agent's view of an app, as the host keeps it.
    pub fn from_status(a: &AppStatus) -> Self {
        let state = a.state.enum_value_or_default();
        AppSummary {
            name: a.name.clone(),
            state: state.into(),
            pid: (a.pid > 0).then_some(a.pid),
            exit_code: state.is_done().then_some(a.exit_code),
            signal: a.signal,
            error: a.error.clone(),
            started: secs(a.started_ns),
            exited: secs(a.exited_ns),
            restarts: a.restarts,
            dropped_bytes: a.dropped_bytes,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodRecord {
    pub id: String,
    /// The name given with `run --name`; every command accepts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub state: State,
    /// The manifest the user gave (the validated copy is `pod.json`);
    /// empty for `run IMAGE`.
    #[serde(default)]
    pub manifest: PathBuf,
    /// The image of `run IMAGE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    pub created: String,
    /// When the pod took this VM from the warm pool: its VM runs before a
    /// monitor adopts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
    /// Started with `--detach`: a monitor process owns the VM.
    pub detached: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accel: Option<Accel>,
    /// The process that owns the VM: host-ctl run, or a detached monitor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor: Option<ProcRef>,
    /// A detached pod's keeper, which restarts its monitor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keeper: Option<ProcRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<ProcRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock_backend: Option<ProcRef>,
    /// passt, for user-mode networking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_backend: Option<ProcRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hypervisor: Option<HypervisorKind>,
    /// The guest's vsock CID (leased in `<state>/cids`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cid: Option<u32>,
    /// Where the agent is reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<Endpoint>,
    /// The pod's network: its mode and published ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    /// The guest's address on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<std::net::Ipv4Addr>,
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

impl From<&TimelineEvent> for TimelineEntry {
    fn from(e: &TimelineEvent) -> Self {
        TimelineEntry {
            name: e.name.clone(),
            seconds: e.boottime_ns as f64 / 1e9,
        }
    }
}

/// Now, as an RFC 3339 UTC timestamp.
pub fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

impl PodRecord {
    /// The host processes of the pod's VM that are running or were: the
    /// hypervisor, then its vsock and network backends.
    pub fn processes(&self) -> impl Iterator<Item = ProcRef> {
        [self.vm, self.vsock_backend, self.net_backend]
            .into_iter()
            .flatten()
    }

    /// The published ports, as `list` and `status` show them.
    pub fn ports(&self) -> String {
        let ports: Vec<String> = self
            .network
            .iter()
            .flat_map(|n| n.ports.iter().map(ToString::to_string))
            .collect();
        if ports.is_empty() {
            "-".into()
        } else {
            ports.join(",")
        }
    }

    pub fn new(dir: &PodDir, manifest: &Path, detached: bool) -> Self {
        PodRecord {
            id: dir.id.clone(),
            name: None,
            image: None,
            state: State::Prepared,
            manifest: manifest.to_path_buf(),
            created: now(),
            claimed: None,
            started: None,
            finished: None,
            detached,
            accel: None,
            monitor: None,
            keeper: None,
            vm: None,
            vsock_backend: None,
            net_backend: None,
            hypervisor: None,
            cid: None,
            endpoint: None,
            network: None,
            address: None,
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

    /// "running", or "exited (why)".
    pub fn describe_state(&self) -> String {
        match &self.exit_reason {
            Some(r) => format!("{} ({r})", self.state.as_str()),
            None => self.state.as_str().to_string(),
        }
    }
}

/// Reads a record without locking (a rename makes every read whole).
pub fn read(dir: &PodDir) -> Result<PodRecord> {
    let path = dir.record();
    let text = fs::read(&path).map_err(io("reading", &path))?;
    serde_json::from_slice(&text).map_err(|source| PodError::BadFile { path, source })
}

/// Opens (creating) a lock file.
/// The pod's lock, held for the duration of a read-modify-write.
fn lock(dir: &PodDir) -> Result<Flock<File>> {
    let path = dir.record_lock();
    lockfile::lock(&path).map_err(io("locking", &path))
}

/// Writes `record` atomically (the caller holds the lock).
fn write(dir: &PodDir, record: &PodRecord) -> Result<()> {
    let path = dir.record();
    let tmp = dir.record_tmp();
    let mut text = serde_json::to_vec_pretty(record).map_err(|source| PodError::BadFile {
        path: path.clone(),
        source,
    })?;
    text.push(b'\n');
    let mut f = File::create(&tmp).map_err(io("writing", &tmp))?;
    f.write_all(&text).map_err(io("writing", &tmp))?;
    f.sync_all().map_err(io("writing", &tmp))?;
    fs::rename(&tmp, &path).map_err(io("writing", &path))?;
    File::open(&dir.path)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing", &dir.path))
}

/// Creates the record of a new pod.
pub fn create(dir: &PodDir, record: &PodRecord) -> Result<()> {
    let _guard = lock(dir)?;
    write(dir, record)
}

/// Reads, changes and writes the record under the lock; returns the new
/// record.
pub fn update(dir: &PodDir, change: impl FnOnce(&mut PodRecord)) -> Result<PodRecord> {
    let _guard = lock(dir)?;
    let mut r = read(dir)?;
    change(&mut r);
    write(dir, &r)?;
    Ok(r)
}

/// Takes the lock that serialises adding and removing apps of a running
/// sandbox pod (held across the agent's request, unlike the record's).
pub fn lock_apps(dir: &PodDir) -> Result<Flock<File>> {
    let path = dir.path.join("apps.lock");
    lockfile::lock(&path).map_err(io("locking", &path))
}

/// Takes the monitor lock, waiting up to 2 s (a probe may hold it for an
/// instant); None when another monitor has it.
pub fn take_monitor_lock(dir: &PodDir) -> Result<Option<Flock<File>>> {
    let path = dir.monitor_lock();
    lockfile::try_lock(&path, std::time::Duration::from_secs(2)).map_err(io("locking", &path))
}

/// Whether a monitor (or an attached `run`) owns the pod right now.
pub fn monitor_alive(dir: &PodDir) -> bool {
    lockfile::held(&dir.monitor_lock())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_update_atomically() {
        let state = tempfile::tempdir().unwrap();
        let dir = PodDir::create(state.path()).unwrap();
        let rec = PodRecord::new(&dir, Path::new("/srv/pod.json"), true);
        create(&dir, &rec).unwrap();
        assert_eq!(read(&dir).unwrap(), rec);
        let r = update(&dir, |r| {
            r.state = State::Exited;
            r.apps.push(AppSummary {
                state: AppPhase::Exited,
                exit_code: Some(3),
                ..AppSummary::pending("a")
            });
        })
        .unwrap();
        assert_eq!(r.exit_code(), 3);
        assert_eq!(read(&dir).unwrap().state, State::Exited);
        assert!(!dir.record_tmp().exists());
        let text = fs::read_to_string(dir.record()).unwrap();
        assert!(text.contains("\"state\": \"exited\""), "{text}");
    }

    #[test]
    fn concurrent_updates_lose_nothing() {
        let state = tempfile::tempdir().unwrap();
        let dir = PodDir::create(state.path()).unwrap();
        create(&dir, &PodRecord::new(&dir, Path::new("p"), false)).unwrap();
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let d = dir.clone();
                std::thread::spawn(move || {
                    for j in 0..10 {
                        update(&d, |r| {
                            r.apps.push(AppSummary::pending(&format!("{i}-{j}")))
                        })
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(read(&dir).unwrap().apps.len(), 80);
    }
}
