//! containerd: `ctr run --rm` of one image under the kvmpod shim and under
//! runc (Debian's, containerd's default runtime), and `host-ctl run --rm`
//! of the same image, alternated in one run; the shim's overhead is the
//! first over the last (the VM's boot is in both).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use kvmpod_tests::containerd::{Containerd, Setup, RUNTIME};
use kvmpod_tests::images::write_test_image;

use crate::ctx::{path_str, runs, Ctx};
use crate::report::Report;
use crate::stats::Figure;

const IMAGE: &str = "docker.io/kvmpod/test:1";

pub fn run(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let shim = std::env::var_os("KVMPOD_SHIM")
        .map(PathBuf::from)
        .unwrap_or_else(|| ctx.repo.join("target/release/containerd-shim-kvmpod-v2"));
    if !shim.is_file() {
        bail!("{} is not built: run `make build`", shim.display());
    }
    let archive = ctx.work.join("shim-image.tar");
    write_test_image(&ctx.rootfs, &archive, "kvmpod/test:1");
    ctx.ok(&["image", "import", path_str(&archive)?])?;
    let containerd = Containerd::start_with(Setup {
        dir: ctx.work.join("containerd"),
        host_ctl: ctx.host_ctl_path(),
        agent: &ctx.agent,
        shim: &shim,
        state_dir: ctx.state.clone(),
        cri: None,
    });
    timed(containerd.command(&["images", "import", path_str(&archive)?]))?;

    let (mut kvmpod, mut runc, mut direct) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs() {
        let (k, r) = (format!("k{i}"), format!("r{i}"));
        let kvmpod_run = ["run", "--rm", "--runtime", RUNTIME, IMAGE, &k, "/bin/true"];
        kvmpod.push(timed(containerd.command(&kvmpod_run))?);
        runc.push(timed(containerd.command(&[
            "run",
            "--rm",
            IMAGE,
            &r,
            "/bin/true",
        ]))?);
        let mut host_ctl = ctx.host_ctl();
        host_ctl.args(["run", "--rm", "--entrypoint", "/bin/true", "kvmpod/test:1"]);
        direct.push(timed(host_ctl)?);
    }
    let k = Figure::of("`ctr run --rm` under kvmpod (a VM per task)", "s", &kvmpod);
    let d = Figure::of("`host-ctl run --rm` of the same image", "s", &direct);
    let ratio = k.median / d.median;
    report.add("containerd", k);
    report.add(
        "containerd",
        Figure::of("`ctr run --rm` under runc (no VM)", "s", &runc),
    );
    report.add("containerd", d);
    report.add(
        "containerd",
        Figure::of("shim overhead: ctr run vs host-ctl run", "×", &[ratio]).target(1.1, false),
    );
    Ok(())
}

/// Runs `cmd`, which must succeed; its wall time.
fn timed(mut cmd: Command) -> Result<f64> {
    let start = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(start.elapsed().as_secs_f64())
}
