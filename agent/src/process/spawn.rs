//! Turning an app of the manifest into a process: its program found in its
//! own `PATH`, its environment, identity and working directory, started in
//! its root in a session of its own.

use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;

use super::isolation::{Enter, Isolation};
use super::start::{ChildSetup, Spawn, Stdio3};
use super::stdio::{self, Launched};
use super::users::{self, Identity};
use super::vfork::{Exec, NulError};
use super::{pty, Reaper, SpawnError};
use crate::storage::{open_in_root, open_root};
use kvmpod_api::layout;
use kvmpod_api::manifest::App;
use kvmpod_api::validate::normalize_guest_path;
use nix::fcntl::OFlag;
use nix::sys::stat::{fstat, SFlag};

/// `PATH` for apps that do not set one (appc's default).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The environment an app starts with: appc's defaults, then its own.
fn environment(app: &App, id: &Identity) -> Vec<(String, String)> {
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
fn find_program(
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

/// The terminal type a process on a terminal (an app's or an exec's)
/// gets when its environment names none: Docker's default for `-t`;
/// host-ctl passes the host's own when it has one.
const DEFAULT_TERM: &str = "xterm";

/// Whether a process on a terminal with environment `env` needs
/// [`DEFAULT_TERM`].
fn lacks_term(env: &[(String, String)]) -> bool {
    !env.iter().any(|(k, _)| k == "TERM")
}

/// Everything needed to start an app (or a command in its root), prepared
/// before the clone so the child only makes system calls.
#[derive(Debug, Clone)]
pub(super) struct Launch {
    pub program: String,
    argv0: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    cwd: String,
    identity: Identity,
}

impl Launch {
    /// The launch of `argv` (the app's own `exec` for the app) in `app`'s
    /// root, with the app's environment plus `extra_env`.
    pub(super) fn new(
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

    /// The process, ready to start. In the child, just before `exec`: join
    /// the app's cgroup (through `cgroup_procs`), apply `isolation` (enter
    /// the app's root in a mount namespace, limits, the capability
    /// bounding set), change to the working directory, start a new session
    /// (so signals reach the whole process group; with a pty, take it as
    /// controlling terminal), drop to the app's groups, gid and uid, then
    /// cut root's capabilities down and set `no_new_privs`. It holds the
    /// descriptors its child needs until it has started.
    pub(super) fn prepare_spawn(
        &self,
        io: Stdio3,
        cgroup_procs: Option<OwnedFd>,
        isolation: Isolation,
    ) -> Result<Spawn, SpawnError> {
        let cwd = CString::new(self.cwd.as_bytes())
            .map_err(|_| SpawnError::Nul("workingDirectory".into()))?;
        let tty = matches!(io, Stdio3::Pty(_));
        let mut env: Vec<String> = self.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if tty && lacks_term(&self.env) {
            env.push(format!("TERM={DEFAULT_TERM}"));
        }
        let argv = std::iter::once(self.argv0.as_str()).chain(self.args.iter().map(String::as_str));
        let exec = Exec::new(&self.program, argv, env).map_err(|e| {
            SpawnError::Nul(
                match e {
                    NulError::Program | NulError::Argument => "argument",
                    NulError::Environment => "environment",
                }
                .into(),
            )
        })?;
        let setup = ChildSetup {
            cgroup_procs,
            isolation,
            cwd,
            tty,
            uid: self.identity.uid,
            gid: self.identity.gid,
            groups: self.identity.groups.clone(),
        };
        Spawn::new(exec, io, setup)
    }
}

/// An app's main process, ready to be started, and started again after
/// each exit the restart policy allows.
pub struct AppLaunch {
    launch: Launch,
    /// The app's root, which the process pivots into.
    root: CString,
}

impl AppLaunch {
    /// Resolves `app`'s identity and program inside its (assembled) root.
    pub fn prepare(app: &App) -> Result<Self, SpawnError> {
        let root_path = layout::app_rootfs(&app.name);
        let root = open_root(&root_path).map_err(SpawnError::Root)?;
        let identity = users::resolve_app(&root, app)?;
        let launch = Launch::new(app, &root, identity, &app.exec, &[])?;
        let root = CString::new(root_path.as_os_str().as_bytes())
            .map_err(|_| SpawnError::Nul("the app's root".into()))?;
        Ok(AppLaunch { launch, root })
    }

    /// Starts `app`'s process once: in its cgroup (through `cgroup_procs`),
    /// in a new mount namespace pivoted into its root, reaped by `reaper`;
    /// on pipes, or on a terminal from the app's devpts (`"terminal"`).
    pub fn spawn(
        &self,
        reaper: &Reaper,
        app: &App,
        cgroup_procs: Option<OwnedFd>,
    ) -> Result<Launched, SpawnError> {
        let isolation = Isolation::for_app(
            app,
            Enter::Pivot {
                root: self.root.clone(),
            },
        );
        if !app.terminal {
            let io = Stdio3::Pipes { stdin: app.stdin };
            let spawn = self.launch.prepare_spawn(io, cgroup_procs, isolation)?;
            return stdio::with_pipes(reaper, &self.launch.program, spawn, None);
        }
        let root = open_root(&layout::app_rootfs(&app.name)).map_err(SpawnError::Root)?;
        let pty = pty::open_in_app(&root, None)?;
        stdio::nonblocking(&pty.master)?;
        let spawn = self
            .launch
            .prepare_spawn(Stdio3::Pty(pty.slave), cgroup_procs, isolation)?;
        stdio::on_terminal(reaper, &self.launch.program, spawn, pty.master, app.stdin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
    fn a_process_on_a_terminal_gets_a_term_unless_its_environment_sets_one() {
        let plain = environment(&app(&["x"], &[]), &id());
        assert!(lacks_term(&plain));
        let own = environment(&app(&["x"], &[("TERM", "vt100")]), &id());
        assert!(!lacks_term(&own));
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
