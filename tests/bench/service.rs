//! Figures 4–7 share one running pod, booted once: an `idle` app to exec
//! into and a `writer` app that writes 64 MiB to stdout each time it gets
//! SIGUSR1. The sections measure it in turn: RPC round trips, exec, the
//! agent's memory, log throughput and `logs -f`, then 100 concurrent
//! execs (last, so that neither they nor the logs grow the idle memory
//! measured before), each against what the same VM does without kvmpod's
//! protocol where there is such a ceiling.

use std::path::PathBuf;

use anyhow::{bail, Result};
use host_ctl::agent::vsock::Endpoint;
use serde_json::json;

use crate::ctx::Ctx;
use crate::report::Report;
use crate::{exec, logs, memory, rpc};

/// The running service pod, as the sections reach it.
pub struct ServicePod {
    pub id: String,
    /// The agent's vsock endpoint, for RPCs.
    pub endpoint: Endpoint,
    /// vhost-device-vsock's Unix socket, for raw vsock streams.
    pub socket: PathBuf,
}

/// Boots the service pod, measures it and stops it, even when a
/// measurement fails.
pub fn run(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        // The writer no longer reads the host volume (SIGUSR1 triggers
        // it); it stays mounted so the pod the other figures measure is
        // the one they always measured.
        let volume = ctx.host_dir("trigger")?;
        let manifest = ctx.write_manifest(
            "service",
            &json!({
                "volumes": [{"name": "trigger", "kind": "host", "source": volume}],
                "apps": [
                    {"name": "idle", "rootfs": ctx.rootfs, "exec": ["/bin/sh", "-c", "exec sleep 1000000"]},
                    {"name": logs::WRITER_APP, "rootfs": ctx.rootfs, "exec": ["/bin/sh", "-c", logs::writer_script()],
                     "mountPoints": [{"volume": "trigger", "path": "/trigger", "readOnly": true}]}
                ]
            }),
        )?;
        let id = ctx.run_detached(&manifest)?;
        let result = measure(ctx, report, id.clone()).await;
        ctx.stop(&id);
        result
    })
}

/// The sections, in the order they are reported.
async fn measure(ctx: &Ctx, report: &mut Report, id: String) -> Result<()> {
    let rec = ctx.record(&ctx.state.join("pods").join(&id))?;
    let endpoint: Endpoint = serde_json::from_value(rec["endpoint"].clone())?;
    let Endpoint::Hybrid { socket, .. } = &endpoint else {
        bail!("the bench measures hybrid vsock");
    };
    let pod = ServicePod {
        id,
        socket: socket.clone(),
        endpoint,
    };
    let _status_client = rpc::measure(&pod, report).await?;
    exec::measure(ctx, &pod, report)?;
    memory::idle(ctx, &pod, report)?;
    logs::measure(ctx, &pod, report).await?;
    exec::concurrent(ctx, &pod, report)
}
