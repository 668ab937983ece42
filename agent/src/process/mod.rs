//! Processes: turning an app (or a command run in it) into a confined
//! process, and collecting its exit.
//!
//! It owns what a process is started with: its program found in the app's
//! own `PATH`, its identity from the app's own `/etc/passwd`, its cgroup
//! with the manifest's limits, and its confinement (a mount namespace
//! pivoted into the app's root, capabilities, rlimits, `no_new_privs`),
//! all prepared before the clone (`vfork`) so the child only makes system
//! calls. It also owns `waitpid`: PID 1 reaps every orphan, and one reaper
//! must see every exit; and it reads processes' figures from `/proc` for
//! `top`. It reads app roots through storage and knows nothing of the pod
//! or of RPC.

mod cgroups;
mod error;
mod exec;
mod isolation;
mod procfs;
mod pty;
mod reaper;
mod signal;
mod spawn;
mod start;
mod stdio;
mod users;
mod vfork;

pub use cgroups::{setup as setup_cgroups, AppCgroup};
pub use error::{SpawnError, EXIT_SETUP_FAILED};
pub use exec::{launch as launch_exec, ExecIo, Running};
pub use procfs::{process as read_process, Clock, ProcessInfo};
pub use reaper::{Exit, Reaper};
pub use signal::signal_group;
pub use spawn::AppLaunch;
pub use stdio::{Input, Launched, Output, Terminal, Which};
