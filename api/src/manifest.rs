//! The pod manifest: what a user writes to describe a pod.
//!
//! Semantics follow the appc pod manifest as rkt used it. The same types are
//! read by host-ctl (from the user's file) and by the agent (from the copy
//! host-ctl validated and put into the initramfs).

use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::network::Network;

/// A pod: apps that share volumes, run in one VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodManifest {
    /// The guest's hostname, seen by every app (default: the start of the
    /// pod's ID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default)]
    pub volumes: Vec<Volume>,
    pub apps: Vec<App>,
    /// Apps can be added to and removed from the running pod (`host-ctl
    /// app add|rm`), as rkt's app sandbox and a Kubernetes pod sandbox
    /// allow: the VM gets a share for their roots and volumes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sandbox: bool,
    /// The pod's network, shared by its apps (default: user-mode).
    #[serde(default, skip_serializing_if = "Network::is_default")]
    pub network: Network,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VolumeKind {
    /// A host directory shared into the guest over 9p.
    Host,
    /// A fresh directory in guest memory (its own tmpfs), shared by the apps.
    Empty,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Volume {
    pub name: String,
    pub kind: VolumeKind,
    /// Host directory (`host` volumes only). A relative path is resolved
    /// against the manifest's own directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<PathBuf>,
    /// When set, overrides every mount point's `readOnly` (rkt's rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    /// Permission bits of an empty volume's root, as an octal string
    /// ("0755", the default).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_mode",
        serialize_with = "ser_mode"
    )]
    pub mode: Option<u32>,
    /// Owner of an empty volume's root (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Group of an empty volume's root (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// Size limit of an empty volume's tmpfs, in bytes or with a K, M or G
    /// suffix ("64M"). Without it the kernel's tmpfs default applies.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_size"
    )]
    pub size: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct App {
    pub name: String,
    /// The app's root: a host directory or a tar archive (optionally
    /// gzip-compressed). A relative path is resolved against the manifest's
    /// own directory. Either this or `image`.
    #[serde(default, skip_serializing_if = "is_empty_path")]
    pub rootfs: PathBuf,
    /// An image in host-ctl's image store (a name such as `busybox:latest`,
    /// or a digest) whose layers are the app's root; its configuration
    /// gives the defaults of `exec`, `env`, `user` and
    /// `workingDirectory`. Either this or `rootfs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The program and its arguments. A program without a `/` is looked up
    /// in the app's `PATH`, inside its root. With an `image`, the image's
    /// Entrypoint and Cmd when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exec: Vec<String>,
    /// With an `image`: arguments that replace the image's Cmd after its
    /// Entrypoint (or after `exec`), as Kubernetes' `args` do.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// A user name (looked up in the app's `/etc/passwd`) or a uid; default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// A group name (looked up in the app's `/etc/group`) or a gid; default
    /// the user's primary group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// More groups the app's processes are in, by number (the OCI spec's
    /// `additionalGids`, Kubernetes' `supplementalGroups`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub supplementary_gids: Vec<u32>,
    /// Absolute path inside the app's root; default `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_directory: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mount_points: Vec<MountPoint>,
    /// Limits, enforced by the app's cgroup in the guest.
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    pub resources: Resources,
    /// Give the app a stdin pipe that `host-ctl attach` can write to;
    /// otherwise its stdin is `/dev/null`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stdin: bool,
    /// Run the app on a pseudo-terminal of its own (OCI's `terminal`,
    /// Docker's `-t`): its stdout and stderr are then one stream, the
    /// terminal's; `host-ctl attach` and `run -t` set its size, and with
    /// `stdin` feed its input.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub terminal: bool,
    /// Changes to the default capability set (Docker's).
    #[serde(default, skip_serializing_if = "Capabilities::is_empty")]
    pub capabilities: Capabilities,
    /// Set `no_new_privs`: setuid binaries and file capabilities cannot
    /// raise the app's privileges.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_new_privileges: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rlimits: Vec<Rlimit>,
    /// The OOM killer's preference for the app, -1000 to 1000 (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_score_adj: Option<i32>,
    /// Mount the app's root read-only; volumes and tmpfs mounts stay
    /// writable.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only_root_filesystem: bool,
    /// Extra tmpfs mounts in the app's root.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tmpfs: Vec<TmpfsMount>,
    /// The signal that asks the app to stop (`TERM`, `SIGQUIT`, `15`);
    /// SIGTERM when unset, or the image's StopSignal. SIGKILL follows after
    /// the grace period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// What happens when the app exits.
    #[serde(default, skip_serializing_if = "RestartPolicy::is_never")]
    pub restart_policy: RestartPolicy,
    /// The most restarts (`on-failure` and `always`; default unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_restarts: Option<u32>,
    /// What the agent does when the host falls behind persisting the app's
    /// output: make the app wait (the default), or drop output.
    #[serde(default, skip_serializing_if = "LogMode::is_blocking")]
    pub log_mode: LogMode,
    /// Output the agent keeps until the host has persisted it, in bytes or
    /// with a K, M or G suffix ("4M"; default the agent's, 1M).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_size"
    )]
    pub log_buffer_size: Option<u64>,
}

fn is_empty_path(p: &std::path::Path) -> bool {
    p.as_os_str().is_empty()
}

/// Docker's log modes. Output is kept by the agent until the host has
/// persisted it; when the host falls behind by a whole log buffer, a
/// `blocking` app waits in its writes (no output is ever lost), a
/// `non-blocking` app keeps running and the output that does not fit is
/// dropped, counted and reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogMode {
    #[default]
    Blocking,
    NonBlocking,
}

impl LogMode {
    pub fn is_blocking(&self) -> bool {
        *self == LogMode::Blocking
    }
}

/// Capabilities added to or dropped from the default set, by name
/// (`NET_ADMIN` or `CAP_NET_ADMIN`; `ALL` for every one).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Capabilities {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drop: Vec<String>,
}

impl Capabilities {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.drop.is_empty()
    }
}

/// A resource limit (`setrlimit`), by name: `nofile`, `nproc`, `core`...
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rlimit {
    #[serde(rename = "type")]
    pub kind: String,
    pub soft: u64,
    /// Default: the soft limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hard: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TmpfsMount {
    /// Absolute path inside the app's root.
    pub path: String,
    /// Size limit, in bytes or with a K, M or G suffix.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_size"
    )]
    pub size: Option<u64>,
    /// Permission bits as an octal string (default "1777").
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_mode",
        serialize_with = "ser_mode"
    )]
    pub mode: Option<u32>,
}

/// Whether an app that exits is started again. Restarts wait with
/// exponential backoff (250 ms, doubling, at most 30 s).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    #[default]
    Never,
    /// When it exits with a non-zero status (or is killed).
    OnFailure,
    /// Whenever it exits.
    Always,
}

impl RestartPolicy {
    pub fn is_never(&self) -> bool {
        *self == RestartPolicy::Never
    }
}

/// An app's resource limits (cgroup v2 in the guest).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resources {
    /// `memory.max`: bytes, or with a K, M or G suffix ("64M"). The OOM
    /// killer acts on the app's processes beyond it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_size"
    )]
    pub memory_limit: Option<u64>,
    /// `cpu.weight`, 1 to 10000 (the default weight is 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_weight: Option<u32>,
    /// `pids.max`: the most processes the app may have at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<u32>,
}

impl Resources {
    pub fn is_empty(&self) -> bool {
        *self == Resources::default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MountPoint {
    /// The name of a volume of the pod.
    pub volume: String,
    /// Absolute path inside the app's root.
    pub path: String,
    /// Ignored when the volume sets `readOnly` itself.
    #[serde(default)]
    pub read_only: bool,
    /// Mount only this file or directory of the volume (a relative path
    /// inside it, as Kubernetes' `subPath`), not the whole volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_path: Option<String>,
}

impl PodManifest {
    pub fn volume(&self, name: &str) -> Option<&Volume> {
        self.volumes.iter().find(|v| v.name == name)
    }

    /// Whether the host must export `volume` read-only: true when no app
    /// mounts it writable. Read-only must hold against the guest's own root
    /// too, which a guest-side remount cannot promise.
    pub fn exported_read_only(&self, volume: &Volume) -> bool {
        !self
            .apps
            .iter()
            .flat_map(|app| app.mount_points.iter())
            .any(|mp| mp.volume == volume.name && !is_mount_read_only(volume, mp))
    }
}

/// rkt's `IsMountReadOnly`: a volume's `readOnly`, when set, overrides the
/// mount point's; when unset, the mount point decides.
pub fn is_mount_read_only(volume: &Volume, mount_point: &MountPoint) -> bool {
    volume.read_only.unwrap_or(mount_point.read_only)
}

fn de_mode<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let text = String::deserialize(d)?;
    parse_mode(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

fn ser_mode<S: Serializer>(mode: &Option<u32>, s: S) -> Result<S::Ok, S::Error> {
    match mode {
        Some(m) => s.serialize_str(&format!("{m:04o}")),
        None => s.serialize_none(),
    }
}

fn de_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    match Size::deserialize(d)? {
        Size::Bytes(n) => Ok(Some(n)),
        Size::Text(t) => parse_size(&t).map(Some).map_err(serde::de::Error::custom),
    }
}

/// A manifest value written as text that is not what its field takes. It
/// keeps the text as written, so the message quotes the user's own input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("invalid mode {0:?}: expected octal permission bits such as \"0755\"")]
    Mode(String),
    #[error(
        "invalid size {0:?}: expected bytes, or a number with a K, M or G suffix such as \"64M\""
    )]
    Size(String),
}

/// Parses an octal permission string such as "0755" or "1777".
pub fn parse_mode(text: &str) -> Result<u32, ValueError> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    match u32::from_str_radix(digits, 8) {
        Ok(m) if !digits.is_empty() && m <= 0o7777 => Ok(m),
        _ => Err(ValueError::Mode(text.to_string())),
    }
}

/// Parses a size such as "65536", "64K", "64M" or "1G" (binary units).
pub fn parse_size(text: &str) -> Result<u64, ValueError> {
    let bad = || ValueError::Size(text.to_string());
    let t = text.trim();
    let (digits, shift) = match t.as_bytes().last() {
        Some(b'k' | b'K') => (&t[..t.len() - 1], 10),
        Some(b'm' | b'M') => (&t[..t.len() - 1], 20),
        Some(b'g' | b'G') => (&t[..t.len() - 1], 30),
        _ => (t, 0),
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    n.checked_mul(1u64 << shift).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vol(read_only: Option<bool>) -> Volume {
        Volume {
            name: "data".into(),
            kind: VolumeKind::Host,
            source: Some("/srv".into()),
            read_only,
            mode: None,
            uid: None,
            gid: None,
            size: None,
        }
    }

    fn mp(read_only: bool) -> MountPoint {
        MountPoint {
            volume: "data".into(),
            path: "/data".into(),
            read_only,
            sub_path: None,
        }
    }

    #[test]
    fn read_only_rule_is_rkts() {
        // The volume's setting, when present, wins in both directions.
        assert!(is_mount_read_only(&vol(Some(true)), &mp(false)));
        assert!(!is_mount_read_only(&vol(Some(false)), &mp(true)));
        // Unset: the mount point decides.
        assert!(is_mount_read_only(&vol(None), &mp(true)));
        assert!(!is_mount_read_only(&vol(None), &mp(false)));
    }

    #[test]
    fn export_is_read_only_only_when_no_mount_writes() {
        let app = |mps: Vec<MountPoint>| App {
            name: "a".into(),
            rootfs: "/r".into(),
            exec: vec!["/bin/true".into()],
            mount_points: mps,
            ..App::default()
        };
        let pod = |v: Volume, mps: Vec<MountPoint>| PodManifest {
            hostname: None,
            volumes: vec![v],
            apps: vec![app(mps)],
            sandbox: false,
            network: Default::default(),
        };
        let p = pod(vol(None), vec![mp(true), mp(false)]);
        assert!(!p.exported_read_only(&p.volumes[0]));
        let p = pod(vol(None), vec![mp(true), mp(true)]);
        assert!(p.exported_read_only(&p.volumes[0]));
        let p = pod(vol(Some(true)), vec![mp(false)]);
        assert!(p.exported_read_only(&p.volumes[0]));
        let p = pod(vol(Some(false)), vec![mp(true)]);
        assert!(!p.exported_read_only(&p.volumes[0]));
        // Mounted by nobody: nothing may write it.
        let p = pod(vol(None), vec![]);
        assert!(p.exported_read_only(&p.volumes[0]));
    }

    #[test]
    fn sizes_and_modes_parse() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("64m"), Ok(64 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert!(parse_size("64Q")
            .unwrap_err()
            .to_string()
            .contains("invalid size \"64Q\""));
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999G").is_err());
        assert_eq!(parse_mode("0755"), Ok(0o755));
        assert_eq!(parse_mode("1777"), Ok(0o1777));
        assert!(parse_mode("0789").is_err());
        assert!(parse_mode("17777").is_err());
        assert!(parse_mode("").is_err());
        // The messages quote the text as written.
        assert_eq!(
            parse_mode("0789").unwrap_err().to_string(),
            "invalid mode \"0789\": expected octal permission bits such as \"0755\""
        );
        assert_eq!(
            parse_size(" 1T").unwrap_err().to_string(),
            "invalid size \" 1T\": expected bytes, or a number with a K, M or G suffix such as \"64M\""
        );
    }

    #[test]
    fn manifest_round_trips_through_json() {
        let text = r#"{
            "volumes": [
                {"name": "data", "kind": "host", "source": "/srv/data", "readOnly": true},
                {"name": "scratch", "kind": "empty", "mode": "1777", "size": "16M"}
            ],
            "apps": [{
                "name": "web", "rootfs": "/srv/root", "exec": ["/bin/sh", "-c", "true"],
                "env": [{"name": "A", "value": "b"}], "user": "nobody",
                "workingDirectory": "/tmp",
                "mountPoints": [{"volume": "data", "path": "/data", "readOnly": false}],
                "resources": {"memoryLimit": "64M", "cpuWeight": 200, "pidsLimit": 64},
                "stdin": true, "logMode": "non-blocking", "logBufferSize": "4M"
            }]
        }"#;
        let pod: PodManifest = serde_json::from_str(text).unwrap();
        assert_eq!(pod.apps[0].log_mode, LogMode::NonBlocking);
        assert_eq!(pod.apps[0].log_buffer_size, Some(4 << 20));
        assert_eq!(pod.volumes[1].mode, Some(0o1777));
        assert_eq!(pod.volumes[1].size, Some(16 << 20));
        assert_eq!(pod.apps[0].resources.memory_limit, Some(64 << 20));
        assert!(pod.apps[0].stdin);
        let again: PodManifest =
            serde_json::from_str(&serde_json::to_string(&pod).unwrap()).unwrap();
        assert_eq!(pod, again);
    }
}
