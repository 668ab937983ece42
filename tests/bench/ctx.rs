//! The shared context of every section: where the bench works and writes,
//! the host-ctl and agent it measures, and how it runs pods and reads their
//! records. Sections measure pods only through here, so every figure comes
//! from the same binaries, state directory and rootfs.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

/// Runs of each whole-pod measurement (`KVMPOD_BENCH_RUNS`, 5 by default):
/// fewer runs make a quick check, more a steadier median.
pub fn runs() -> usize {
    std::env::var("KVMPOD_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

pub struct Ctx {
    pub repo: PathBuf,
    /// `target/bench`: results.json and the chart.
    pub out: PathBuf,
    /// Manifests, host volumes and the rootfs, remade on every run.
    pub work: PathBuf,
    pub state: PathBuf,
    host_ctl: PathBuf,
    pub agent: PathBuf,
    pub rootfs: PathBuf,
}

impl Ctx {
    /// Starts from a clean work directory and state (no pods left from an
    /// earlier run), checks the binaries are built and makes the rootfs.
    pub fn new() -> Result<Ctx> {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .ok_or_else(|| anyhow!("no repository"))?
            .to_path_buf();
        let out = repo.join("target/bench");
        let work = out.join("work");
        let state = out.join("state");
        let _ = fs::remove_dir_all(&work);
        let _ = fs::remove_dir_all(state.join("pods"));
        fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
        let host_ctl = std::env::var_os("KVMPOD_HOST_CTL")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo.join("target/release/host-ctl"));
        let agent = std::env::var_os("KVMPOD_AGENT")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo.join("target/x86_64-unknown-linux-musl/agent/kvmpod-agent"));
        for p in [&host_ctl, &agent] {
            if !p.is_file() {
                bail!(
                    "{} is not built: run `make build` (make bench does)",
                    p.display()
                );
            }
        }
        let rootfs = work.join("rootfs");
        let st = Command::new(repo.join("scripts/mkroot.sh"))
            .arg(&rootfs)
            .status()
            .context("running scripts/mkroot.sh")?;
        if !st.success() {
            bail!("scripts/mkroot.sh failed: run `make deps`");
        }
        Ok(Ctx {
            repo,
            out,
            work,
            state,
            host_ctl,
            agent,
            rootfs,
        })
    }

    /// host-ctl on the bench's own state directory, with the agent measured.
    pub fn host_ctl(&self) -> Command {
        let mut c = Command::new(&self.host_ctl);
        c.arg("--state-dir")
            .arg(&self.state)
            .env("KVMPOD_AGENT", &self.agent);
        c
    }

    /// `host-ctl <args>`, which must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> Result<String> {
        let out = self
            .host_ctl()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running host-ctl {}", args.join(" ")))?;
        if !out.status.success() {
            bail!(
                "host-ctl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Writes `m` as `<work>/<name>.json`; its path.
    pub fn write_manifest(&self, name: &str, m: &Value) -> Result<PathBuf> {
        let p = self.work.join(format!("{name}.json"));
        fs::write(&p, serde_json::to_vec_pretty(m)?)
            .with_context(|| format!("writing {}", p.display()))?;
        Ok(p)
    }

    /// A host directory for a volume, made under the work directory.
    pub fn host_dir(&self, name: &str) -> Result<PathBuf> {
        let d = self.work.join(name);
        fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        Ok(d)
    }

    /// The newest pod's directory.
    fn newest_pod(&self) -> Result<PathBuf> {
        host_ctl::pod::store::all_dirs(&self.state)?
            .pop()
            .map(|d| d.path)
            .ok_or_else(|| anyhow!("no pod was created"))
    }

    /// The host-ctl being measured.
    pub fn host_ctl_path(&self) -> &Path {
        &self.host_ctl
    }

    /// A pod's record (`state.json`): its timeline, endpoint and sizes.
    pub fn record(&self, pod_dir: &Path) -> Result<Value> {
        let path = pod_dir.join("state.json");
        let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
    }

    /// Runs a pod attached; its wall time, its record and its directory.
    pub fn run_attached(&self, manifest: &Path) -> Result<(f64, Value, PathBuf)> {
        self.run_attached_with(manifest, &[])
    }

    /// [`Ctx::run_attached`] with extra `host-ctl run` flags.
    pub fn run_attached_with(
        &self,
        manifest: &Path,
        extra: &[&str],
    ) -> Result<(f64, Value, PathBuf)> {
        let start = Instant::now();
        let out = self
            .host_ctl()
            .arg("run")
            .args(extra)
            .arg(manifest)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .with_context(|| format!("running host-ctl run {}", manifest.display()))?;
        let wall = start.elapsed().as_secs_f64();
        if !out.status.success() {
            bail!(
                "host-ctl run {} failed: {}",
                manifest.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let dir = self.newest_pod()?;
        Ok((wall, self.record(&dir)?, dir))
    }

    /// Starts a pod detached; its id. The caller stops it.
    pub fn run_detached(&self, manifest: &Path) -> Result<String> {
        Ok(self
            .ok(&["run", "--detach", path_str(manifest)?])?
            .trim()
            .to_string())
    }

    /// Stops a detached pod, best effort: the figures are already taken.
    pub fn stop(&self, id: &str) {
        let _ = self.ok(&["stop", "--timeout", "1", id]);
    }
}

/// A path as a host-ctl argument.
pub fn path_str(p: &Path) -> Result<&str> {
    p.to_str()
        .ok_or_else(|| anyhow!("{} is not UTF-8", p.display()))
}

/// Seconds of a named stamp in a record's timeline.
pub fn stamp(record: &Value, name: &str) -> Option<f64> {
    record["timeline"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["seconds"].as_f64())
}

/// Seconds of every stamp whose name starts with `prefix` (one per app).
pub fn stamps_with_prefix(record: &Value, prefix: &str) -> Vec<f64> {
    record["timeline"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|e| e["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
                .filter_map(|e| e["seconds"].as_f64())
                .collect()
        })
        .unwrap_or_default()
}
