//! The host processes of a pod (QEMU, vhost-device-vsock), whether started
//! here or adopted from a monitor that died.
//!
//! Started ones run in their own process group, so a terminal's Ctrl-C
//! reaches host-ctl alone and host-ctl stops the pod cleanly. An attached
//! `run` also ties them to its life (`PR_SET_PDEATHSIG`); a detached
//! monitor does not, so that its pod survives it and can be re-attached.
//! Adopted processes are watched through a pidfd.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::unix::AsyncFd;
use tokio::process::{Child, Command};

use crate::record::ProcRef;

enum Handle {
    Child(Child),
    Adopted {
        proc: ProcRef,
        pidfd: AsyncFd<OwnedFd>,
    },
}

pub struct Supervised {
    pub what: &'static str,
    handle: Handle,
    pub log: PathBuf,
}

impl Supervised {
    /// Starts `program` with `args`, its stdout and stderr going to `log`.
    /// With `die_with_parent`, the kernel kills it if host-ctl dies.
    pub fn spawn(
        what: &'static str,
        program: &Path,
        args: &[String],
        log: &Path,
        die_with_parent: bool,
    ) -> Result<Self> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .kill_on_drop(die_with_parent);
        if die_with_parent {
            // SAFETY: prctl is async-signal-safe.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {what} ({})", program.display()))?;
        Ok(Supervised {
            what,
            handle: Handle::Child(child),
            log: log.to_path_buf(),
        })
    }

    /// Takes over watching a running process started by another host-ctl.
    pub fn adopt(what: &'static str, proc: ProcRef, log: &Path) -> Result<Self> {
        // SAFETY: pidfd_open takes plain integers and returns a new fd.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, proc.pid, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("watching {what} (pid {})", proc.pid));
        }
        // SAFETY: the fd was just returned to us and is owned from here on.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        if !proc.alive() {
            anyhow::bail!("{what} (pid {}) is gone", proc.pid);
        }
        // SAFETY: an OwnedFd stays open for as long as the AsyncFd owns it.
        let pidfd = unsafe { AsyncFd::register(fd) }
            .map_err(|e| anyhow::anyhow!("watching {what}: {e}"))?;
        Ok(Supervised {
            what,
            handle: Handle::Adopted { proc, pidfd },
            log: log.to_path_buf(),
        })
    }

    pub fn proc_ref(&self) -> Option<ProcRef> {
        match &self.handle {
            Handle::Child(c) => c.id().and_then(ProcRef::of),
            Handle::Adopted { proc, .. } => Some(*proc),
        }
    }

    /// How it ended, if it has.
    pub fn exited(&mut self) -> Option<String> {
        match &mut self.handle {
            Handle::Child(c) => c.try_wait().ok().flatten().map(|s| s.to_string()),
            Handle::Adopted { proc, .. } => (!proc.alive()).then(|| "exited".to_string()),
        }
    }

    /// Waits up to `limit` for it to end by itself.
    pub async fn wait_for(&mut self, limit: Duration) -> Option<String> {
        let wait = async {
            match &mut self.handle {
                Handle::Child(c) => c
                    .wait()
                    .await
                    .map(|s| s.to_string())
                    .unwrap_or_else(|e| e.to_string()),
                Handle::Adopted { proc, pidfd } => {
                    // A pidfd becomes readable when its process exits.
                    while proc.alive() {
                        match pidfd.readable().await {
                            Ok(mut guard) => guard.clear_ready(),
                            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                        }
                    }
                    "exited".to_string()
                }
            }
        };
        tokio::time::timeout(limit, wait).await.ok()
    }

    /// SIGKILL, and reap when it is ours.
    pub async fn kill(&mut self) {
        match &mut self.handle {
            Handle::Child(c) => {
                let _ = c.kill().await;
            }
            Handle::Adopted { proc, .. } => {
                if proc.alive() {
                    // SAFETY: kill(2); the start-time check above makes a
                    // recycled pid very unlikely in this window.
                    unsafe {
                        libc::kill(proc.pid, libc::SIGKILL);
                    }
                }
            }
        }
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }
}

/// The last `lines` lines of a file (reading at most its last 64 KiB).
pub fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(64 * 1024);
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(start)).is_err() || f.read_to_end(&mut buf).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
