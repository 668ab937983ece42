//! Figure 4, RPC: a ttrpc round trip against a one-byte echo over a raw
//! vsock stream to the same VM. The echo is the transport's floor. The
//! ratio held to its target uses `Ping`, which does no work, so it is what
//! the RPC layer adds; `Status` (which builds the pod's whole state) is
//! shown beside it.

use std::time::Instant;

use anyhow::{anyhow, Result};
use host_ctl::agent::vsock::{connect, connect_hybrid};
use kvmpod_api::layout::{DEFAULT_VSOCK_PORT, FORWARD_VSOCK_PORT};
use kvmpod_api::protocol::agent_ttrpc::AgentClient;
use kvmpod_api::protocol::StatusRequest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::report::Report;
use crate::service::ServicePod;
use crate::stats::Figure;

/// Round trips timed; the first [`WARMUP`] of them are not counted.
const ROUND_TRIPS: usize = 1020;
const WARMUP: usize = 20;

/// Measures and reports both; the status call's client, which the caller
/// keeps open: the figures after this one have always been measured with
/// that connection to the agent open.
pub async fn measure(pod: &ServicePod, report: &mut Report) -> Result<AgentClient> {
    let (client, rpc) = status_round_trips(pod).await?;
    let ping = ping_round_trips(&client).await?;
    let echo = echo_round_trips(pod).await?;
    let r = Figure::of("ttrpc status round trip over vsock", "µs", &rpc);
    let p = Figure::of("ttrpc ping round trip over vsock", "µs", &ping);
    let e = Figure::of("raw vsock echo round trip (same VM)", "µs", &echo);
    let ratio = p.median / e.median;
    let status_ratio = r.median / e.median;
    report.add("rpc", r);
    report.add("rpc", p);
    report.add("rpc", e);
    report.add(
        "rpc",
        Figure::of("ratio ttrpc / raw echo (medians)", "×", &[ratio]).target(1.2, false),
    );
    report.add(
        "rpc",
        Figure::of(
            "ratio ttrpc status / raw echo (medians)",
            "×",
            &[status_ratio],
        ),
    );
    Ok(client)
}

/// ttrpc status round trips on one connection, in µs; and the client.
async fn status_round_trips(pod: &ServicePod) -> Result<(AgentClient, Vec<f64>)> {
    let client = AgentClient::new(ttrpc::r#async::Client::new(
        connect(&pod.endpoint, DEFAULT_VSOCK_PORT).await?,
    ));
    let mut rpc = Vec::new();
    for i in 0..ROUND_TRIPS {
        let t = Instant::now();
        client
            .status(
                ttrpc::context::with_timeout(10_000_000_000),
                &StatusRequest::new(),
            )
            .await
            .map_err(|e| anyhow!("status: {e}"))?;
        if i >= WARMUP {
            rpc.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    Ok((client, rpc))
}

/// ttrpc ping round trips on the same connection, in µs.
async fn ping_round_trips(client: &AgentClient) -> Result<Vec<f64>> {
    let mut ping = Vec::new();
    for i in 0..ROUND_TRIPS {
        let t = Instant::now();
        client
            .ping(
                ttrpc::context::with_timeout(10_000_000_000),
                &kvmpod_api::protocol::PingRequest::new(),
            )
            .await
            .map_err(|e| anyhow!("ping: {e}"))?;
        if i >= WARMUP {
            ping.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    Ok(ping)
}

/// One byte echoed by the agent on its forwarding port, in µs per round
/// trip.
async fn echo_round_trips(pod: &ServicePod) -> Result<Vec<f64>> {
    let mut echo_stream = connect_hybrid(&pod.socket, FORWARD_VSOCK_PORT).await?;
    echo_stream.write_all(b"ECHO\n").await?;
    let mut ok = [0u8; 3];
    echo_stream.read_exact(&mut ok).await?;
    let mut echo = Vec::new();
    for i in 0..ROUND_TRIPS {
        let t = Instant::now();
        echo_stream.write_all(b"x").await?;
        let mut b = [0u8; 1];
        echo_stream.read_exact(&mut b).await?;
        if i >= WARMUP {
            echo.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    Ok(echo)
}
