//! The OCI runtime spec containerd writes into a task's bundle
//! (`config.json`), read as far as a kvmpod pod of one app needs it, and
//! turned into that pod's manifest. Only the fields kvmpod honours are
//! read; the rest of the spec (namespaces, seccomp, devices) is the
//! guest's business: the app is confined by the agent inside its own VM.

use std::path::{Path, PathBuf};

use kvmpod_api::manifest::{App, Capabilities, EnvVar, PodManifest, Resources, Rlimit};
use kvmpod_api::network::{Network, NetworkMode};
use serde::Deserialize;

use crate::error::ShimError;
use crate::mounts::{self, OciMount};

/// The app of a task's own pod (a plain container's, or a Kubernetes pod
/// sandbox's pause container): a fixed name every host-ctl command can use.
pub const APP: &str = "app";

/// The annotations containerd's CRI plugin puts on a Kubernetes pod's
/// containers: which kind each is, and the pod sandbox it belongs to.
pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";

/// The bundle's directory of single files shared with the guest.
pub const FILES_DIR: &str = "kvmpod-files";

/// What a task is to kvmpod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// A container of its own: a pod of one app.
    Pod,
    /// A Kubernetes pod sandbox: a sandbox pod whose app is the pause
    /// container, to which the pod's containers are added.
    Sandbox,
    /// A container of the pod sandbox with this ID: an app added to the
    /// sandbox's pod (one VM per Kubernetes pod, as rkt ran it).
    InSandbox(String),
}

impl Role {
    /// The app a task of this role is in its pod: a container in a
    /// sandbox is named after its ID (hex, so a valid app name).
    pub fn app_name(&self, id: &str) -> String {
        match self {
            Role::Pod | Role::Sandbox => APP.to_string(),
            Role::InSandbox(_) => app_name_of(id),
        }
    }
}

/// An app name from a container ID: lowercase letters and digits, runs of
/// anything else as one `-`, at most 63 characters.
fn app_name_of(id: &str) -> String {
    let mut name = String::new();
    for c in id.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            name.push(c);
        } else if !name.is_empty() && !name.ends_with('-') {
            name.push('-');
        }
    }
    name.truncate(kvmpod_api::validate::MAX_NAME_LEN);
    let name = name.trim_end_matches('-').to_string();
    if name.is_empty() {
        "container".into()
    } else {
        name
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    #[serde(default)]
    pub process: Option<Process>,
    #[serde(default)]
    pub root: Option<Root>,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub linux: Option<Linux>,
    #[serde(default)]
    pub mounts: Vec<OciMount>,
    #[serde(default)]
    pub annotations: std::collections::HashMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Linux {
    #[serde(default)]
    pub resources: Option<LinuxResources>,
    /// The namespaces the container joins or gets; a network one with a
    /// path is the Kubernetes pod's, wired by CNI.
    #[serde(default)]
    pub namespaces: Vec<Namespace>,
}

/// One of the container's namespaces.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Namespace {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub path: Option<PathBuf>,
}

/// The limits kvmpod applies with the app's cgroup in the guest.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct LinuxResources {
    #[serde(default)]
    pub memory: Option<MemoryLimit>,
    #[serde(default)]
    pub cpu: Option<CpuShares>,
    #[serde(default)]
    pub pids: Option<PidsLimit>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct MemoryLimit {
    #[serde(default)]
    pub limit: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct CpuShares {
    #[serde(default)]
    pub shares: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct PidsLimit {
    pub limit: i64,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct OciRlimit {
    #[serde(rename = "type")]
    pub kind: String,
    pub hard: u64,
    pub soft: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Process {
    #[serde(default)]
    pub terminal: bool,
    #[serde(default)]
    pub user: User,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub cwd: String,
    #[serde(default)]
    pub no_new_privileges: bool,
    #[serde(default)]
    pub rlimits: Vec<OciRlimit>,
    #[serde(default)]
    pub oom_score_adj: Option<i32>,
    #[serde(default)]
    pub capabilities: Option<OciCapabilities>,
}

/// The process's capability sets; kvmpod gives the app the bounding set
/// (the agent keeps one set for bounding, permitted and effective).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct OciCapabilities {
    #[serde(default)]
    pub bounding: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
    #[serde(default)]
    pub additional_gids: Vec<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Root {
    pub path: PathBuf,
    #[serde(default)]
    pub readonly: bool,
}

impl Process {
    /// The process's `K=V` environment (a bare `K` is empty).
    pub fn env_vars(&self) -> Vec<EnvVar> {
        self.env
            .iter()
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                EnvVar {
                    name: k.into(),
                    value: v.into(),
                }
            })
            .collect()
    }
}

/// Reads `<bundle>/config.json`.
pub fn read(bundle: &Path) -> Result<Spec, ShimError> {
    let path = bundle.join("config.json");
    let text = std::fs::read(&path).map_err(|source| ShimError::Io {
        what: format!("reading {}", path.display()),
        source,
    })?;
    serde_json::from_slice(&text).map_err(|e| ShimError::Spec(format!("{}: {e}", path.display())))
}

impl Spec {
    /// What task `id` is, from the CRI annotations (none: a pod of its
    /// own).
    pub fn role(&self, id: &str) -> Role {
        let kind = self.annotations.get(CONTAINER_TYPE).map(String::as_str);
        match (kind, self.annotations.get(SANDBOX_ID)) {
            (Some("sandbox"), _) => Role::Sandbox,
            (Some("container"), Some(sandbox)) if sandbox != id => Role::InSandbox(sandbox.clone()),
            _ => Role::Pod,
        }
    }

    /// The single-file binds to make in `bundle` before the pod starts.
    pub fn file_binds(&self, bundle: &Path) -> Vec<mounts::FileBind> {
        mounts::file_binds(&self.mounts, &bundle.join(FILES_DIR))
    }

    /// The shim a task belongs to: its pod sandbox's, so one shim (and one
    /// VM) serves a whole Kubernetes pod; else its own.
    pub fn group(&self, id: &str) -> String {
        match self.role(id) {
            Role::InSandbox(sandbox) => sandbox,
            Role::Pod | Role::Sandbox => id.to_string(),
        }
    }

    /// The root the task's process sees: the bundle's `rootfs/` once the
    /// snapshot is mounted there, or the spec's own absolute root path.
    pub fn root_path(&self, bundle: &Path) -> PathBuf {
        match &self.root {
            Some(r) if r.path.is_absolute() => r.path.clone(),
            Some(r) => bundle.join(&r.path),
            None => bundle.join("rootfs"),
        }
    }

    /// The spec's memory, CPU and pids limits as the app's cgroup limits.
    /// CPU shares become a cgroup v2 weight as runc converts them.
    fn resources(&self) -> Resources {
        let Some(r) = self.linux.as_ref().and_then(|l| l.resources.as_ref()) else {
            return Resources::default();
        };
        Resources {
            memory_limit: r
                .memory
                .as_ref()
                .and_then(|m| m.limit)
                .and_then(|l| u64::try_from(l).ok())
                .filter(|l| *l > 0),
            cpu_weight: r
                .cpu
                .as_ref()
                .and_then(|c| c.shares)
                .filter(|s| *s >= 2)
                .map(|s| (1 + (s.min(262_144) - 2) * 9999 / 262_142) as u32),
            pids_limit: r
                .pids
                .as_ref()
                .and_then(|p| u32::try_from(p.limit).ok())
                .filter(|l| *l > 0),
        }
    }

    /// The manifest of task `id`'s pod, or of the app it adds to its
    /// sandbox's: one app whose root is `root`, with the process's
    /// arguments, environment, working directory, user, terminal and
    /// privileges; `stdin` when containerd gives it one.
    pub fn manifest(&self, id: &str, bundle: &Path, stdin: bool) -> Result<PodManifest, ShimError> {
        let role = self.role(id);
        let root = self.root_path(bundle);
        let process = self
            .process
            .as_ref()
            .ok_or_else(|| ShimError::Spec("config.json has no process".into()))?;
        if process.args.is_empty() {
            return Err(ShimError::Spec("config.json: process.args is empty".into()));
        }
        let env = process.env_vars();
        let name = role.app_name(id);
        // Volume names are the pod's: an added app's carry its own prefix.
        let prefix = match role {
            Role::InSandbox(_) => format!("m-{}", &name[..name.len().min(12)]),
            Role::Pod | Role::Sandbox => "mount".into(),
        };
        let mounts = mounts::convert(
            &self.mounts,
            prefix.trim_end_matches('-'),
            &bundle.join(FILES_DIR),
        )?;
        let app = App {
            name,
            rootfs: root,
            exec: process.args.clone(),
            env,
            user: Some(process.user.uid.to_string()),
            group: Some(process.user.gid.to_string()),
            supplementary_gids: process.user.additional_gids.clone(),
            working_directory: Some(process.cwd.clone()).filter(|c| !c.is_empty()),
            stdin,
            terminal: process.terminal,
            no_new_privileges: process.no_new_privileges,
            read_only_root_filesystem: self.root.as_ref().is_some_and(|r| r.readonly),
            rlimits: process
                .rlimits
                .iter()
                .map(|r| Rlimit {
                    kind: r.kind.clone(),
                    soft: r.soft,
                    hard: Some(r.hard),
                })
                .collect(),
            oom_score_adj: process.oom_score_adj,
            resources: self.resources(),
            capabilities: process
                .capabilities
                .as_ref()
                .map(|c| Capabilities {
                    add: c.bounding.clone(),
                    drop: vec!["ALL".into()],
                })
                .unwrap_or_default(),
            mount_points: mounts.mount_points,
            tmpfs: mounts.tmpfs,
            ..App::default()
        };
        Ok(PodManifest {
            hostname: self.hostname.clone().filter(|h| !h.is_empty()),
            volumes: mounts.volumes,
            apps: vec![app],
            sandbox: role == Role::Sandbox,
            network: self.network(&role),
        })
    }

    /// A Kubernetes pod sandbox whose network namespace CNI wired (a
    /// namespace with a path): the VM takes that namespace's interface
    /// (`tap,netns=`), and the pod's containers, added as apps, share it.
    /// Anything else keeps to loopback: a plain container's new namespace
    /// has nothing in it, and a host-network pod's is the node's own.
    fn network(&self, role: &Role) -> Network {
        let cni = self
            .linux
            .iter()
            .flat_map(|l| &l.namespaces)
            .find(|n| n.kind == "network")
            .and_then(|n| n.path.clone());
        match (role, cni) {
            (Role::Sandbox, Some(ns)) => Network {
                mode: NetworkMode::Tap,
                netns: Some(ns),
                ..Network::default()
            },
            _ => Network {
                mode: NetworkMode::None,
                ..Network::default()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `ctr run` writes, in part.
    const CTR_SPEC: &str = r#"{
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": true,
            "user": {"uid": 1000, "gid": 100, "additionalGids": [10]},
            "args": ["sh", "-c", "echo hi"],
            "env": ["PATH=/usr/bin:/bin", "EMPTY=", "BARE"],
            "cwd": "/srv",
            "capabilities": {"bounding": ["CAP_CHOWN"]},
            "noNewPrivileges": true,
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 4096, "soft": 1024}],
            "oomScoreAdj": 100
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "web",
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                   {"destination": "/scratch", "type": "tmpfs", "source": "tmpfs"},
                   {"destination": "/data", "type": "bind", "source": "/tmp",
                    "options": ["rbind", "ro"]}],
        "linux": {"namespaces": [{"type": "pid"}],
                  "resources": {"memory": {"limit": 67108864},
                                "cpu": {"shares": 1024, "quota": 50000},
                                "pids": {"limit": 64}}}
    }"#;

    #[test]
    fn a_ctr_spec_becomes_a_pod_of_one_app() {
        let spec: Spec = serde_json::from_str(CTR_SPEC).unwrap();
        let bundle = Path::new("/run/b");
        assert_eq!(spec.root_path(bundle), Path::new("/run/b/rootfs"));
        let m = spec.manifest("t1", bundle, true).unwrap();
        assert_eq!(m.hostname.as_deref(), Some("web"));
        let app = &m.apps[0];
        assert_eq!(app.name, APP);
        assert_eq!(app.rootfs, Path::new("/run/b/rootfs"));
        assert_eq!(app.exec, ["sh", "-c", "echo hi"]);
        let env: Vec<(&str, &str)> = app
            .env
            .iter()
            .map(|e| (e.name.as_str(), e.value.as_str()))
            .collect();
        assert_eq!(
            env,
            [("PATH", "/usr/bin:/bin"), ("EMPTY", ""), ("BARE", "")]
        );
        assert_eq!(app.user.as_deref(), Some("1000"));
        assert_eq!(app.group.as_deref(), Some("100"));
        assert_eq!(app.supplementary_gids, [10]);
        assert_eq!(app.working_directory.as_deref(), Some("/srv"));
        assert!(app.stdin && app.terminal && app.no_new_privileges);
        assert!(app.read_only_root_filesystem);
        assert_eq!(app.rlimits[0].kind, "RLIMIT_NOFILE");
        assert_eq!(
            (app.rlimits[0].soft, app.rlimits[0].hard),
            (1024, Some(4096))
        );
        assert_eq!(app.oom_score_adj, Some(100));
        assert_eq!(app.resources.memory_limit, Some(64 << 20));
        // runc's conversion: 1024 shares are weight 39.
        assert_eq!(app.resources.cpu_weight, Some(39));
        assert_eq!(app.resources.pids_limit, Some(64));
        assert_eq!(app.capabilities.add, ["CAP_CHOWN"]);
        assert_eq!(app.capabilities.drop, ["ALL"]);
        assert_eq!(app.tmpfs[0].path, "/scratch");
        assert_eq!(m.volumes[0].source.as_deref(), Some(Path::new("/tmp")));
        assert_eq!(app.mount_points[0].path, "/data");
        let errors = kvmpod_api::validate::validate(&m);
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn an_absolute_root_is_used_as_it_is() {
        let spec: Spec =
            serde_json::from_str(r#"{"process": {"args": ["true"]}, "root": {"path": "/srv/r"}}"#)
                .unwrap();
        assert_eq!(spec.root_path(Path::new("/b")), Path::new("/srv/r"));
        let m = spec.manifest("t1", Path::new("/b"), false).unwrap();
        assert_eq!(m.apps[0].working_directory, None);
        assert!(!m.apps[0].stdin);
        assert_eq!(m.apps[0].resources, Resources::default());
    }

    #[test]
    fn cri_annotations_make_a_sandbox_and_its_containers() {
        let spec = |kind: &str, sandbox: &str| -> Spec {
            serde_json::from_value(serde_json::json!({
                "process": {"args": ["x"]},
                "annotations": {CONTAINER_TYPE: kind, SANDBOX_ID: sandbox}
            }))
            .unwrap()
        };
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let sandbox = spec("sandbox", "sb1");
        assert_eq!(sandbox.role("sb1"), Role::Sandbox);
        assert_eq!(sandbox.group("sb1"), "sb1");
        assert!(
            sandbox
                .manifest("sb1", Path::new("/r"), false)
                .unwrap()
                .sandbox
        );
        let member = spec("container", "sb1");
        assert_eq!(member.role(id), Role::InSandbox("sb1".into()));
        assert_eq!(member.group(id), "sb1");
        let m = member.manifest(id, Path::new("/r"), false).unwrap();
        assert!(!m.sandbox);
        // A 64-character ID becomes a valid app name.
        assert_eq!(m.apps[0].name, &id[..63]);
        assert!(kvmpod_api::validate::check_acname(&m.apps[0].name).is_ok());
        assert_eq!(Spec::default().role("x"), Role::Pod);
        assert_eq!(app_name_of("My_Container.1"), "my-container-1");
    }

    #[test]
    fn a_cni_sandbox_takes_its_network_namespace() {
        let spec = |kind: &str, ns: serde_json::Value| -> Spec {
            serde_json::from_value(serde_json::json!({
                "process": {"args": ["x"]},
                "annotations": {CONTAINER_TYPE: kind, SANDBOX_ID: "sb1"},
                "linux": {"namespaces": [{"type": "pid"}, ns]}
            }))
            .unwrap()
        };
        let cni = serde_json::json!({"type": "network", "path": "/var/run/netns/cni-1"});
        let m = spec("sandbox", cni.clone())
            .manifest("sb1", Path::new("/r"), false)
            .unwrap();
        assert_eq!(m.network.mode, NetworkMode::Tap);
        assert_eq!(
            m.network.netns.as_deref(),
            Some(Path::new("/var/run/netns/cni-1"))
        );
        assert!(kvmpod_api::validate::validate(&m).is_empty());
        // A new, empty namespace (ctr run) or a container: loopback.
        let fresh = spec("sandbox", serde_json::json!({"type": "network"}));
        let m = fresh.manifest("sb1", Path::new("/r"), false).unwrap();
        assert_eq!(m.network.mode, NetworkMode::None);
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let m = spec("container", cni)
            .manifest(id, Path::new("/r"), false)
            .unwrap();
        assert_eq!(m.network.mode, NetworkMode::None);
    }

    #[test]
    fn a_spec_without_a_command_is_refused() {
        let spec: Spec = serde_json::from_str(r#"{"process": {"args": []}}"#).unwrap();
        let e = spec.manifest("t1", Path::new("/r"), false).unwrap_err();
        assert!(e.to_string().contains("process.args is empty"), "{e}");
        let e = Spec::default()
            .manifest("t1", Path::new("/r"), false)
            .unwrap_err();
        assert!(e.to_string().contains("no process"), "{e}");
    }
}
