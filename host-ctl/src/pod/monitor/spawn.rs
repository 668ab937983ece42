//! Starting the host processes that own a detached pod: its keeper, in a
//! session of its own so that it outlives the command that started it,
//! and the monitor, as the keeper's child.
//!
//! ```text
//! host-ctl keeper <pod dir>       restarts the monitor when it dies
//!   └─ host-ctl monitor <pod dir> owns the VM, collects output, records
//! ```
//!
//! The monitor gets SIGHUP if its keeper dies (`PR_SET_PDEATHSIG`) and then
//! starts a new keeper that watches it, so killing either one alone leaves
//! the pod kept.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::pod::{PodDir, PodError};

/// How a keeper begins (`host-ctl keeper --start ...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeeperStart {
    /// Start a monitor that boots the prepared pod (`run --detach`).
    Boot,
    /// Start a monitor that adopts the running VM (its monitor died).
    Adopt,
    /// Watch the monitor the record names (its keeper died).
    Watch,
}

impl KeeperStart {
    fn name(self) -> &'static str {
        match self {
            KeeperStart::Boot => "boot",
            KeeperStart::Adopt => "adopt",
            KeeperStart::Watch => "watch",
        }
    }
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PodError {
    let path = path.to_path_buf();
    move |source| PodError::Io { what, path, source }
}

/// `host-ctl --state-dir <state_dir> <args>`, with no stdin and stdout
/// and stderr appended to `log_path`: how host-ctl starts the processes
/// that work for it in the background (a pod's keeper and monitor, the
/// pool's fill).
pub fn host_ctl<S: AsRef<std::ffi::OsStr>>(
    state_dir: &Path,
    args: &[S],
    log_path: &Path,
) -> Result<Command, PodError> {
    let exe = std::env::current_exe().map_err(io(
        "finding host-ctl's own path at",
        "/proc/self/exe".as_ref(),
    ))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .map_err(io("opening", log_path))?;
    let mut cmd = Command::new(&exe);
    cmd.arg("--state-dir")
        .arg(state_dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(io("opening", log_path))?)
        .stderr(log);
    Ok(cmd)
}

/// `host-ctl <sub> [flag] <pod dir>`, logging to `<pod dir>/monitor.log`.
fn pod_command(dir: &PodDir, sub: &str, flags: &[&str]) -> Result<Command, PodError> {
    let mut args: Vec<&std::ffi::OsStr> = vec![sub.as_ref()];
    args.extend(flags.iter().map(std::ffi::OsStr::new));
    args.push(dir.path.as_os_str());
    host_ctl(&dir.state_dir(), &args, &dir.monitor_log())
}

/// Makes `cmd`'s child lead a session of its own, so that it outlives the
/// terminal and the process that started it.
pub fn in_own_session(cmd: &mut Command) {
    // SAFETY: the closure runs in the child between fork and exec and only
    // calls setsid, which is async-signal-safe.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
}

/// Starts `host-ctl keeper <start> <pod dir>` in a session of its own.
pub fn spawn_keeper(dir: &PodDir, start: KeeperStart) -> Result<Child, PodError> {
    let mut cmd = pod_command(dir, "keeper", &["--start", start.name()])?;
    in_own_session(&mut cmd);
    cmd.spawn()
        .map_err(io("starting the pod's keeper", &dir.monitor_log()))
}

/// Starts `host-ctl monitor [--adopt] <pod dir>` as this keeper's child;
/// it gets SIGHUP when the keeper dies.
pub fn spawn_monitor(dir: &PodDir, adopt: bool) -> Result<tokio::process::Child, PodError> {
    let flags: &[&str] = if adopt { &["--adopt"] } else { &[] };
    let cmd = pod_command(dir, "monitor", flags)?;
    let mut cmd = tokio::process::Command::from(cmd);
    // SAFETY: the closure runs in the child between fork and exec and only
    // calls prctl, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGHUP)
                .map_err(std::io::Error::from)
        });
    }
    cmd.spawn()
        .map_err(io("starting the pod's monitor", &dir.monitor_log()))
}
