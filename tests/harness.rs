//! The boot tests' harness: finds host-ctl, the agent and the host tools,
//! builds app roots from busybox, writes manifests and runs pods.
//!
//! A missing prerequisite is a failure that says how to fix it (`make
//! deps`, `make build`), never a quiet skip.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_path_buf()
}

fn on_path(name: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.iter().any(|d| d.join(name).is_file())
}

/// The built programs the tests run.
pub struct Programs {
    pub host_ctl: PathBuf,
    pub agent: PathBuf,
}

fn built(var: &str, default: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(p) => PathBuf::from(p),
        None => repo().join(default),
    }
}

/// Checks every prerequisite of a boot test and returns the programs.
/// Panics with the command that fixes what is missing.
pub fn programs() -> Programs {
    let mut missing = Vec::new();
    if !on_path("qemu-system-x86_64") {
        missing.push("qemu-system-x86_64 (Debian package qemu-system-x86)");
    }
    if !on_path("vhost-device-vsock") {
        missing.push("vhost-device-vsock (cargo install)");
    }
    let has_kernel = fs::read_dir("/boot")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .any(|e| e.file_name().to_string_lossy().starts_with("vmlinuz-"))
        })
        .unwrap_or(false);
    if !has_kernel {
        missing.push("a guest kernel in /boot (Debian package linux-image-amd64)");
    }
    if !Path::new("/bin/busybox").is_file() {
        missing.push("/bin/busybox (Debian package busybox-static)");
    }
    assert!(
        missing.is_empty(),
        "boot test prerequisites missing: {}; run `make deps` as root",
        missing.join(", ")
    );
    let p = Programs {
        host_ctl: built("KVMPOD_HOST_CTL", "target/release/host-ctl"),
        agent: built(
            "KVMPOD_AGENT",
            "target/x86_64-unknown-linux-musl/agent/kvmpod-agent",
        ),
    };
    for bin in [&p.host_ctl, &p.agent] {
        assert!(
            bin.is_file(),
            "{} is not built; run `make build` (or `make test`, which builds first)",
            bin.display()
        );
    }
    p
}

/// What a host-ctl run produced.
#[derive(Debug)]
pub struct Outcome {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Outcome {
    /// Everything, for assertion messages.
    pub fn dump(&self) -> String {
        format!(
            "exit code {:?} after {:.1?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.elapsed, self.stdout, self.stderr
        )
    }
}

/// A scratch directory for one pod: manifests, app roots, host volumes and
/// host-ctl's state directory.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub programs: Programs,
}

impl Fixture {
    pub fn new() -> Self {
        let programs = programs();
        Fixture {
            dir: tempfile::Builder::new()
                .prefix("kvmpod-test-")
                .tempdir()
                .expect("creating a temporary directory"),
            programs,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn state_dir(&self) -> PathBuf {
        self.path().join("state")
    }

    /// A busybox app root at `<fixture>/<name>`.
    pub fn rootfs(&self, name: &str) -> PathBuf {
        let root = self.path().join(name);
        let status = Command::new(repo().join("scripts/mkroot.sh"))
            .arg(&root)
            .status()
            .expect("running scripts/mkroot.sh");
        assert!(
            status.success(),
            "scripts/mkroot.sh failed; run `make deps`"
        );
        root
    }

    /// A host directory `<fixture>/<name>` with `files` in it.
    pub fn host_dir(&self, name: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir = self.path().join(name);
        fs::create_dir_all(&dir).expect("creating a host volume directory");
        for (file, text) in files {
            fs::write(dir.join(file), text).expect("writing a host volume file");
        }
        dir
    }

    pub fn write_manifest(&self, name: &str, manifest: &serde_json::Value) -> PathBuf {
        let path = self.path().join(name);
        fs::write(&path, serde_json::to_vec_pretty(manifest).expect("json"))
            .expect("writing a manifest");
        path
    }

    /// How many pod directories host-ctl created.
    pub fn pods_created(&self) -> usize {
        fs::read_dir(self.state_dir().join("pods"))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Runs `host-ctl run <args>` with this fixture's state directory,
    /// killing it after `limit`.
    pub fn run(&self, args: &[&str], limit: Duration) -> Outcome {
        let mut all = vec!["run"];
        all.extend_from_slice(args);
        self.host_ctl(&all, limit)
    }

    /// `host-ctl <args>` with this fixture's state directory.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.programs.host_ctl);
        cmd.arg("--state-dir")
            .arg(self.state_dir())
            .args(args)
            .env("KVMPOD_AGENT", &self.programs.agent)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `host-ctl <args>`, killing it after `limit`.
    pub fn host_ctl(&self, args: &[&str], limit: Duration) -> Outcome {
        run_with_limit(self.command(args), limit)
    }
}

impl Default for Fixture {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Fixture {
    /// A failed test may leave a detached pod running: its processes all
    /// name the fixture's directory, and go with it.
    fn drop(&mut self) {
        for entry in self.leftover_processes() {
            if let Some(pid) = entry.split(':').next().and_then(|p| p.parse::<i32>().ok()) {
                // SAFETY: kill(2) on a process found by its command line.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
}

/// Runs `cmd`, collecting its output, and kills it after `limit` (a boot
/// test must fail, not hang CI).
pub fn run_with_limit(mut cmd: Command, limit: Duration) -> Outcome {
    let start = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let code = loop {
        if let Some(status) = child.try_wait().expect("waiting for host-ctl") {
            break status.code();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let stdout = out_reader.join().unwrap_or_default();
            let stderr = err_reader.join().unwrap_or_default();
            panic!(
                "{cmd:?} did not finish within {limit:?}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Outcome {
        code,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
        elapsed: start.elapsed(),
    }
}

/// A host-ctl run in progress, for tests that interrupt it.
pub struct Running {
    child: std::process::Child,
    stdout: std::sync::Arc<std::sync::Mutex<String>>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
    start: Instant,
}

fn collect(
    mut from: impl Read + Send + 'static,
    into: std::sync::Arc<std::sync::Mutex<String>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => into
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
    })
}

impl Running {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn stdout(&self) -> String {
        self.stdout
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until stdout contains `needle`; panics after `limit`.
    pub fn wait_for_stdout(&mut self, needle: &str, limit: Duration) {
        let until = Instant::now() + limit;
        while !self.stdout().contains(needle) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "host-ctl exited ({status}) before printing {needle:?}\n{}",
                    self.stdout()
                );
            }
            assert!(
                Instant::now() < until,
                "no {needle:?} within {limit:?}\n{}",
                self.stdout()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// Waits for host-ctl to exit (killing it after `limit`).
    pub fn finish(mut self, limit: Duration) -> Outcome {
        let until = Instant::now() + limit;
        let code = loop {
            if let Some(status) = self.child.try_wait().expect("waiting for host-ctl") {
                break status.code();
            }
            if Instant::now() > until {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("host-ctl did not exit within {limit:?}\n{}", self.stdout());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        Outcome {
            code,
            stdout: self.stdout(),
            stderr: self
                .stderr
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            elapsed: self.start.elapsed(),
        }
    }
}

impl Fixture {
    /// Starts `host-ctl run <args>` without waiting for it.
    pub fn spawn(&self, args: &[&str]) -> Running {
        let mut all = vec!["run"];
        all.extend_from_slice(args);
        self.spawn_host_ctl(&all)
    }

    /// Starts `host-ctl <args>` without waiting for it.
    pub fn spawn_host_ctl(&self, args: &[&str]) -> Running {
        let mut child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting host-ctl");
        let stdout = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let readers = vec![
            collect(child.stdout.take().expect("piped"), stdout.clone()),
            collect(child.stderr.take().expect("piped"), stderr.clone()),
        ];
        Running {
            child,
            stdout,
            stderr,
            readers,
            start: Instant::now(),
        }
    }

    /// Processes whose command line mentions this fixture (QEMU and
    /// vhost-device-vsock name the pod directory in their arguments).
    pub fn leftover_processes(&self) -> Vec<String> {
        let needle = self.path().to_string_lossy().into_owned();
        let mut found = Vec::new();
        for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(&needle) {
                found.push(format!(
                    "{}: {cmdline}",
                    entry.file_name().to_string_lossy()
                ));
            }
        }
        found
    }

    /// Waits (up to `limit`) until no process mentions this fixture.
    pub fn assert_no_leftovers(&self, limit: Duration) {
        let until = Instant::now() + limit;
        loop {
            let left = self.leftover_processes();
            if left.is_empty() {
                return;
            }
            assert!(
                Instant::now() < until,
                "processes left behind:\n{}",
                left.join("\n")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The time a boot test allows one pod: generous for a loaded CI host
/// under TCG.
pub const POD_LIMIT: Duration = Duration::from_secs(240);
