//! A scratch directory for one test: manifests, app roots, host volumes and
//! host-ctl's state directory, and the commands run against it. Every
//! booting test ends with [`Fixture::finish`], which fails the test if any
//! process, mount, CID lease or socket of its pods outlived them.

use std::cell::OnceCell;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::leftovers;
use crate::pod::PodSpec;
use crate::process::{run_with_limit, Outcome, Running};
use crate::programs::{programs, Programs};
use crate::repo;

/// How long leftovers may take to go after a pod ended.
const CLEANUP: Duration = Duration::from_secs(15);

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub programs: Programs,
    root: OnceCell<PathBuf>,
    finished: bool,
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
            root: OnceCell::new(),
            finished: false,
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

    /// The fixture's shared busybox app root, built on first use.
    pub fn root(&self) -> PathBuf {
        self.root.get_or_init(|| self.rootfs("rootfs")).clone()
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

    pub fn write_manifest(&self, name: &str, manifest: &Value) -> PathBuf {
        let path = self.path().join(name);
        fs::write(&path, serde_json::to_vec_pretty(manifest).expect("json"))
            .expect("writing a manifest");
        path
    }

    /// A modules directory (`<fixture>/modules/6.1.0-fake`) naming every
    /// module of the stage1 image, none of which is a kernel module: the
    /// agent's first module load fails, before vsock is up.
    pub fn broken_modules(&self) -> PathBuf {
        let modules = self.path().join("modules/6.1.0-fake");
        fs::create_dir_all(modules.join("kernel")).expect("creating a modules directory");
        let mut dep = String::new();
        for wanted in rootfs_builder::initramfs::pod_modules().values() {
            for m in wanted {
                fs::write(
                    modules.join(format!("kernel/{m}.ko")),
                    b"not a kernel module",
                )
                .expect("writing a fake module");
                dep.push_str(&format!("kernel/{m}.ko:\n"));
            }
        }
        fs::write(modules.join("modules.dep"), dep).expect("writing modules.dep");
        modules
    }

    /// Waits (up to 60 s) until `host-ctl logs <id> <app>` shows `needle`;
    /// the output then.
    pub fn wait_for_log(&self, id: &str, app: &str, needle: &str) -> String {
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let logs = self.host_ctl(&["logs", id, app], crate::CMD);
            if logs.stdout.contains(needle) {
                return logs.stdout;
            }
            assert!(Instant::now() < until, "no {needle:?}\n{}", logs.dump());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A pod with no app yet; see [`PodSpec`].
    pub fn pod(&self) -> PodSpec<'_> {
        PodSpec::new(self)
    }

    /// The common pod: one app `name` running `script` with `/bin/sh -c`
    /// in the fixture's busybox root.
    pub fn one_app(&self, name: &str, script: &str) -> PodSpec<'_> {
        self.pod().app(name, script)
    }

    /// How many pod directories host-ctl created.
    pub fn pods_created(&self) -> usize {
        fs::read_dir(self.state_dir().join("pods"))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// A pod's record (`state.json`).
    pub fn record(&self, id: &str) -> Value {
        let path = self.state_dir().join("pods").join(id).join("state.json");
        let text = fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        serde_json::from_slice(&text).expect("a record is JSON")
    }

    /// Waits until pod `id` is recorded exited; its record.
    pub fn wait_until_exited(&self, id: &str, limit: Duration) -> Value {
        let until = Instant::now() + limit;
        loop {
            let rec = self.record(id);
            if rec["state"] == "exited" {
                return rec;
            }
            assert!(Instant::now() < until, "pod {id} did not end: {rec}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Imports the harness's test image (see `images::write_test_image`)
    /// as `kvmpod/test:1`.
    pub fn import_test_image(&self) {
        let archive = self.path().join("test-image.tar");
        crate::images::write_test_image(&self.root(), &archive, "kvmpod/test:1");
        let out = self.host_ctl(&["image", "import", archive.to_str().unwrap()], crate::CMD);
        assert_eq!(out.code, Some(0), "{}", out.dump());
        assert!(
            out.stdout.starts_with("kvmpod/test:1 sha256:"),
            "{}",
            out.dump()
        );
    }

    /// `host-ctl <args>` with this fixture's state directory.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.programs.host_ctl);
        cmd.arg("--state-dir")
            .arg(self.state_dir())
            .args(args)
            .env("KVMPOD_AGENT", &self.programs.agent)
            .stdin(Stdio::null());
        default_interrupts(&mut cmd);
        cmd
    }

    /// Runs `host-ctl <args>`, killing it and failing after `limit`.
    pub fn host_ctl(&self, args: &[&str], limit: Duration) -> Outcome {
        run_with_limit(self.command(args), limit)
    }

    /// Runs `host-ctl run <args>`.
    pub fn run(&self, args: &[&str], limit: Duration) -> Outcome {
        let mut all = vec!["run"];
        all.extend_from_slice(args);
        self.host_ctl(&all, limit)
    }

    /// `host-ctl run --detach <manifest> [args]`: the new pod's ID.
    pub fn detach(&self, manifest: &Path, args: &[&str]) -> String {
        let mut all = vec!["--detach"];
        all.extend_from_slice(args);
        let m = manifest.to_string_lossy();
        all.push(&m);
        let out = self.run(&all, crate::POD_LIMIT);
        assert_eq!(out.code, Some(0), "{}", out.dump());
        let id = out.stdout.trim().to_string();
        assert_eq!(id.len(), 36, "not a pod ID\n{}", out.dump());
        id
    }

    /// Starts `host-ctl run <args>` without waiting for it.
    pub fn spawn(&self, args: &[&str]) -> Running {
        let mut all = vec!["run"];
        all.extend_from_slice(args);
        self.spawn_host_ctl(&all)
    }

    /// Runs `host-ctl run --detach <args>` once for each of `runs`, all
    /// started before any is waited for; the pods' IDs, in that order.
    pub fn detach_all(&self, runs: &[&[&str]]) -> Vec<String> {
        let started: Vec<Running> = runs
            .iter()
            .map(|args| {
                let mut all = vec!["--detach"];
                all.extend_from_slice(args);
                self.spawn(&all)
            })
            .collect();
        started
            .into_iter()
            .map(|r| {
                let out = r.finish(crate::POD_LIMIT);
                assert_eq!(out.code, Some(0), "{}", out.dump());
                out.stdout.trim().to_string()
            })
            .collect()
    }

    /// Starts `host-ctl <args>` without waiting for it.
    pub fn spawn_host_ctl(&self, args: &[&str]) -> Running {
        Running::start(self.command(args))
    }

    /// Processes whose command line mentions this fixture.
    pub fn leftover_processes(&self) -> Vec<String> {
        leftovers::processes(self.path())
    }

    /// Ends the test: fails unless every pod's processes, mounts, CID
    /// leases and sockets are gone (within a few seconds).
    pub fn finish(mut self) {
        self.finished = true;
        leftovers::assert_clean(self.path(), &self.state_dir(), CLEANUP);
    }

    /// Ends a test that boots nothing.
    pub fn finish_without_pods(mut self) {
        self.finished = true;
        assert_eq!(self.pods_created(), 0, "a pod directory was created");
        leftovers::assert_clean(self.path(), &self.state_dir(), Duration::ZERO);
    }
}

impl Default for Fixture {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Fixture {
    /// A failed test may leave a pod running: its processes all name the
    /// fixture's directory, and go with it. A test that did not fail but
    /// never checked for leftovers fails here.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        leftovers::clean_up(self.path());
        if !std::thread::panicking() {
            panic!("the test ended without Fixture::finish(), which checks that its pods left nothing behind");
        }
    }
}

/// Gives the command SIGINT and SIGQUIT as a terminal would deliver them.
/// A shell starts background jobs (`make test &`) with both ignored, and
/// an ignored signal stays ignored across exec: a test that stands in for
/// Ctrl-C would then test nothing.
fn default_interrupts(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec and only
    // calls signal(2), which is async-signal-safe; it touches no memory of
    // the parent's.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            libc::signal(libc::SIGQUIT, libc::SIG_DFL);
            Ok(())
        });
    }
}

/// The IDs of the pods in a fixture's state directory, oldest first.
pub fn fixture_pods(fx: &Fixture) -> Vec<String> {
    let mut pods: Vec<(std::time::SystemTime, String)> = fs::read_dir(fx.state_dir().join("pods"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let created = fs::metadata(e.path().join("state.json"))
                .and_then(|m| m.modified())
                .unwrap_or(std::time::SystemTime::UNIX_EPOCH);
            (created, e.file_name().to_string_lossy().into_owned())
        })
        .collect();
    pods.sort();
    pods.into_iter().map(|(_, id)| id).collect()
}
