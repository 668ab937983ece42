//! Names of the moments on a guest's boot timeline.
//!
//! The agent stamps each with `CLOCK_BOOTTIME`; host-ctl shows them
//! (`--timings`, `status`), keeps them in the pod record and reads the
//! stage ones off the console. Both sides use these types, so a renamed
//! mark cannot silently stop matching.

use std::fmt;
use std::str::FromStr;

/// A stage of the agent's own start-up and shutdown, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// The kernel started the agent as `/init`.
    Init,
    /// The stage1 image's kernel modules for the VM's transport are loaded.
    ModulesLoaded,
    /// The root moved off the initramfs onto a tmpfs.
    RootSwitched,
    /// `/proc`, `/sys`, `/dev`, cgroups and loopback are set.
    BaseMounted,
    /// A VM booted for the warm pool waits for a pod (see
    /// [`crate::pool`]).
    PoolWaiting,
    /// A pod claimed the pooled VM: its share is ready to be read.
    Claimed,
    /// The pod's share is mounted and its settings and manifest read.
    ConfigRead,
    /// The agent serves its API on vsock: the host may connect.
    AgentReady,
    /// Every volume is mounted; apps start next.
    VolumesMounted,
    /// The host asked the pod to stop (or the linger time passed).
    Stopping,
    /// Every app is gone and file systems are synced.
    Stopped,
    /// The agent ends the VM (power-off or reboot).
    PowerOff,
}

impl Stage {
    pub const ALL: [Stage; 12] = [
        Stage::Init,
        Stage::ModulesLoaded,
        Stage::RootSwitched,
        Stage::BaseMounted,
        Stage::PoolWaiting,
        Stage::Claimed,
        Stage::ConfigRead,
        Stage::AgentReady,
        Stage::VolumesMounted,
        Stage::Stopping,
        Stage::Stopped,
        Stage::PowerOff,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Init => "init",
            Stage::ConfigRead => "config-read",
            Stage::ModulesLoaded => "modules-loaded",
            Stage::RootSwitched => "root-switched",
            Stage::BaseMounted => "base-mounted",
            Stage::PoolWaiting => "pool-waiting",
            Stage::Claimed => "claimed",
            Stage::AgentReady => "agent-ready",
            Stage::VolumesMounted => "volumes-mounted",
            Stage::Stopping => "stopping",
            Stage::Stopped => "stopped",
            Stage::PowerOff => "power-off",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Stage {
    type Err = UnknownMark;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Stage::ALL
            .into_iter()
            .find(|st| st.name() == s)
            .ok_or_else(|| UnknownMark(s.to_string()))
    }
}

/// What happened to one app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AppMoment {
    /// Its root is assembled: every mount of it made.
    Assembled,
    /// Its user, groups and program are found in its root.
    Resolved,
    Started,
    Exited,
    /// It could not be started (its mounts, user or program).
    Failed,
}

impl AppMoment {
    pub const ALL: [AppMoment; 5] = [
        AppMoment::Assembled,
        AppMoment::Resolved,
        AppMoment::Started,
        AppMoment::Exited,
        AppMoment::Failed,
    ];

    fn name(self) -> &'static str {
        match self {
            AppMoment::Assembled => "app-assembled",
            AppMoment::Resolved => "app-resolved",
            AppMoment::Started => "app-started",
            AppMoment::Exited => "app-exited",
            AppMoment::Failed => "app-failed",
        }
    }
}

/// One point of the timeline: a stage, or an app's moment
/// (`app-started:<app>` on the wire).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Mark {
    Stage(Stage),
    App(AppMoment, String),
}

impl Mark {
    pub fn app(moment: AppMoment, app: &str) -> Mark {
        Mark::App(moment, app.to_string())
    }
}

impl From<Stage> for Mark {
    fn from(s: Stage) -> Self {
        Mark::Stage(s)
    }
}

impl fmt::Display for Mark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mark::Stage(s) => f.write_str(s.name()),
            Mark::App(m, app) => write!(f, "{}:{app}", m.name()),
        }
    }
}

/// A name that is not a timeline mark.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a timeline mark")]
pub struct UnknownMark(pub String);

impl FromStr for Mark {
    type Err = UnknownMark;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some((kind, app)) = s.split_once(':') {
            let moment = AppMoment::ALL
                .into_iter()
                .find(|m| m.name() == kind)
                .ok_or_else(|| UnknownMark(s.to_string()))?;
            return Ok(Mark::App(moment, app.to_string()));
        }
        s.parse().map(Mark::Stage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_round_trip_through_their_names() {
        for st in Stage::ALL {
            let m = Mark::from(st);
            assert_eq!(m.to_string().parse::<Mark>().unwrap(), m);
        }
        for moment in AppMoment::ALL {
            let m = Mark::app(moment, "web");
            assert_eq!(m.to_string().parse::<Mark>().unwrap(), m);
        }
        let m = Mark::app(AppMoment::Exited, "web");
        assert_eq!(m.to_string(), "app-exited:web");
        assert_eq!("app-exited:web".parse::<Mark>().unwrap(), m);
        assert!("app-vanished:web".parse::<Mark>().is_err());
        assert!("warp-speed".parse::<Mark>().is_err());
    }
}
