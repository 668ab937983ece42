//! `host-ctl events <pod>`: the pod's events as they happen (apps started,
//! exited, failed, OOM-killed; the pod stopping and exited, with its
//! network interfaces' counters).

use std::path::Path;

use anyhow::{anyhow, Result};
use kvmpod_api::protocol::EventsRequest;
use serde::Serialize;

use super::Format;
use crate::agent;
use crate::pod::StoredPod;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EventView<'a> {
    seq: u64,
    /// Seconds after the guest kernel started.
    seconds: f64,
    kind: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    app: &'a str,
    exit_code: i32,
    signal: i32,
    #[serde(skip_serializing_if = "str::is_empty")]
    message: &'a str,
    /// Interface counters (pod-stopping and pod-exited).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    interfaces: Vec<Counters<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Counters<'a> {
    interface: &'a str,
    rx_bytes: u64,
    rx_packets: u64,
    tx_bytes: u64,
    tx_packets: u64,
}

pub async fn run(state_dir: &Path, id: &str, follow: bool, format: Format) -> Result<i32> {
    let pod = StoredPod::open(state_dir, id)?;
    let client = pod.client().await?;
    let mut req = EventsRequest::new();
    req.follow = follow;
    let mut rx = client
        .events(agent::no_deadline(), &req)
        .await
        .map_err(|e| anyhow!("asking for events: {e}"))?;
    loop {
        let e = match rx.recv().await {
            Ok(Some(e)) => e,
            Ok(None) => return Ok(0),
            // The VM powered off: the stream is over.
            Err(_) => return Ok(0),
        };
        let view = EventView {
            seq: e.seq,
            seconds: e.boottime_ns as f64 / 1e9,
            kind: e.kind.enum_value_or_default().name(),
            app: &e.app,
            exit_code: e.exit_code,
            signal: e.signal,
            message: &e.message,
            interfaces: e
                .interfaces
                .iter()
                .map(|i| Counters {
                    interface: &i.interface,
                    rx_bytes: i.rx_bytes,
                    rx_packets: i.rx_packets,
                    tx_bytes: i.tx_bytes,
                    tx_packets: i.tx_packets,
                })
                .collect(),
        };
        if !format.print_streamed(&view)? {
            let mut line = format!("{:>9.3}s  {:<15} {}", view.seconds, view.kind, view.app);
            if e.kind.enum_value_or_default().ends_app() {
                line.push_str(&format!(" status {}", view.exit_code));
            }
            if !view.message.is_empty() {
                line.push_str(&format!("  {}", view.message));
            }
            for i in &view.interfaces {
                line.push_str(&format!(
                    "  {}: rx {} B/{} packets, tx {} B/{} packets",
                    i.interface, i.rx_bytes, i.rx_packets, i.tx_bytes, i.tx_packets
                ));
            }
            println!("{}", line.trim_end());
        }
    }
}
