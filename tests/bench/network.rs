//! Pod networking: TCP throughput from the host into the guest (iperf3,
//! 3 s each), in one run, through
//! * a port published by the user-mode network (passt),
//! * the guest's address on a CNI bridge (tap mode),
//! * `host-ctl port-forward` (a vsock connection per TCP connection),
//! * and, as the vsock ceiling, a raw vsock stream from the agent.
//!
//! The runs are interleaved so that all see the same host.

use std::process::{Child, Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};
use kvmpod_tests::net::{add_host_program, free_port, CniNet};
use serde_json::{json, Value};

use crate::ctx::{path_str, runs, Ctx};
use crate::report::Report;
use crate::stats::Figure;

const SECTION: &str = "network";

pub fn run(ctx: &Ctx, report: &mut Report) -> Result<()> {
    // iperf3 and its libraries in a root of their own.
    let root = ctx.work.join("iperf-root");
    let st = Command::new(ctx.repo.join("scripts/mkroot.sh"))
        .arg(&root)
        .status()?;
    if !st.success() {
        bail!("scripts/mkroot.sh failed");
    }
    add_host_program(&root, "/usr/bin/iperf3");
    let manifest = ctx.write_manifest(
        "iperf",
        &json!({"apps": [{"name": "iperf", "rootfs": root,
                          "exec": ["/usr/bin/iperf3", "-s", "-p", "5201"]}]}),
    )?;
    let published = free_port();
    let user = ctx
        .ok(&[
            "run",
            "--detach",
            "-p",
            &format!("{published}:5201"),
            path_str(&manifest)?,
        ])?
        .trim()
        .to_string();
    let mut net = CniNet::new("kvmpodbench0", "10.231.0.0/24", &ctx.work.join("cni"));
    let (ns, tap_addr) = net.add("kvmpod-bench");
    let tap_net = format!("tap,netns={}", ns.display());
    let tap = ctx.ok(&["run", "--detach", "--net", &tap_net, path_str(&manifest)?]);
    let result = tap.and_then(|tap| {
        let tap = tap.trim().to_string();
        let r = measure(ctx, report, &user, published, &tap_addr);
        ctx.stop(&tap);
        r
    });
    ctx.stop(&user);
    drop(net);
    result
}

fn measure(
    ctx: &Ctx,
    report: &mut Report,
    user: &str,
    published: u16,
    tap_addr: &str,
) -> Result<()> {
    let forwarded = free_port();
    let mut fwd = port_forward(ctx, user, forwarded)?;
    let socket = hybrid_socket(ctx, user)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (mut p, mut t, mut f, mut raw) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let result = (|| -> Result<()> {
        for _ in 0..runs() {
            p.push(iperf("127.0.0.1", published)?);
            t.push(iperf(tap_addr, 5201)?);
            f.push(iperf("127.0.0.1", forwarded)?);
            raw.push(rt.block_on(crate::logs::raw_throughput(&socket))?);
        }
        Ok(())
    })();
    let _ = fwd.kill();
    let _ = fwd.wait();
    result?;
    let p = Figure::of(
        "TCP host → guest, published port (user mode, passt)",
        "MB/s",
        &p,
    );
    let t = Figure::of("TCP host → guest, CNI bridge (tap mode)", "MB/s", &t);
    let f = Figure::of("TCP host → guest, port-forward over vsock", "MB/s", &f);
    let raw = Figure::of("raw vsock stream from the agent (same run)", "MB/s", &raw);
    let ratio = p.median / f.median;
    for fig in [p, t, f, raw] {
        report.add(SECTION, fig);
    }
    report.add(
        SECTION,
        Figure::of("published port / port-forward (medians)", "×", &[ratio]),
    );
    Ok(())
}

/// `host-ctl port-forward POD PORT:5201`, running until killed.
fn port_forward(ctx: &Ctx, id: &str, port: u16) -> Result<Child> {
    let mut child = ctx
        .host_ctl()
        .args(["port-forward", id, &format!("{port}:5201")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting port-forward")?;
    // It prints its line once it listens.
    let mut out = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let mut byte = [0u8; 1];
    use std::io::Read;
    while out.read(&mut byte)? == 1 && byte[0] != b'\n' {}
    Ok(child)
}

/// The pod's hybrid vsock socket (the bench measures hybrid vsock).
fn hybrid_socket(ctx: &Ctx, id: &str) -> Result<std::path::PathBuf> {
    let rec = ctx.record(&ctx.state.join("pods").join(id))?;
    rec["endpoint"]["socket"]
        .as_str()
        .map(Into::into)
        .ok_or_else(|| anyhow!("pod {id} has no hybrid vsock socket: {rec}"))
}

/// 3 s of iperf3 from the host to `host:port`; the receiver's MB/s.
fn iperf(host: &str, port: u16) -> Result<f64> {
    let mut last = String::new();
    // The server may still be starting (or finishing the last test).
    for _ in 0..20 {
        let out = Command::new("iperf3")
            .args(["-c", host, "-p", &port.to_string(), "-t", "3", "-J"])
            .output()
            .context("running iperf3 (make deps installs it)")?;
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if let Some(bps) = v["end"]["sum_received"]["bits_per_second"].as_f64() {
            return Ok(bps / 8e6);
        }
        last = String::from_utf8_lossy(&out.stdout).into_owned();
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    bail!("iperf3 to {host}:{port} gave no result: {last}")
}
