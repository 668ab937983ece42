//! Signalling what the agent started: every app and every exec'd command
//! leads a process group of its own (it starts a session), so a signal
//! reaches everything it started.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Sends signal `n` (1 to 64, already checked) to the process group led by
/// `pid`.
pub fn signal_group(pid: i32, n: i32) {
    match Signal::try_from(n) {
        Ok(sig) => {
            let _ = kill(Pid::from_raw(-pid), sig);
        }
        // The realtime signals (32 to 64) have no `nix::Signal`: only the
        // raw call can send them.
        Err(_) => {
            // SAFETY: kill(2) takes plain integers and touches no memory.
            unsafe { libc::kill(-pid, n) };
        }
    }
}
