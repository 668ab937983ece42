//! The state directory and each pod's directory in it: every file name
//! host-ctl uses is here, so a reader (or a cleanup) finds them in one
//! place.
//!
//! ```text
//! <state>/pods/<uuid>/   a pod (PodDir): state.json, launch.json,
//!                        guest/ (its share: agent.json, pod.json, roots/<n>),
//!                        console.log, logs/<app>.log[.N], sockets
//! <state>/cids/<cid>     a CID lease (see `cids`)
//! <state>/net/<uuid>/    a pod's passt socket (owned by passt's user)
//! <state>/cache/         extracted kernels (per kernel, not per pod)
//! <state>/stage1/        stage1 guest images (see `stage1`)
//! <state>/images/        the image store (see `image`)
//! ```

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use super::PodError;
use crate::logs::LogFiles;
use crate::vmm::{hypervisor, HypervisorKind, VmOutput};

/// The default state directory (`--state-dir` or `KVMPOD_STATE_DIR`).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/kvmpod";

/// `sun_path` holds 108 bytes, including the NUL, and the backend appends
/// `_<port>` for guest-initiated connections.
const MAX_SOCKET_PATH: usize = 107 - 11;

/// `<state>/pods`: one directory per pod.
pub fn pods_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("pods")
}

/// `<state>/cids`: the CID leases.
pub fn cids_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("cids")
}

/// `<state>/net`: a directory per pod for its user-mode network process
/// (searchable by all, listable by root).
pub fn net_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("net")
}

/// `<state>/cache`: what is built once per kernel, not per pod.
pub fn cache_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("cache")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodDir {
    pub id: String,
    pub path: PathBuf,
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PodError {
    let path = path.to_path_buf();
    move |source| PodError::Io { what, path, source }
}

impl PodDir {
    /// A new pod's directory, not created yet.
    pub fn planned(state_dir: &Path) -> Self {
        Self::of(state_dir, &uuid::Uuid::new_v4().to_string())
    }

    /// The directory pod `id` has (or would have) under `state_dir`.
    pub fn of(state_dir: &Path, id: &str) -> Self {
        PodDir {
            path: pods_dir(state_dir).join(id),
            id: id.to_string(),
        }
    }

    /// Creates `<state>/pods/<uuid>` (mode 0700: it holds the pod's data).
    #[cfg(test)]
    pub fn create(state_dir: &Path) -> Result<Self, PodError> {
        let dir = PodDir::planned(state_dir);
        dir.make(state_dir)?;
        Ok(dir)
    }

    /// Creates a planned directory.
    pub fn make(&self, state_dir: &Path) -> Result<(), PodError> {
        let pods = pods_dir(state_dir);
        let longest = self.vsock_socket();
        if longest.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(PodError::Invalid(format!(
                "the state directory {} is too deep for Unix socket paths ({} > {MAX_SOCKET_PATH} bytes); use a shorter --state-dir",
                state_dir.display(),
                longest.as_os_str().len()
            )));
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&pods)
            .map_err(io("creating the state directory", &pods))?;
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&self.path)
            .map_err(io("creating the pod directory", &self.path))?;
        Ok(())
    }

    /// An existing pod directory.
    pub fn open(path: &Path) -> Result<Self, PodError> {
        let id = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| PodError::Invalid(format!("{} is not a pod directory", path.display())))?
            .to_string();
        let dir = PodDir {
            id,
            path: path.to_path_buf(),
        };
        if !dir.record().is_file() {
            return Err(PodError::Invalid(format!(
                "{} is not a pod directory (no state.json)",
                path.display()
            )));
        }
        Ok(dir)
    }

    /// The state directory this pod lives in (`<state>/pods/<id>`).
    pub fn state_dir(&self) -> PathBuf {
        self.path
            .parent()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }

    /// The pod's record (see `record`).
    pub fn record(&self) -> PathBuf {
        self.path.join("state.json")
    }
    /// Where a new record is written before it is renamed over the old.
    pub fn record_tmp(&self) -> PathBuf {
        self.path.join("state.json.tmp")
    }
    /// Held while the record is read, changed and written.
    pub fn record_lock(&self) -> PathBuf {
        self.path.join("lock")
    }
    /// Held by the pod's monitor for as long as it lives.
    pub fn monitor_lock(&self) -> PathBuf {
        self.path.join("monitor.lock")
    }
    /// A detached monitor's stdout and stderr.
    pub fn monitor_log(&self) -> PathBuf {
        self.path.join("monitor.log")
    }
    /// How to start the pod's VM (see `VmLaunch`).
    pub fn launch(&self) -> PathBuf {
        self.path.join("launch.json")
    }
    /// The pod's 9p share (`guest/`): the agent's settings, the manifest
    /// and the app roots' layers.
    pub fn guest_dir(&self) -> PathBuf {
        self.path.join("guest")
    }
    /// The read-only bind mounts of the app roots' layers, `roots/<n>`.
    pub fn guest_roots(&self) -> PathBuf {
        self.guest_dir().join(kvmpod_api::layout::ROOTS_DIR)
    }
    /// The manifest as validated, with host paths resolved (in the share).
    pub fn manifest(&self) -> PathBuf {
        self.guest_dir().join(kvmpod_api::layout::MANIFEST_FILE)
    }
    /// A sandbox pod's apps share (9p tag `kvmpod-apps`): what host-ctl
    /// binds in for each app added while the pod runs.
    pub fn apps_share(&self) -> PathBuf {
        self.path.join("apps")
    }
    /// What the apps share is a read-only view of: where host-ctl makes
    /// the mount points (the guest cannot write there).
    pub fn apps_share_source(&self) -> PathBuf {
        self.path.join("apps.d")
    }
    /// The guest's serial console.
    pub fn console_log(&self) -> PathBuf {
        self.path.join("console.log")
    }
    /// The hypervisor's own output: its diagnostics (`qemu.log`), or the
    /// console when the console is its stdout (lkvm).
    pub fn vm_log(&self, kind: HypervisorKind) -> PathBuf {
        match hypervisor(kind).output() {
            VmOutput::Console => self.console_log(),
            VmOutput::Diagnostics => self.path.join(format!("{}.log", kind.name())),
        }
    }
    pub fn vhost_log(&self) -> PathBuf {
        self.path.join("vhost-device-vsock.log")
    }
    /// The vhost-user socket the hypervisor connects to.
    pub fn vhost_socket(&self) -> PathBuf {
        self.path.join("vhost.sock")
    }
    /// The user-mode network process's (passt's) directory,
    /// `<state>/net/<pod>`: passt drops root before it binds its socket, so
    /// the directory is its own, outside the private pod directory.
    pub fn passt_dir(&self) -> PathBuf {
        net_dir(&self.state_dir()).join(&self.id)
    }
    /// The pod's own network namespace (lkvm's user-mode network), bound
    /// on `<state>/net/<pod>.netns`: pasta joins it after dropping root,
    /// so it is not in the private pod directory, and not in passt's
    /// directory either, where passt's user could swap it for a symlink.
    pub fn netns_file(&self) -> PathBuf {
        net_dir(&self.state_dir()).join(format!("{}.netns", self.id))
    }
    pub fn passt_socket(&self) -> PathBuf {
        self.passt_dir().join("passt.sock")
    }
    pub fn net_log(&self) -> PathBuf {
        self.path.join("net.log")
    }
    /// The hybrid vsock socket the host connects to.
    pub fn vsock_socket(&self) -> PathBuf {
        self.path.join("vsock.sock")
    }
    /// Where a jailed hypervisor's root is mounted (in its own mount
    /// namespace only).
    pub fn vmm_jail(&self) -> PathBuf {
        self.path.join("jail")
    }
    /// A pooled VM's volumes share (9p tag `kvmpod-volumes`): each host
    /// volume bound in, under its tag's name, when a pod claims the VM.
    pub fn pool_volumes(&self) -> PathBuf {
        self.path.join("volumes")
    }
    /// Host-side share aliases (lkvm's read-only bind mounts).
    pub fn aliases_dir(&self) -> PathBuf {
        self.path.join("shares")
    }
    /// Apps' output: `logs/<app>.log`.
    pub fn app_log(&self, app: &str) -> PathBuf {
        self.path.join("logs").join(format!("{app}.log"))
    }
    /// An app's rotated output: `logs/<app>.log.<n>`, 1 the newest.
    pub fn app_log_rotated(&self, app: &str, n: u32) -> PathBuf {
        self.path.join("logs").join(format!("{app}.log.{n}"))
    }
    /// An app's log and the `max_files` rotated ones it may have.
    pub fn app_logs(&self, app: &str, max_files: u32) -> LogFiles {
        LogFiles {
            current: self.app_log(app),
            rotated: (1..=max_files)
                .map(|n| self.app_log_rotated(app, n))
                .collect(),
        }
    }

    /// Removes what only a running pod needs (sockets); the
    /// manifest, console and logs stay for inspection.
    pub fn tidy(&self) {
        for p in [self.vhost_socket(), self.vsock_socket()] {
            let _ = fs::remove_file(p);
        }
        let _ = fs::remove_dir(self.vmm_jail());
        let _ = fs::remove_file(self.passt_socket());
        crate::vmm::netns::remove(&self.netns_file());
        let _ = fs::remove_dir(self.passt_dir());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_dirs_are_private_and_distinct() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let a = PodDir::create(dir.path()).unwrap();
        let b = PodDir::create(dir.path()).unwrap();
        assert_ne!(a.path, b.path);
        let mode = fs::metadata(&a.path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn too_deep_state_dirs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("x".repeat(80));
        let e = PodDir::create(&deep).err().unwrap().to_string();
        assert!(e.contains("too deep for Unix socket paths"), "{e}");
    }
}
