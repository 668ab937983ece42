//! Figure 7, log streaming: an app's stdout reaching the host through
//! attach, against raw vsock throughput from the same VM (the transport's
//! ceiling) and a pipe inside the guest (the first leg of an app's output),
//! and the bytes the agent's bounded buffer dropped on the way.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use host_ctl::agent::vsock::{connect, connect_hybrid, Endpoint};
use kvmpod_api::layout::{DEFAULT_VSOCK_PORT, FORWARD_VSOCK_PORT};
use kvmpod_api::protocol::agent_ttrpc::AgentClient;
use kvmpod_api::protocol::{attach_input, AttachInput};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::ctx::Ctx;
use crate::report::Report;
use crate::service::ServicePod;
use crate::stats::Figure;

/// The writer app's script: waits for `/trigger/go<i>`, then writes 64 MiB
/// to stdout, so each run is timed from a client already attached.
pub const WRITER: &str = "i=1; while true; do while [ ! -e /trigger/go$i ]; do sleep 0.05; done; \
                          head -c 67108864 /dev/zero; i=$((i+1)); done";

/// Bytes moved by each throughput run.
const TOTAL: u64 = 64 << 20;

pub async fn measure(ctx: &Ctx, pod: &ServicePod, report: &mut Report) -> Result<()> {
    let mut logs = Vec::new();
    let mut dropped = Vec::new();
    for run in 1..=3 {
        let (mbps, lost) = log_throughput(&pod.endpoint, &pod.trigger, run).await?;
        logs.push(mbps);
        dropped.push(lost as f64);
    }
    let mut raw = Vec::new();
    for _ in 0..3 {
        raw.push(raw_throughput(&pod.socket).await?);
    }
    // The guest's own ceiling for moving bytes through a pipe, to show
    // where the log path's time goes.
    let mut pipe = Vec::new();
    for _ in 0..3 {
        pipe.push(guest_pipe_mbps(ctx, &pod.id)?);
    }
    let l = Figure::of("app stdout → host (64 MiB via attach)", "MB/s", &logs);
    let w = Figure::of("raw vsock throughput (64 MiB, same VM)", "MB/s", &raw);
    let ratio = l.median / w.median;
    report.add("logs", l);
    report.add(
        "logs",
        Figure::of(
            "bytes dropped by the agent's bounded buffer",
            "bytes",
            &dropped,
        ),
    );
    report.add("logs", w);
    report.add(
        "logs",
        Figure::of("in-guest pipe, no vsock (dd | dd, 64 MiB)", "MB/s", &pipe),
    );
    report.add(
        "logs",
        Figure::of("ratio logs / raw vsock (medians)", "×", &[ratio]).target(0.8, true),
    );
    Ok(())
}

/// Attaches to the writer, triggers its `run`th 64 MiB, and times them
/// from the first chunk; MB/s and the bytes dropped.
async fn log_throughput(endpoint: &Endpoint, trigger: &Path, run: u32) -> Result<(f64, u64)> {
    let client = AgentClient::new(ttrpc::r#async::Client::new(
        connect(endpoint, DEFAULT_VSOCK_PORT).await?,
    ));
    let stream = client
        .attach(ttrpc::context::with_timeout(0))
        .await
        .map_err(|e| anyhow!("attach: {e}"))?;
    let (tx, mut rx) = stream.split();
    let mut first = AttachInput::new();
    first.kind = Some(attach_input::Kind::App("writer".into()));
    tx.send(&first).await.map_err(|e| anyhow!("attach: {e}"))?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let go = trigger.join(format!("go{run}"));
    fs::write(&go, b"").with_context(|| format!("writing {}", go.display()))?;
    let mut got = 0u64;
    let mut lost = 0u64;
    let mut start = None;
    let deadline = Instant::now() + Duration::from_secs(300);
    while got + lost < TOTAL {
        let chunk = tokio::time::timeout_at(deadline.into(), rx.recv())
            .await
            .map_err(|_| anyhow!("the writer's output did not all arrive"))?
            .map_err(|e| anyhow!("attach: {e}"))?;
        start.get_or_insert_with(Instant::now);
        got += chunk.data.len() as u64;
        lost += chunk.dropped;
    }
    let secs = start.map_or(f64::NAN, |s| s.elapsed().as_secs_f64());
    Ok((got as f64 / 1e6 / secs, lost))
}

/// 64 MiB from the agent's SOURCE service: raw hybrid vsock throughput.
async fn raw_throughput(socket: &Path) -> Result<f64> {
    let mut s = connect_hybrid(socket, FORWARD_VSOCK_PORT).await?;
    s.write_all(format!("SOURCE {TOTAL}\n").as_bytes()).await?;
    let mut ok = [0u8; 3];
    s.read_exact(&mut ok).await?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0u64;
    let start = Instant::now();
    while got < TOTAL {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    Ok(got as f64 / 1e6 / start.elapsed().as_secs_f64())
}

/// 64 MiB from /dev/zero through a pipe inside the guest, timed by busybox
/// `time` (to 10 ms).
fn guest_pipe_mbps(ctx: &Ctx, id: &str) -> Result<f64> {
    let out = ctx.ok(&[
        "exec",
        id,
        "idle",
        "--",
        "/bin/sh",
        "-c",
        "time sh -c 'dd if=/dev/zero bs=16384 count=4096 | dd of=/dev/null bs=16384' 2>&1",
    ])?;
    // "real\t0m 1.23s"
    let secs: f64 = out
        .lines()
        .find_map(|l| l.strip_prefix("real"))
        .and_then(|t| {
            let (m, s) = t.trim().split_once('m')?;
            Some(m.parse::<f64>().ok()? * 60.0 + s.trim().strip_suffix('s')?.parse::<f64>().ok()?)
        })
        .ok_or_else(|| anyhow!("no time in the report: {out:?}"))?;
    Ok((TOTAL as f64) / 1e6 / secs)
}
