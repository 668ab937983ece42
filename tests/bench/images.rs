//! Images: a pod of an image with a 512 MiB root started beside the
//! busybox-root pod (the root is shared, never copied, so its size should
//! not show), an import of a 200 MiB image beside `tar -x` of the same
//! layers, and what a second pod of an image adds on disk.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use kvmpod_tests::images::docker_dir_from_roots;
use serde_json::json;

use crate::ctx::{path_str, runs, Ctx};
use crate::report::Report;
use crate::stats::Figure;

pub fn run(ctx: &Ctx, report: &mut Report) -> Result<()> {
    start_with_a_big_root(ctx, report)?;
    root_reads(ctx, report)?;
    import_speed(ctx, report)?;
    second_pod_on_disk(ctx, report)
}

/// A layer directory of `files` files of 1 MiB of pseudo-random bytes (so
/// nothing is sparse or compresses away).
fn data_layer(dir: &Path, files: usize) -> Result<()> {
    fs::create_dir_all(dir.join("data"))?;
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut block = vec![0u8; 1 << 20];
    for i in 0..files {
        for chunk in block.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
        let mut f = fs::File::create(dir.join(format!("data/{i:04}")))?;
        f.write_all(&block)?;
    }
    Ok(())
}

/// Imports the docker-archive directory `dir`; the wall time.
fn import(ctx: &Ctx, dir: &Path) -> Result<f64> {
    let start = Instant::now();
    ctx.ok(&["image", "import", path_str(dir)?])?;
    Ok(start.elapsed().as_secs_f64())
}

/// `host-ctl run` of an image whose root is 512 MiB against the busybox
/// root pod, both running `true`, alternated.
fn start_with_a_big_root(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let big = ctx.work.join("image-512");
    data_layer(&big, 512)?;
    let archive = ctx.work.join("image-512.archive");
    docker_dir_from_roots(
        &archive,
        &[&ctx.rootfs, &big],
        json!({"Cmd": ["/bin/true"]}),
        "kvmpod/bench-512:1",
    );
    import(ctx, &archive)?;
    let small = ctx.write_manifest(
        "busybox-true",
        &json!({"apps": [{"name": "a", "rootfs": ctx.rootfs, "exec": ["/bin/true"]}]}),
    )?;
    let image = PathBuf::from("kvmpod/bench-512:1");
    let (mut with_image, mut with_dir) = (Vec::new(), Vec::new());
    for _ in 0..runs() {
        with_dir.push(run_rm(ctx, &small)?);
        with_image.push(run_rm(ctx, &image)?);
    }
    let a = Figure::of("busybox-root pod, `host-ctl run` wall", "s", &with_dir);
    let b = Figure::of("512 MiB image pod, `host-ctl run` wall", "s", &with_image);
    let ratio = b.median / a.median;
    report.add("images", a);
    report.add("images", b);
    report.add(
        "images",
        Figure::of("512 MiB image pod vs busybox-root pod", "×", &[ratio]).target(1.1, false),
    );
    Ok(())
}

/// Reading 64 MiB of an image's root in the guest, twice: the first read
/// comes over 9p from the host's page cache, the second from the guest's
/// (the share is mounted `cache=loose`: image layers never change).
fn root_reads(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let script = "time cat /data/0000 /data/0001 /data/0002 /data/0003 /data/0004 /data/0005 \
                  /data/0006 /data/0007 /data/0008 /data/0009 /data/0010 /data/0011 /data/0012 \
                  /data/0013 /data/0014 /data/0015 /data/0016 /data/0017 /data/0018 /data/0019 \
                  /data/002? /data/003? /data/004? /data/005? /data/006[0-3] >/dev/null";
    let (mut first, mut second) = (Vec::new(), Vec::new());
    for _ in 0..3.min(runs()) {
        let out = ctx
            .host_ctl()
            .args(["run", "--rm", "kvmpod/bench-512:1", "/bin/sh", "-c"])
            .arg(format!("{script}; {script}"))
            .stdin(std::process::Stdio::null())
            .output()
            .context("running the read pod")?;
        let text = String::from_utf8_lossy(&out.stderr);
        let times: Vec<f64> = text
            .lines()
            .filter_map(|l| l.strip_prefix("real"))
            .filter_map(|t| busybox_seconds(t.trim()))
            .collect();
        if times.len() != 2 {
            bail!("the read pod printed no times: {text}");
        }
        first.push(64.0 / times[0]);
        second.push(64.0 / times[1]);
    }
    report.add(
        "images",
        Figure::of(
            "64 MiB of an image root read in the guest, first read (9p)",
            "MiB/s",
            &first,
        ),
    );
    report.add(
        "images",
        Figure::of("the same, read again (guest page cache)", "MiB/s", &second),
    );
    Ok(())
}

/// busybox `time`'s "0m 0.19s".
fn busybox_seconds(t: &str) -> Option<f64> {
    let (m, s) = t.split_once('m')?;
    let secs: f64 = s.trim().trim_end_matches('s').parse().ok()?;
    Some(m.trim().parse::<f64>().ok()? * 60.0 + secs.max(0.001))
}

/// `host-ctl run --rm <image>`; its wall time.
fn run_rm(ctx: &Ctx, image: &Path) -> Result<f64> {
    let start = Instant::now();
    ctx.ok(&["run", "--rm", path_str(image)?])?;
    Ok(start.elapsed().as_secs_f64())
}

/// Importing a 200 MiB image against `tar -x` of the same layer tars into
/// a fresh directory, both made durable (the store flushes its file system
/// before an image enters its index; tar is followed by `sync -f`). The
/// store also hashes every layer.
fn import_speed(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let data = ctx.work.join("image-200");
    data_layer(&data, 200)?;
    let mut imports = Vec::new();
    let mut untars = Vec::new();
    for i in 0..runs() {
        // A new base each time, so nothing is already in the store.
        let marker = ctx.work.join(format!("image-200-base-{i}"));
        fs::create_dir_all(&marker)?;
        fs::write(marker.join("run"), i.to_string())?;
        let archive = ctx.work.join(format!("image-200-{i}.archive"));
        docker_dir_from_roots(
            &archive,
            &[&marker, &data],
            json!({}),
            &format!("kvmpod/bench-200:{i}"),
        );
        let out = ctx.work.join(format!("untar-{i}"));
        fs::create_dir_all(&out)?;
        // Alternately first: the first after a round of deletions pays
        // for ext4's reuse checks of recently deleted inodes.
        if i % 2 == 0 {
            imports.push(timed_import(ctx, &archive)?);
            untars.push(untar(&archive, &out)?);
        } else {
            untars.push(untar(&archive, &out)?);
            imports.push(timed_import(ctx, &archive)?);
        }
        ctx.ok(&["image", "rm", &format!("kvmpod/bench-200:{i}")])?;
        let _ = fs::remove_dir_all(&out);
        let _ = fs::remove_dir_all(&archive);
    }
    let mib = 200.0;
    let i = Figure::of(
        "200 MiB image: `host-ctl image import` rate",
        "MiB/s",
        &rates(mib, &imports),
    );
    let t = Figure::of(
        "the same layers: `tar -x; sync -f` rate",
        "MiB/s",
        &rates(mib, &untars),
    );
    let ratio = i.median / t.median;
    report.add("images", i);
    report.add("images", t);
    report.add(
        "images",
        Figure::of("image import vs tar -x; sync", "×", &[ratio]).target(0.8, true),
    );
    Ok(())
}

/// A synced start, then the import; its seconds.
fn timed_import(ctx: &Ctx, archive: &Path) -> Result<f64> {
    sync();
    import(ctx, archive)
}

/// A synced start, then `tar -x` of the archive's layers into `out` and
/// `sync -f`; its seconds.
fn untar(archive: &Path, out: &Path) -> Result<f64> {
    sync();
    let start = Instant::now();
    for layer in ["layer0.tar", "layer1.tar"] {
        let st = Command::new("tar")
            .arg("-xf")
            .arg(archive.join(layer))
            .arg("-C")
            .arg(out)
            .status()
            .context("running tar -x")?;
        if !st.success() {
            bail!("tar -x of {layer} failed");
        }
    }
    let st = Command::new("sync").arg("-f").arg(out).status()?;
    if !st.success() {
        bail!("sync -f {} failed", out.display());
    }
    Ok(start.elapsed().as_secs_f64())
}

fn rates(mib: f64, secs: &[f64]) -> Vec<f64> {
    secs.iter().map(|s| mib / s).collect()
}

fn sync() {
    let _ = Command::new("sync").status();
}

/// Bytes a second running pod of the 512 MiB image adds: its directory
/// (not what is mounted in it) and any growth of the image store.
fn second_pod_on_disk(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let first = ctx
        .ok(&["run", "-d", "kvmpod/bench-512:1", "/bin/sleep", "600"])?
        .trim()
        .to_string();
    let store_before = bytes_under(&ctx.state.join("images"));
    let second = ctx
        .ok(&["run", "-d", "kvmpod/bench-512:1", "/bin/sleep", "600"])?
        .trim()
        .to_string();
    let pod = bytes_under(&ctx.state.join("pods").join(&second));
    let store_after = bytes_under(&ctx.state.join("images"));
    ctx.stop(&first);
    ctx.stop(&second);
    let _ = ctx.ok(&["rm", &first, &second]);
    let added = (pod + store_after.saturating_sub(store_before)) as f64 / 1024.0;
    report.add(
        "images",
        Figure::of(
            "a second running pod of the 512 MiB image: disk added",
            "KiB",
            &[added],
        )
        .target(1024.0, false),
    );
    Ok(())
}

/// Bytes allocated under `dir`, leaving out a pod's `roots/` (bind mounts
/// of the image's layers, not copies).
fn bytes_under(dir: &Path) -> u64 {
    let out = Command::new("du")
        .args(["-s", "-x", "-B1", "--exclude=roots"])
        .arg(dir)
        .output();
    out.ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}
