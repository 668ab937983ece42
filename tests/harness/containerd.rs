//! A containerd of the test's own (Debian's containerd 1.6): its root,
//! state, sockets and config under the fixture's directory, the kvmpod
//! shim on its PATH, stopped when dropped (what its shims leave is the
//! fixture's to find). The CRI plugin is off unless asked for ([`Cri`]):
//! then it serves the kubelet's API on the same socket, with a `kvmpod`
//! runtime handler and a sandbox (pause) image the test imports.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{run_with_limit, send_signal, Fixture, Outcome};

/// The runtime name containerd maps to `containerd-shim-kvmpod-v2`.
pub const RUNTIME: &str = "io.containerd.kvmpod.v2";
/// The containerd namespace the tests use.
pub const NAMESPACE: &str = "kvmpod-test";
/// The namespace containerd's CRI plugin keeps Kubernetes' images and
/// containers in.
pub const CRI_NAMESPACE: &str = "k8s.io";
/// The CRI runtime handler (a RuntimeClass's `handler`) that runs pods
/// under kvmpod.
pub const CRI_HANDLER: &str = "kvmpod";

/// The CRI plugin's settings.
#[derive(Debug, Clone)]
pub struct Cri {
    /// The image every pod sandbox runs (its pause container).
    pub sandbox_image: String,
    /// A CNI network configuration list (JSON) for pods that are not on
    /// the node's network; the plugins are Debian's.
    pub cni: Option<String>,
}

pub struct Containerd {
    child: Child,
    command: Command,
    pub socket: PathBuf,
    dir: PathBuf,
}

/// Starts containerd, its log appended to `<dir>/containerd.log`.
fn spawn(command: &mut Command, dir: &Path) -> Child {
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("containerd.log"))
        .unwrap();
    command.stderr(log).spawn().expect("starting containerd")
}

fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
}

/// Where a containerd of its own lives and what its shims run.
pub struct Setup<'a> {
    /// Its root, state, sockets, config and log.
    pub dir: PathBuf,
    pub host_ctl: &'a Path,
    pub agent: &'a Path,
    pub shim: &'a Path,
    /// kvmpod's state directory, for the shim's pods.
    pub state_dir: PathBuf,
    /// The CRI plugin, on with these settings; off when None.
    pub cri: Option<Cri>,
}

/// The CNI directories containerd's CRI plugin reads: Debian's plugins,
/// and `conflist` as the only network.
fn write_cni(dir: &Path, conflist: &str) {
    let (bin, conf) = (dir.join("bin"), dir.join("conf"));
    fs::create_dir_all(&bin).expect("creating the CNI bin directory");
    fs::create_dir_all(&conf).expect("creating the CNI conf directory");
    let plugins = fs::read_dir("/usr/lib/cni")
        .expect("/usr/lib/cni is missing: run `make deps` (containernetworking-plugins)");
    for p in plugins.flatten() {
        let link = bin.join(p.file_name());
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(p.path(), link).expect("linking a CNI plugin");
    }
    fs::write(conf.join("10-kvmpod.conflist"), conflist).expect("writing the CNI configuration");
}

/// containerd's configuration for `s`.
fn config(s: &Setup<'_>, socket: &Path) -> String {
    let dir = &s.dir;
    let mut text = format!(
        "version = 2\n\
         root = \"{root}\"\n\
         state = \"{state}\"\n\
         [grpc]\n  address = \"{sock}\"\n\
         [ttrpc]\n  address = \"{sock}.ttrpc\"\n",
        root = dir.join("root").display(),
        state = dir.join("state").display(),
        sock = socket.display(),
    );
    match &s.cri {
        None => text.insert_str(0, "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n"),
        // Pods use the node's network (no CNI here); kvmpod runs what the
        // `kvmpod` handler names; nothing is pulled.
        Some(cri) => text.push_str(&format!(
            "[plugins.\"io.containerd.grpc.v1.cri\"]\n\
             \x20 sandbox_image = \"{image}\"\n\
             \x20 stream_server_address = \"127.0.0.1\"\n\
             \x20 stream_server_port = \"0\"\n\
             \x20 disable_apparmor = true\n\
             \x20 [plugins.\"io.containerd.grpc.v1.cri\".cni]\n\
             \x20   bin_dir = \"{cni}/bin\"\n\
             \x20   conf_dir = \"{cni}/conf\"\n\
             \x20 [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n\
             \x20   runtime_type = \"io.containerd.runc.v2\"\n\
             \x20 [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.{handler}]\n\
             \x20   runtime_type = \"{RUNTIME}\"\n",
            image = cri.sandbox_image,
            cni = dir.join("cni").display(),
            handler = CRI_HANDLER,
        )),
    }
    text
}

impl Containerd {
    /// Starts containerd for `fx`, with the shim and host-ctl reachable
    /// and kvmpod's state in the fixture's directory.
    pub fn start(fx: &Fixture) -> Containerd {
        Containerd::start_with(Setup {
            dir: fx.path().join("containerd"),
            host_ctl: &fx.programs.host_ctl,
            agent: &fx.programs.agent,
            shim: &fx.programs.shim,
            state_dir: fx.state_dir(),
            cri: None,
        })
    }

    /// Starts containerd for `fx` with its CRI plugin on.
    pub fn start_cri(fx: &Fixture, cri: Cri) -> Containerd {
        Containerd::start_with(Setup {
            dir: fx.path().join("containerd"),
            host_ctl: &fx.programs.host_ctl,
            agent: &fx.programs.agent,
            shim: &fx.programs.shim,
            state_dir: fx.state_dir(),
            cri: Some(cri),
        })
    }

    /// Starts containerd as `s` says.
    pub fn start_with(s: Setup<'_>) -> Containerd {
        if let Some(conflist) = s.cri.as_ref().and_then(|c| c.cni.as_ref()) {
            write_cni(&s.dir.join("cni"), conflist);
        }
        let shim = s.shim;
        assert!(
            on_path("containerd") && on_path("ctr"),
            "containerd and ctr are missing (Debian package containerd); run `make deps` as root"
        );
        assert!(
            shim.is_file(),
            "{} is not built; run `make build`",
            shim.display()
        );
        let dir = s.dir.clone();
        fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("containerd.sock");
        let config = dir.join("config.toml");
        fs::write(&config, self::config(&s, &socket)).unwrap();
        let shim_dir = shim.parent().unwrap();
        let path = format!(
            "{}:{}",
            shim_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut command = Command::new("containerd");
        command
            .arg("--config")
            .arg(&config)
            .env("PATH", path)
            .env("KVMPOD_HOST_CTL", s.host_ctl)
            .env("KVMPOD_AGENT", s.agent)
            .env("KVMPOD_STATE_DIR", &s.state_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let child = spawn(&mut command, &dir);
        let c = Containerd {
            child,
            command,
            socket,
            dir,
        };
        c.wait_until_ready();
        c
    }

    fn wait_until_ready(&self) {
        let until = Instant::now() + Duration::from_secs(30);
        while self.ctr(&["version"], Duration::from_secs(10)).code != Some(0) {
            assert!(
                Instant::now() < until,
                "containerd did not answer within 30 s\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops containerd and starts it again on the same root and state,
    /// as a host's containerd is restarted (its shims keep running).
    pub fn restart(&mut self) {
        self.stop();
        self.child = spawn(&mut self.command, &self.dir);
        self.wait_until_ready();
    }

    /// `ctr --address <socket> --namespace kvmpod-test <args>`.
    pub fn command(&self, args: &[&str]) -> Command {
        self.command_in(NAMESPACE, args)
    }

    /// `ctr --address <socket> --namespace <namespace> <args>`.
    fn command_in(&self, namespace: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(&self.socket)
            .arg("--namespace")
            .arg(namespace)
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    pub fn ctr(&self, args: &[&str], limit: Duration) -> Outcome {
        run_with_limit(self.command(args), limit)
    }

    /// `ctr` in namespace `namespace`.
    pub fn ctr_in(&self, namespace: &str, args: &[&str], limit: Duration) -> Outcome {
        run_with_limit(self.command_in(namespace, args), limit)
    }

    /// containerd's own log, for assertion messages.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    /// Stops containerd (SIGTERM, then SIGKILL after 20 s).
    pub fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        send_signal(self.child.id() as i32, nix::sys::signal::Signal::SIGTERM);
        let until = Instant::now() + Duration::from_secs(20);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.stop();
    }
}
