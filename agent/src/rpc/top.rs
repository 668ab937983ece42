//! `Top`: the processes of the pod's apps, found through each app's cgroup
//! (which also holds what was exec'd in the app and what its processes
//! started) and described from `/proc`.

use std::sync::Arc;

use kvmpod_api::protocol as pb;

use crate::pod::AppRecord;
use crate::process::{read_process, Clock, SpawnError};

/// The processes of `apps`, by app and then by PID. A process that exits
/// while it is being read is left out.
pub(super) fn list(apps: &[Arc<AppRecord>]) -> Result<Vec<pb::ProcessInfo>, SpawnError> {
    let clock = Clock::now();
    let mut out = Vec::new();
    for app in apps {
        for pid in pids(app)? {
            let Some(p) = read_process(pid, &clock)? else {
                continue;
            };
            let mut info = pb::ProcessInfo::new();
            info.app = app.name().to_string();
            info.pid = p.pid;
            info.ppid = p.ppid;
            info.uid = p.uid;
            info.state = p.state.to_string();
            info.elapsed_ms = p.elapsed_ms;
            info.cpu_ms = p.cpu_ms;
            info.rss_kib = p.rss_kib;
            info.command = p.command;
            out.push(info);
        }
    }
    Ok(out)
}

/// The app's processes: its cgroup's, or, for an app that runs without
/// one (the cgroup could not be made; see the supervisor), its own
/// process alone.
fn pids(app: &AppRecord) -> Result<Vec<i32>, SpawnError> {
    match app.cgroup.get() {
        Some(cg) => Ok(cg.pids()?),
        None => Ok(app.running_pid().into_iter().collect()),
    }
}
