//! Starting a detached monitor: `host-ctl monitor <pod dir>` in a session
//! of its own, so that it outlives the command that started it.

use std::process::{Child, Command, Stdio};

use crate::pod::{PodDir, PodError};

/// Starts `host-ctl monitor <pod dir>`, logging to `<pod dir>/monitor.log`.
/// With `adopt`, it takes over a running VM.
pub fn spawn_monitor(dir: &PodDir, adopt: bool) -> Result<Child, PodError> {
    let io = |what: &'static str, path: &std::path::Path| {
        let path = path.to_path_buf();
        move |source| PodError::Io { what, path, source }
    };
    let exe = std::env::current_exe().map_err(io(
        "finding host-ctl's own path at",
        "/proc/self/exe".as_ref(),
    ))?;
    let log_path = dir.monitor_log();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(io("opening", &log_path))?;
    let mut cmd = Command::new(&exe);
    cmd.arg("--state-dir").arg(dir.state_dir()).arg("monitor");
    if adopt {
        cmd.arg("--adopt");
    }
    cmd.arg(&dir.path)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(io("opening", &log_path))?)
        .stderr(log);
    // SAFETY: the closure runs in the child between fork and exec and only
    // calls setsid, which is async-signal-safe.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    cmd.spawn().map_err(io("starting the pod's monitor", &exe))
}
