//! The host processes of a VM (the hypervisor, vhost-device-vsock), whether
//! started here or adopted from a monitor that died.
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

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;
use tokio::process::{Child, Command};

use super::VmmError;
use crate::ui::text::indent;

/// A program and its arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Program {
    pub program: PathBuf,
    pub args: Vec<String>,
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
            start_time: proc_stat(pid)?.1,
        })
    }

    /// Whether this very process still exists (and is not a zombie).
    pub fn alive(&self) -> bool {
        match proc_stat(self.pid) {
            Some((state, start)) => start == self.start_time && state != 'Z' && state != 'X',
            None => false,
        }
    }

    /// SIGKILL, if it is still this process.
    pub fn kill(&self) {
        if self.alive() {
            // The start-time check makes a recycled pid very unlikely in
            // this window.
            let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
        }
    }
}

/// State letter and start time from `/proc/<pid>/stat`.
fn proc_stat(pid: i32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: split after
    // the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

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
    /// Starts `program` with `args`, its stdout and stderr going to `log`,
    /// in network namespace `netns` when given. With `die_with_parent`,
    /// the kernel kills it if host-ctl dies.
    pub fn spawn(
        what: &'static str,
        program: &Path,
        args: &[String],
        log: &Path,
        die_with_parent: bool,
        netns: Option<&Path>,
    ) -> Result<Self, VmmError> {
        let ns = netns.map(super::netns::open).transpose()?;
        let io = |source| VmmError::Io {
            what: "creating",
            path: log.to_path_buf(),
            source,
        };
        let out = File::create(log).map_err(io)?;
        let err = out.try_clone().map_err(io)?;
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
        if let Some(ns) = ns {
            // SAFETY: setns is async-signal-safe, and the file was opened
            // before the fork.
            unsafe {
                cmd.pre_exec(move || super::netns::join(&ns));
            }
        }
        let child = cmd.spawn().map_err(|e| {
            VmmError::Process(format!("starting {what} ({}): {e}", program.display()))
        })?;
        Ok(Supervised {
            what,
            handle: Handle::Child(child),
            log: log.to_path_buf(),
        })
    }

    /// Takes over watching a running process started by another host-ctl.
    pub fn adopt(what: &'static str, proc: ProcRef, log: &Path) -> Result<Self, VmmError> {
        // SAFETY: pidfd_open takes plain integers and returns a new fd.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, proc.pid, 0) };
        if fd < 0 {
            return Err(VmmError::Process(format!(
                "watching {what} (pid {}): {}",
                proc.pid,
                std::io::Error::last_os_error()
            )));
        }
        // SAFETY: the fd was just returned to us and is owned from here on.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        if !proc.alive() {
            return Err(VmmError::Process(format!(
                "{what} (pid {}) is gone",
                proc.pid
            )));
        }
        // SAFETY: the OwnedFd stays open for as long as the AsyncFd owns it.
        let pidfd = unsafe { AsyncFd::register(fd) }
            .map_err(|e| VmmError::Process(format!("watching {what}: {e}")))?;
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
            Handle::Adopted { proc, .. } => proc.kill(),
        }
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }
}

/// Where a VM's processes write their output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmLogs {
    /// The hypervisor's stdout and stderr.
    pub vm: PathBuf,
    /// vhost-device-vsock's.
    pub vsock_backend: PathBuf,
    /// The user-mode network process's (passt's).
    pub net_backend: PathBuf,
}

/// A VM's processes.
pub struct VmProcesses {
    pub vm: Supervised,
    /// vhost-device-vsock, for hybrid vsock.
    pub vsock_backend: Option<Supervised>,
    /// passt, for user-mode networking.
    pub net_backend: Option<Supervised>,
}

/// A helper process of the VM: one the hypervisor connects to over the
/// Unix socket it listens on, or (without a socket) one that serves the
/// VM's network namespace.
pub struct Backend<'a> {
    pub program: &'a Program,
    pub socket: Option<&'a Path>,
}

impl VmProcesses {
    /// Starts the vsock and network backends (each must be listening on
    /// its socket before the hypervisor connects to it), then the
    /// hypervisor.
    pub async fn start(
        vm: (&'static str, &Program),
        vsock_backend: Option<Backend<'_>>,
        net_backend: Option<Backend<'_>>,
        logs: &VmLogs,
        die_with_parent: bool,
        netns: Option<&Path>,
    ) -> Result<VmProcesses, VmmError> {
        let backend = start_backend(
            "vhost-device-vsock",
            vsock_backend,
            &logs.vsock_backend,
            die_with_parent,
        )
        .await?;
        let net_backend =
            match start_backend("passt", net_backend, &logs.net_backend, die_with_parent).await {
                Ok(n) => n,
                Err(e) => {
                    if let Some(mut b) = backend {
                        b.kill().await;
                    }
                    return Err(e);
                }
            };
        let (what, program) = vm;
        let vm = Supervised::spawn(
            what,
            &program.program,
            &program.args,
            &logs.vm,
            die_with_parent,
            netns,
        );
        let vm = match vm {
            Ok(vm) => vm,
            Err(e) => {
                for mut b in [backend, net_backend].into_iter().flatten() {
                    b.kill().await;
                }
                return Err(e);
            }
        };
        Ok(VmProcesses {
            vm,
            vsock_backend: backend,
            net_backend,
        })
    }

    /// Kills every process, the hypervisor first.
    pub async fn kill(&mut self) {
        self.vm.kill().await;
        self.kill_backends().await;
    }

    /// Kills the vsock and network backends (once the hypervisor is gone).
    pub async fn kill_backends(&mut self) {
        for b in [self.vsock_backend.as_mut(), self.net_backend.as_mut()]
            .into_iter()
            .flatten()
        {
            b.kill().await;
        }
    }
}

/// Starts a backend and waits until it listens on its socket.
async fn start_backend(
    what: &'static str,
    backend: Option<Backend<'_>>,
    log: &Path,
    die_with_parent: bool,
) -> Result<Option<Supervised>, VmmError> {
    let Some(b) = backend else {
        return Ok(None);
    };
    let mut child = Supervised::spawn(
        what,
        &b.program.program,
        &b.program.args,
        log,
        die_with_parent,
        None,
    )?;
    if let Some(socket) = b.socket {
        if let Err(e) = wait_for_socket(&mut child, socket, Duration::from_secs(5)).await {
            child.kill().await;
            return Err(e);
        }
    }
    Ok(Some(child))
}

async fn wait_for_socket(
    backend: &mut Supervised,
    path: &Path,
    limit: Duration,
) -> Result<(), VmmError> {
    let until = std::time::Instant::now() + limit;
    // The file appears at bind(2); a connection before listen(2) is
    // refused, and QEMU does not retry: wait for the listening socket.
    while !listening(path) {
        if let Some(status) = backend.exited() {
            return Err(VmmError::Process(format!(
                "{} exited ({status}) before creating {}:\n{}",
                backend.what,
                path.display(),
                indent(&backend.log_tail(10))
            )));
        }
        if std::time::Instant::now() >= until {
            return Err(VmmError::Process(format!(
                "{} did not create {} within {limit:?}",
                backend.what,
                path.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Whether a Unix socket is listening at `path`, as `/proc/net/unix` says
/// (without connecting: a vhost-user backend serves one connection).
fn listening(path: &Path) -> bool {
    std::fs::read_to_string("/proc/net/unix")
        .map(|table| listening_in(&table, path))
        .unwrap_or_else(|_| path.exists())
}

/// `__SO_ACCEPTCON`: the socket accepts connections.
const SO_ACCEPTCON: u32 = 0x10000;

fn listening_in(table: &str, path: &Path) -> bool {
    let want = path.as_os_str().to_string_lossy();
    table.lines().skip(1).any(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        cols.len() >= 8
            && cols[7] == want
            && u32::from_str_radix(cols[3], 16).is_ok_and(|f| f & SO_ACCEPTCON != 0)
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bound_socket_is_not_yet_listening() {
        let table = "Num       RefCount Protocol Flags    Type St Inode Path\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 1234 /run/a.sock\n\
            0000000000000000: 00000002 00000000 00000000 0001 01 1235 /run/b.sock\n";
        assert!(listening_in(table, Path::new("/run/a.sock")));
        assert!(!listening_in(table, Path::new("/run/b.sock")));
        assert!(!listening_in(table, Path::new("/run/c.sock")));
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
