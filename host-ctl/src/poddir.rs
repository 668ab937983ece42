//! A pod's directory under the state directory: its manifest, initramfs,
//! console, the logs of its host processes and its vsock sockets.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The default state directory (`--state-dir` or `KVMPOD_STATE_DIR`).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/kvmpod";

/// `sun_path` holds 108 bytes, including the NUL, and the backend appends
/// `_<port>` for guest-initiated connections.
const MAX_SOCKET_PATH: usize = 107 - 11;

#[derive(Debug, Clone)]
pub struct PodDir {
    pub id: String,
    pub path: PathBuf,
}

impl PodDir {
    /// A new pod's directory, not created yet.
    pub fn planned(state_dir: &Path) -> Self {
        let id = uuid::Uuid::new_v4().to_string();
        PodDir {
            path: state_dir.join("pods").join(&id),
            id,
        }
    }

    /// Creates `<state>/pods/<uuid>` (mode 0700: it holds the pod's data).
    #[cfg(test)]
    pub fn create(state_dir: &Path) -> Result<Self> {
        let dir = PodDir::planned(state_dir);
        dir.make(state_dir)?;
        Ok(dir)
    }

    /// Creates a planned directory.
    pub fn make(&self, state_dir: &Path) -> Result<()> {
        let pods = state_dir.join("pods");
        let longest = self.vsock_socket();
        if longest.as_os_str().len() > MAX_SOCKET_PATH {
            bail!(
                "the state directory {} is too deep for Unix socket paths ({} > {MAX_SOCKET_PATH} bytes); use a shorter --state-dir",
                state_dir.display(),
                longest.as_os_str().len()
            );
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&pods)
            .with_context(|| format!("creating the state directory {}", pods.display()))?;
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&self.path)
            .with_context(|| format!("creating the pod directory {}", self.path.display()))?;
        Ok(())
    }

    /// An existing pod directory.
    pub fn open(path: &Path) -> Result<Self> {
        let id = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| anyhow::anyhow!("{} is not a pod directory", path.display()))?
            .to_string();
        if !path.join("state.json").is_file() {
            bail!("{} is not a pod directory (no state.json)", path.display());
        }
        Ok(PodDir {
            id,
            path: path.to_path_buf(),
        })
    }

    /// The state directory this pod lives in (`<state>/pods/<id>`).
    pub fn state_dir(&self) -> PathBuf {
        self.path
            .parent()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }

    pub fn manifest(&self) -> PathBuf {
        self.path.join("pod.json")
    }
    pub fn initramfs(&self) -> PathBuf {
        self.path.join("initramfs.img")
    }
    pub fn console_log(&self) -> PathBuf {
        self.path.join("console.log")
    }
    pub fn qemu_log(&self) -> PathBuf {
        self.path.join("qemu.log")
    }
    pub fn vhost_log(&self) -> PathBuf {
        self.path.join("vhost-device-vsock.log")
    }
    /// The vhost-user socket QEMU connects to.
    pub fn vhost_socket(&self) -> PathBuf {
        self.path.join("vhost.sock")
    }
    /// The hybrid vsock socket the host connects to.
    pub fn vsock_socket(&self) -> PathBuf {
        self.path.join("vsock.sock")
    }

    /// Removes what only a running pod needs (sockets, the initramfs); the
    /// manifest, console and logs stay for inspection.
    pub fn tidy(&self) {
        for p in [self.vhost_socket(), self.vsock_socket(), self.initramfs()] {
            let _ = fs::remove_file(p);
        }
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
