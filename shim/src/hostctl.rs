//! The shim drives pods through the `host-ctl` command, as the kubelet's
//! rkt runtime drove `rkt`: a pod keeps its own monitor and keeper
//! processes (they outlive a restarted shim or containerd), and what the
//! shim knows of it comes from `host-ctl status --format json`. Only
//! stdin, terminals and execs go to the agent directly (`guest`).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::Deserialize;
use tokio::process::{Child, Command};

use crate::error::ShimError;

/// Where `host-ctl` is: `$KVMPOD_HOST_CTL`, else beside the shim (where
/// `make install` puts both), else on `PATH`. Its state directory is
/// `$KVMPOD_STATE_DIR` when set (host-ctl reads it itself).
#[derive(Debug, Clone)]
pub struct HostCtl {
    bin: PathBuf,
}

/// What the shim reads of `host-ctl status --format json`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodView {
    pub state: String,
    #[serde(default)]
    pub vm: Option<ProcView>,
    #[serde(default)]
    pub apps: Vec<AppView>,
    #[serde(default)]
    pub live: Option<LiveView>,
    /// Where its agent is reached (the shim's own io streams).
    #[serde(default)]
    pub endpoint: Option<host_ctl::agent::Endpoint>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ProcView {
    pub pid: u32,
}

/// A running pod's view of its apps, from its agent.
#[derive(Debug, Clone, Deserialize)]
pub struct LiveView {
    #[serde(default)]
    pub apps: Vec<LiveApp>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LiveApp {
    pub name: String,
    /// As the guest says it (signed: host-ctl shows it as the agent sends
    /// it).
    #[serde(default)]
    pub pid: Option<i64>,
    #[serde(default)]
    pub state: String,
    #[serde(default, rename = "exitCode")]
    pub exit_code: Option<i32>,
}

/// What the shim reads of `host-ctl stats --format json`: one app's
/// cgroup in the guest.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppStats {
    pub app: String,
    pub memory_current: u64,
    pub memory_peak: u64,
    #[serde(default)]
    pub memory_max: Option<u64>,
    pub cpu_usage_usec: u64,
    pub pids_current: u64,
    pub oom_kills: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppView {
    pub name: String,
    #[serde(default)]
    pub exit_code: Option<i32>,
}

impl PodView {
    pub fn exited(&self) -> bool {
        self.state == "exited"
    }

    /// The guest pid of `app` while the pod runs.
    pub fn guest_pid(&self, app: &str) -> Option<u32> {
        self.live
            .as_ref()?
            .apps
            .iter()
            .find(|a| a.name == app)
            .and_then(|a| a.pid)
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p > 0)
    }

    /// The exit status of `app` of a running pod once it is over (exited,
    /// failed to start, or gone from the pod): what the agent says of it.
    pub fn app_over(&self, app: &str) -> Option<u32> {
        let live = self.live.as_ref()?;
        match live.apps.iter().find(|a| a.name == app) {
            None => Some(255),
            Some(a) if a.state == "exited" || a.state == "failed" => Some(
                a.exit_code
                    .and_then(|c| u32::try_from(c).ok())
                    .unwrap_or(255),
            ),
            Some(_) => None,
        }
    }

    /// The exit status of `app` once the pod is over: its code (128 + N
    /// after signal N); 255 when it never ran.
    pub fn exit_status(&self, app: &str) -> u32 {
        self.apps
            .iter()
            .find(|a| a.name == app)
            .and_then(|a| a.exit_code)
            .and_then(|c| u32::try_from(c).ok())
            .unwrap_or(255)
    }
}

/// One of an app's outputs.
#[derive(Debug, Clone, Copy)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

impl HostCtl {
    pub fn locate() -> HostCtl {
        if let Some(bin) = std::env::var_os("KVMPOD_HOST_CTL").filter(|b| !b.is_empty()) {
            return HostCtl { bin: bin.into() };
        }
        let beside = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|d| d.join("host-ctl")))
            .filter(|p| p.is_file());
        HostCtl {
            bin: beside.unwrap_or_else(|| "host-ctl".into()),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args).stdin(Stdio::null()).kill_on_drop(false);
        cmd
    }

    /// Runs `host-ctl args`; its stdout, or an error with its stderr.
    async fn output(&self, args: &[&str]) -> Result<String, ShimError> {
        let fail = |why: String| ShimError::HostCtl {
            args: args.join(" "),
            why,
        };
        let out = self
            .command(args)
            .output()
            .await
            .map_err(|e| fail(format!("cannot run {}: {e}", self.bin.display())))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let said = stderr.trim().trim_start_matches("host-ctl: error: ");
            return Err(fail(format!("{} ({})", said, out.status)));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Starts the pod of `manifest` detached; its ID once its agent
    /// answered.
    pub async fn run_detached(&self, manifest: &Path) -> Result<String, ShimError> {
        let m = manifest.to_string_lossy();
        let id = self.output(&["run", "--detach", &m]).await?;
        Ok(id.trim().to_string())
    }

    pub async fn status(&self, pod: &str) -> Result<PodView, ShimError> {
        let text = self.output(&["status", pod, "--format", "json"]).await?;
        serde_json::from_str(&text).map_err(|e| ShimError::HostCtl {
            args: format!("status {pod} --format json"),
            why: format!("unreadable output: {e}"),
        })
    }

    /// The guest's statistics of `app`.
    pub async fn stats(&self, pod: &str, app: &str) -> Result<AppStats, ShimError> {
        let text = self.output(&["stats", pod, "--format", "json"]).await?;
        #[derive(serde::Deserialize)]
        struct Stats {
            apps: Vec<AppStats>,
        }
        let stats: Stats = serde_json::from_str(&text).map_err(|e| ShimError::HostCtl {
            args: format!("stats {pod} --format json"),
            why: format!("unreadable output: {e}"),
        })?;
        stats
            .apps
            .into_iter()
            .find(|a| a.app == app)
            .ok_or_else(|| ShimError::NoTask(format!("{pod}: no statistics of app {app}")))
    }

    pub async fn kill(&self, pod: &str, app: &str, signal: u32) -> Result<(), ShimError> {
        let signal = signal.to_string();
        self.output(&["kill", pod, app, "--signal", &signal])
            .await
            .map(drop)
    }

    /// Adds the app of `manifest` to sandbox pod `pod` and starts it.
    pub async fn app_add(&self, pod: &str, manifest: &Path) -> Result<(), ShimError> {
        let m = manifest.to_string_lossy();
        self.output(&["app", "add", pod, &m]).await.map(drop)
    }

    /// Removes `app` from `pod`, killing it first if it runs.
    pub async fn app_remove(&self, pod: &str, app: &str) -> Result<(), ShimError> {
        self.output(&["app", "rm", "--force", pod, app])
            .await
            .map(drop)
    }

    /// Removes the pod, stopping it first if it runs.
    pub async fn remove(&self, pod: &str) -> Result<(), ShimError> {
        self.output(&["rm", "-f", pod]).await.map(drop)
    }

    /// `host-ctl logs -f` of one stream of `app` into `to`: it ends once
    /// the app is over and every byte is out. logs writes the app's stdout
    /// on its stdout and the app's stderr on its stderr.
    pub fn follow(
        &self,
        pod: &str,
        app: &str,
        stream: Stream,
        to: Stdio,
    ) -> Result<Child, ShimError> {
        let mut cmd = self.command(&["logs", "-f", "--stream", stream.name(), pod, app]);
        match stream {
            Stream::Stdout => cmd.stdout(to).stderr(Stdio::null()),
            Stream::Stderr => cmd.stdout(Stdio::null()).stderr(to),
        };
        cmd.spawn().map_err(|e| ShimError::HostCtl {
            args: format!("logs -f {pod}"),
            why: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exit_status_comes_from_the_app() {
        let v: PodView = serde_json::from_str(
            r#"{"id": "x", "state": "exited", "vm": {"pid": 42, "start": 1},
                "apps": [{"name": "app", "state": "exited", "exitCode": 3}],
                "live": {"apps": [{"name": "app", "pid": -1}]}}"#,
        )
        .unwrap();
        assert_eq!(v.guest_pid("app"), None);
        assert!(v.exited());
        assert_eq!(v.vm.as_ref().map(|p| p.pid), Some(42));
        assert_eq!(v.exit_status("app"), 3);
        assert_eq!(v.exit_status("other"), 255);
    }

    #[test]
    fn an_app_of_a_running_pod_is_over_once_the_agent_says_so() {
        let v: PodView = serde_json::from_str(
            r#"{"state": "running",
                "live": {"apps": [{"name": "pause", "pid": 7, "state": "running"},
                                  {"name": "web", "state": "exited", "exitCode": 4}]}}"#,
        )
        .unwrap();
        assert_eq!(v.app_over("pause"), None);
        assert_eq!(v.app_over("web"), Some(4));
        assert_eq!(v.app_over("removed"), Some(255));
    }
}
