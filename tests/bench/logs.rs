//! Figure 7, app output: how fast an app's stdout is persisted into its
//! log file by the pod's monitor over the log stream (vsock 1026, batches
//! and acknowledgements), against the transport's ceiling measured in the
//! same run: a raw vsock stream of the same size from the agent's SOURCE
//! service to the host (ratio target 0.8); a pipe inside the guest (dd |
//! dd), the first leg of an app's output; and the bytes the agent
//! dropped on the way (none, in the default blocking mode).
//!
//! Then whether `host-ctl logs -f` keeps up with that app ([`follow`]):
//! the same run persisted while `logs -f` follows it, timed from the
//! first persisted batch to `logs -f` having printed the last byte,
//! against the persist time of that run. The ratio of the two rates is
//! held to 0.8, so `logs -f` ends within a quarter of the run's time after
//! the monitor: a follower slower than the writer falls behind in
//! proportion to the run and misses it, while its 100 ms polling alone
//! costs a few percent at 64 MiB. The lag itself is reported beside it.
//!
//! The writer app writes 64 MiB of 128-byte text lines (a 1 MiB block in
//! the guest's memory, by one `cat`) and an end line, on each SIGUSR1:
//! no polling in the guest, and output that the log records keep as it is
//! (zeros would be escaped six-fold in the records' JSON). How a run's
//! persistence is timed is in [`persist`].

mod follow;
mod persist;

use std::path::Path;
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use host_ctl::agent::vsock::connect_hybrid;
use host_ctl::logs::LogFiles;
use host_ctl::pod::{PodDir, VmLaunch};
use kvmpod_api::layout::FORWARD_VSOCK_PORT;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::ctx::{runs, Ctx};
use crate::report::Report;
use crate::service::ServicePod;
use crate::stats::Figure;
use follow::{Expect, Follow};
use persist::Watch;

/// The app that writes, in the service pod.
pub const WRITER_APP: &str = "writer";

/// The writer's block, written [`BLOCKS`] times a run.
const BLOCK: u64 = 1 << 20;
const BLOCKS: u64 = 64;

/// Bytes moved by each throughput run (and the writer's, but its end
/// line).
const TOTAL: u64 = BLOCK * BLOCKS;

/// The start of the writer's end line, `<END> <run>`.
const END: &str = "kvmpod-bench end";

/// The writer app's script: makes its block, then writes it [`BLOCKS`]
/// times and an end line on every SIGUSR1 (sent to its process group: the
/// `sleep` ends and the shell runs the trap).
pub fn writer_script() -> String {
    let line = &"0123456789abcdef".repeat(8)[..127];
    format!(
        "yes {line} | head -c {BLOCK} > /tmp/bench-block; \
         set --; for n in $(seq {BLOCKS}); do set -- \"$@\" /tmp/bench-block; done; \
         i=0; trap 'i=$((i+1)); cat \"$@\"; echo \"{END} $i\"' USR1; \
         echo ready; while true; do sleep 1000000 & wait $!; done"
    )
}

/// The writer app as the bench drives it.
struct Writer<'a> {
    ctx: &'a Ctx,
    id: &'a str,
    files: LogFiles,
    /// Runs triggered so far.
    runs: u32,
}

impl<'a> Writer<'a> {
    fn new(ctx: &'a Ctx, id: &'a str) -> Result<Self> {
        let dir = PodDir::of(&ctx.state, id);
        let launch = VmLaunch::read(&dir).context("reading the service pod's launch record")?;
        Ok(Writer {
            ctx,
            id,
            files: dir.app_logs(WRITER_APP, launch.log_rotation.max_files),
            runs: 0,
        })
    }

    /// What the next run writes.
    fn next(&self) -> Expect {
        let last_line = format!("{END} {}\n", self.runs + 1).into_bytes();
        Expect {
            bytes: TOTAL + last_line.len() as u64,
            last_line,
        }
    }

    /// Starts the next run; its size.
    fn trigger(&mut self) -> Result<u64> {
        let bytes = self.next().bytes;
        self.ctx
            .ok(&["kill", self.id, WRITER_APP, "--signal", "USR1"])?;
        self.runs += 1;
        Ok(bytes)
    }

    /// Bytes of the writer's output the agent has dropped so far.
    fn dropped(&self) -> Result<u64> {
        let out = self.ctx.ok(&["status", self.id, "--format", "json"])?;
        let status: Value = serde_json::from_str(&out).context("parsing status --format json")?;
        let app = status["live"]["apps"]
            .as_array()
            .and_then(|a| a.iter().find(|a| a["name"] == WRITER_APP))
            .ok_or_else(|| anyhow!("status shows no running app {WRITER_APP}: {out}"))?;
        Ok(app["droppedBytes"].as_u64().unwrap_or(0))
    }
}

pub async fn measure(ctx: &Ctx, pod: &ServicePod, report: &mut Report) -> Result<()> {
    let mut writer = Writer::new(ctx, &pod.id)?;
    let (mut persisted, mut dropped, mut raw) = (Vec::new(), Vec::new(), Vec::new());
    // Interleaved, so that both see the same host.
    for _ in 0..runs() {
        let before = writer.dropped()?;
        let watch = Watch::start(&writer.files)?;
        let bytes = writer.trigger()?;
        persisted.push(watch.wait(bytes)?.mbps());
        dropped.push(writer.dropped()?.saturating_sub(before) as f64);
        raw.push(raw_throughput(&pod.socket).await?);
    }
    // The guest's own ceiling for moving bytes through a pipe, to show
    // where the log path's time goes.
    let mut pipe = Vec::new();
    for _ in 0..3 {
        pipe.push(guest_pipe_mbps(ctx, &pod.id)?);
    }
    let l = Figure::of(
        "app stdout → log file, persisted (64 MiB of text lines)",
        "MB/s",
        &persisted,
    );
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
    follow_figures(&mut writer, report)
}

/// `logs -f` following runs of the writer: the figures of [`follow`].
fn follow_figures(writer: &mut Writer<'_>, report: &mut Report) -> Result<()> {
    let (mut persist, mut follow, mut lag) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs() {
        let f = Follow::start(writer.ctx, writer.id, WRITER_APP, writer.next())?;
        let watch = Watch::start(&writer.files)?;
        let bytes = writer.trigger()?;
        let p = watch.wait(bytes)?;
        let printed = f.printed()?;
        persist.push(p.mbps());
        follow.push(p.bytes as f64 / 1e6 / (printed - p.first).as_secs_f64());
        lag.push(signed_secs(p.done, printed));
    }
    let p = Figure::of(
        "app stdout → log file while `logs -f` follows",
        "MB/s",
        &persist,
    );
    let f = Figure::of("`logs -f`: first persisted → all printed", "MB/s", &follow);
    let ratio = f.median / p.median;
    report.add("logs", p);
    report.add("logs", f);
    report.add(
        "logs",
        Figure::of("`logs -f` lag after the last byte persisted", "s", &lag),
    );
    report.add(
        "logs",
        Figure::of("ratio `logs -f` / persist (medians)", "×", &[ratio]).target(0.8, true),
    );
    Ok(())
}

/// `b - a` in seconds, negative when `b` came first (`logs -f` may see
/// the last record a poll before the bench does).
fn signed_secs(a: Instant, b: Instant) -> f64 {
    match b.checked_duration_since(a) {
        Some(d) => d.as_secs_f64(),
        None => -(a - b).as_secs_f64(),
    }
}

/// 64 MiB from the agent's SOURCE service: raw hybrid vsock throughput.
pub async fn raw_throughput(socket: &Path) -> Result<f64> {
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
