//! `host-ctl stats <pod>`: each app's resource usage, from its cgroup in
//! the guest, and the pod's network interfaces' counters.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Result};
use kvmpod_api::protocol::StatsRequest;
use serde::Serialize;

use super::Format;
use crate::agent;
use crate::pod::StoredPod;
use crate::ui::table;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AppStatsView {
    app: String,
    memory_current: u64,
    memory_peak: u64,
    /// null: no limit.
    memory_max: Option<u64>,
    cpu_usage_usec: u64,
    pids_current: u64,
    oom_kills: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InterfaceView {
    interface: String,
    rx_bytes: u64,
    rx_packets: u64,
    rx_dropped: u64,
    tx_bytes: u64,
    tx_packets: u64,
    tx_dropped: u64,
}

#[derive(Serialize)]
struct StatsView {
    apps: Vec<AppStatsView>,
    interfaces: Vec<InterfaceView>,
}

pub async fn run(state_dir: &Path, id: &str, format: Format) -> Result<i32> {
    let pod = StoredPod::open(state_dir, id)?;
    let client = pod.client().await?;
    let st = client
        .stats(
            agent::deadline(Duration::from_secs(10)),
            &StatsRequest::new(),
        )
        .await
        .map_err(|e| anyhow!("asking for statistics: {e}"))?;
    let views: Vec<AppStatsView> = st
        .apps
        .iter()
        .map(|a| AppStatsView {
            app: a.app.clone(),
            memory_current: a.memory_current,
            memory_peak: a.memory_peak,
            memory_max: (a.memory_max > 0).then_some(a.memory_max),
            cpu_usage_usec: a.cpu_usage_usec,
            pids_current: a.pids_current,
            oom_kills: a.oom_kills,
        })
        .collect();
    let interfaces: Vec<InterfaceView> = st
        .interfaces
        .iter()
        .map(|i| InterfaceView {
            interface: i.interface.clone(),
            rx_bytes: i.rx_bytes,
            rx_packets: i.rx_packets,
            rx_dropped: i.rx_dropped,
            tx_bytes: i.tx_bytes,
            tx_packets: i.tx_packets,
            tx_dropped: i.tx_dropped,
        })
        .collect();
    let view = StatsView {
        apps: views,
        interfaces,
    };
    // A template line per app.
    if format.print_rows(&view, &view.apps)? {
        return Ok(0);
    }
    let StatsView {
        apps: views,
        interfaces,
    } = view;
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|v| {
            vec![
                v.app.clone(),
                table::bytes(v.memory_current),
                table::bytes(v.memory_peak),
                v.memory_max.map_or("-".into(), table::bytes),
                format!("{:.3}s", v.cpu_usage_usec as f64 / 1e6),
                v.pids_current.to_string(),
                v.oom_kills.to_string(),
            ]
        })
        .collect();
    table::print(
        &["APP", "MEMORY", "PEAK", "LIMIT", "CPU", "PIDS", "OOM-KILLS"],
        &rows,
    );
    print_interfaces(&interfaces);
    Ok(0)
}

/// The interfaces' table (none for a pod without a network).
fn print_interfaces(interfaces: &[InterfaceView]) {
    if interfaces.is_empty() {
        return;
    }
    println!();
    let rows: Vec<Vec<String>> = interfaces
        .iter()
        .map(|i| {
            vec![
                i.interface.clone(),
                table::bytes(i.rx_bytes),
                i.rx_packets.to_string(),
                table::bytes(i.tx_bytes),
                i.tx_packets.to_string(),
                (i.rx_dropped + i.tx_dropped).to_string(),
            ]
        })
        .collect();
    table::print(
        &[
            "INTERFACE",
            "RX",
            "RX-PACKETS",
            "TX",
            "TX-PACKETS",
            "DROPPED",
        ],
        &rows,
    );
}
