//! Turning an app of the manifest into a process: its program found in its
//! own `PATH`, its environment, identity and working directory, started
//! chrooted into its root in a session of its own.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use kvmpod_api::manifest::App;
use kvmpod_api::validate::normalize_guest_path;
use nix::fcntl::OFlag;
use nix::sys::stat::{fstat, SFlag};

use crate::isolation::Isolation;
use crate::resolve::open_in_root;
use crate::users::Identity;

/// `PATH` for apps that do not set one (appc's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Exit status recorded for an app that could not be set up (mounts, user):
/// the convention of `docker run` for errors of the runtime itself.
pub const EXIT_SETUP_FAILED: i32 = 125;
/// ... for a program that exists but cannot be executed.
pub const EXIT_CANNOT_EXECUTE: i32 = 126;
/// ... for a program that does not exist.
pub const EXIT_NOT_FOUND: i32 = 127;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpawnError {
    #[error("{program:?} was not found in the app's PATH ({path})")]
    NotInPath { program: String, path: String },
    #[error("{0:?} does not exist in the app's root")]
    Missing(String),
    #[error("{0:?} is not an executable file")]
    NotExecutable(String),
    #[error("{0}: contains a NUL byte")]
    Nul(String),
    #[error("{0}")]
    Setup(String),
    #[error("starting {program:?}: {reason}")]
    Exec {
        program: String,
        reason: String,
        code: i32,
    },
}

impl SpawnError {
    /// The exit status the app is recorded with.
    pub fn exit_code(&self) -> i32 {
        match self {
            SpawnError::NotInPath { .. } | SpawnError::Missing(_) => EXIT_NOT_FOUND,
            SpawnError::NotExecutable(_) => EXIT_CANNOT_EXECUTE,
            SpawnError::Nul(_) | SpawnError::Setup(_) => EXIT_SETUP_FAILED,
            SpawnError::Exec { code, .. } => *code,
        }
    }
}

/// The environment an app starts with: appc's defaults, then its own.
pub fn environment(app: &App, id: &Identity) -> Vec<(String, String)> {
    let mut env = vec![
        ("PATH".to_string(), DEFAULT_PATH.to_string()),
        ("HOME".to_string(), id.home.clone()),
        ("AC_APP_NAME".to_string(), app.name.clone()),
    ];
    for var in &app.env {
        match env.iter_mut().find(|(k, _)| *k == var.name) {
            Some(slot) => slot.1 = var.value.clone(),
            None => env.push((var.name.clone(), var.value.clone())),
        }
    }
    env
}

/// Finds the program to execute, as a path inside the app's root. A name
/// without `/` is searched in `PATH`, inside the root; any other path must
/// name an executable file there.
pub fn find_program(
    root: &OwnedFd,
    program: &str,
    path_var: &str,
    cwd: &str,
) -> Result<String, SpawnError> {
    if program.contains('/') {
        let full = if program.starts_with('/') {
            program.to_string()
        } else {
            format!("{}/{program}", cwd.trim_end_matches('/'))
        };
        return match is_executable(root, &full) {
            Some(true) => Ok(program.to_string()),
            Some(false) => Err(SpawnError::NotExecutable(program.to_string())),
            None => Err(SpawnError::Missing(program.to_string())),
        };
    }
    for dir in path_var.split(':').filter(|d| d.starts_with('/')) {
        let candidate = format!("{}/{program}", dir.trim_end_matches('/'));
        if is_executable(root, &candidate) == Some(true) {
            return Ok(candidate);
        }
    }
    Err(SpawnError::NotInPath {
        program: program.to_string(),
        path: path_var.to_string(),
    })
}

/// Some(true) for an executable regular file, Some(false) for something
/// else that exists, None when nothing is there.
fn is_executable(root: &OwnedFd, path: &str) -> Option<bool> {
    let fd = open_in_root(root, path, OFlag::O_PATH).ok()?;
    let st = fstat(&fd).ok()?;
    let regular = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG;
    Some(regular && st.st_mode & 0o111 != 0)
}

/// Where a process's stdin, stdout and stderr go.
pub enum Stdio3 {
    /// stdout and stderr piped to the agent; stdin piped too, or
    /// `/dev/null`.
    Pipes { stdin: bool },
    /// All three on this pseudo-terminal, which becomes the process's
    /// controlling terminal.
    Pty(OwnedFd),
}

/// Everything needed to start an app (or a command in its root), prepared
/// before `fork` so the child only makes system calls.
#[derive(Debug, Clone)]
pub struct Launch {
    pub program: String,
    pub argv0: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: String,
    pub identity: Identity,
}

/// A command ready to spawn, and the descriptors its child needs until
/// then.
pub struct Prepared {
    pub command: Command,
    _keep: Vec<OwnedFd>,
}

impl Launch {
    /// The launch of `argv` (the app's own `exec` for the app) in `app`'s
    /// root, with the app's environment plus `extra_env`.
    pub fn new(
        app: &App,
        root: &OwnedFd,
        identity: Identity,
        argv: &[String],
        extra_env: &[(String, String)],
    ) -> Result<Self, SpawnError> {
        let mut env = environment(app, &identity);
        for (k, v) in extra_env {
            match env.iter_mut().find(|(name, _)| name == k) {
                Some(slot) => slot.1 = v.clone(),
                None => env.push((k.clone(), v.clone())),
            }
        }
        let cwd = app
            .working_directory
            .as_deref()
            .map(|w| normalize_guest_path(w).unwrap_or_else(|_| "/".into()))
            .unwrap_or_else(|| "/".into());
        let path_var = env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_str())
            .unwrap_or(DEFAULT_PATH);
        let first = argv.first().cloned().unwrap_or_default();
        let program = find_program(root, &first, path_var, &cwd)?;
        Ok(Launch {
            program,
            argv0: first,
            args: argv.iter().skip(1).cloned().collect(),
            env,
            cwd,
            identity,
        })
    }

    /// The command. In the child, just before `exec`: join the app's
    /// cgroup (through `cgroup_procs`), apply `isolation` (enter the app's
    /// root in a mount namespace, limits, the capability bounding set),
    /// change to the working directory, start a new session (so signals
    /// reach the whole process group; with a pty, take it as controlling
    /// terminal), drop to the app's groups, gid and uid, then cut root's
    /// capabilities down and set `no_new_privs`.
    pub fn command(
        &self,
        io: Stdio3,
        cgroup_procs: Option<OwnedFd>,
        isolation: Isolation,
    ) -> Result<Prepared, SpawnError> {
        let cstr =
            |s: &[u8], what: &str| CString::new(s).map_err(|_| SpawnError::Nul(what.to_string()));
        let cwd = cstr(self.cwd.as_bytes(), "workingDirectory")?;
        for a in std::iter::once(&self.program).chain(&self.args) {
            cstr(a.as_bytes(), "argument")?;
        }
        for (k, v) in &self.env {
            cstr(k.as_bytes(), "environment")?;
            cstr(v.as_bytes(), "environment")?;
        }
        let uid = self.identity.uid;
        let gid = self.identity.gid;
        let groups: Vec<libc::gid_t> = self.identity.groups.clone();

        let mut cmd = Command::new(&self.program);
        cmd.arg0(&self.argv0)
            .args(&self.args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        let mut keep = Vec::new();
        let tty = match io {
            Stdio3::Pipes { stdin } => {
                cmd.stdin(if stdin { Stdio::piped() } else { Stdio::null() })
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
                false
            }
            Stdio3::Pty(slave) => {
                let dup = |fd: &OwnedFd| {
                    fd.try_clone()
                        .map_err(|e| SpawnError::Setup(format!("duplicating the terminal: {e}")))
                };
                cmd.stdin(Stdio::from(dup(&slave)?))
                    .stdout(Stdio::from(dup(&slave)?))
                    .stderr(Stdio::from(slave));
                true
            }
        };
        let cgroup_fd = cgroup_procs.as_ref().map(|fd| fd.as_raw_fd());
        keep.extend(cgroup_procs);
        // SAFETY: the closure runs in the forked child before exec and only
        // makes async-signal-safe system calls on data prepared above.
        unsafe {
            cmd.pre_exec(move || {
                if let Some(fd) = cgroup_fd {
                    if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                isolation.apply_as_root()?;
                // Mark every inherited descriptor close-on-exec: the process
                // gets its stdio and nothing of the agent's.
                libc::syscall(
                    libc::SYS_close_range,
                    3u32,
                    u32::MAX,
                    libc::CLOSE_RANGE_CLOEXEC,
                );
                if libc::chdir(cwd.as_ptr()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if tty && libc::ioctl(0, libc::TIOCSCTTY as _, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                isolation.apply_after_identity(uid)
            });
        }
        Ok(Prepared {
            command: cmd,
            _keep: keep,
        })
    }
}

/// Maps a failed `spawn` to the error recorded for the app.
pub fn exec_error(program: &str, e: &std::io::Error) -> SpawnError {
    let code = match e.raw_os_error() {
        Some(libc::ENOENT) => EXIT_NOT_FOUND,
        Some(libc::EACCES) | Some(libc::ENOEXEC) | Some(libc::EPERM) => EXIT_CANNOT_EXECUTE,
        _ => EXIT_SETUP_FAILED,
    };
    SpawnError::Exec {
        program: program.to_string(),
        reason: e.to_string(),
        code,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::open_root;
    use kvmpod_api::manifest::EnvVar;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn app(exec: &[&str], env: &[(&str, &str)]) -> App {
        App {
            name: "web".into(),
            rootfs: "/r".into(),
            exec: exec.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(n, v)| EnvVar {
                    name: n.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            ..App::default()
        }
    }

    fn id() -> Identity {
        Identity {
            uid: 0,
            gid: 0,
            groups: vec![0],
            home: "/root".into(),
        }
    }

    #[test]
    fn environment_has_defaults_that_the_app_can_override() {
        let env = environment(&app(&["x"], &[("PATH", "/opt/bin"), ("A", "1")]), &id());
        assert_eq!(
            env,
            [
                ("PATH".to_string(), "/opt/bin".to_string()),
                ("HOME".to_string(), "/root".to_string()),
                ("AC_APP_NAME".to_string(), "web".to_string()),
                ("A".to_string(), "1".to_string()),
            ]
        );
    }

    #[test]
    fn programs_are_found_inside_the_root_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::create_dir_all(root.join("data")).unwrap();
        fs::write(root.join("bin/tool"), "").unwrap();
        fs::set_permissions(root.join("bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(root.join("bin/plain"), "").unwrap();
        let r = open_root(root).unwrap();
        assert_eq!(
            find_program(&r, "tool", "/usr/bin:/bin", "/").unwrap(),
            "/bin/tool"
        );
        assert_eq!(find_program(&r, "/bin/tool", "", "/").unwrap(), "/bin/tool");
        assert_eq!(
            find_program(&r, "../bin/tool", "", "/data").unwrap(),
            "../bin/tool"
        );
        let e = find_program(&r, "sh", "/usr/bin:/bin", "/").unwrap_err();
        assert_eq!(e.exit_code(), 127);
        assert_eq!(
            e.to_string(),
            "\"sh\" was not found in the app's PATH (/usr/bin:/bin)"
        );
        // The host's /bin/sh does not count: the search stays in the root.
        assert!(find_program(&r, "/bin/sh", "", "/").is_err());
        let e = find_program(&r, "/bin/plain", "", "/").unwrap_err();
        assert_eq!(e.exit_code(), 126);
        assert_eq!(
            find_program(&r, "/nope", "", "/").unwrap_err().exit_code(),
            127
        );
    }
}
