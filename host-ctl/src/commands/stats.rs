//! `host-ctl stats <pod>`: each app's resource usage, from its cgroup in
//! the guest.

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
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&views)?);
        return Ok(0);
    }
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
    Ok(0)
}
