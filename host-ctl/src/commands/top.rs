//! `host-ctl top <pod> [app]`: the processes running in the pod's apps, as
//! `podman top` lists a container's, read from the guest's /proc by the
//! agent. Guest PIDs; a user is its uid, since the app's /etc/passwd is
//! not read.

use std::path::Path;

use anyhow::{bail, Context, Result};
use kvmpod_api::protocol::ProcessInfo;
use serde::Serialize;

use super::Format;
use crate::agent;
use crate::pod::record::State;
use crate::pod::StoredPod;
use crate::ui::table;

/// A process as JSON: one field per column of the table, named as the
/// column is, the figures in their units (`elapsed` and `time` in
/// milliseconds, `rss` in KiB).
#[derive(Serialize)]
#[serde(rename_all = "lowercase")]
struct ProcessView {
    app: String,
    pid: i32,
    ppid: i32,
    /// The effective uid.
    user: u32,
    state: String,
    elapsed: u64,
    time: u64,
    rss: u64,
    command: String,
}

impl From<ProcessInfo> for ProcessView {
    fn from(p: ProcessInfo) -> Self {
        ProcessView {
            app: p.app,
            pid: p.pid,
            ppid: p.ppid,
            user: p.uid,
            state: p.state,
            elapsed: p.elapsed_ms,
            time: p.cpu_ms,
            rss: p.rss_kib,
            command: p.command,
        }
    }
}

const HEADER: [&str; 9] = [
    "APP", "PID", "PPID", "USER", "STATE", "ELAPSED", "TIME", "RSS", "COMMAND",
];

pub async fn run(state_dir: &Path, id: &str, app: Option<&str>, format: Format) -> Result<i32> {
    let pod = StoredPod::open(state_dir, id)?;
    if pod.record.state != State::Running {
        bail!(
            "pod {} is not running ({})",
            pod.record.id,
            pod.record.describe_state()
        );
    }
    let client = pod.client().await?;
    let views: Vec<ProcessView> = agent::processes(&client, app)
        .await
        .with_context(|| format!("listing pod {}'s processes", pod.record.id))?
        .into_iter()
        .map(ProcessView::from)
        .collect();
    if !format.print_list(&views)? {
        table::print(&HEADER, &rows(&views));
    }
    Ok(0)
}

fn rows(views: &[ProcessView]) -> Vec<Vec<String>> {
    views
        .iter()
        .map(|v| {
            vec![
                v.app.clone(),
                v.pid.to_string(),
                v.ppid.to_string(),
                v.user.to_string(),
                v.state.clone(),
                table::clock(v.elapsed),
                format!("{:.2}s", v.time as f64 / 1000.0),
                table::bytes(v.rss.saturating_mul(1024)),
                v.command.clone(),
            ]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_fields_are_the_table_columns() {
        let view = ProcessView::from(ProcessInfo {
            app: "web".into(),
            pid: 7,
            ppid: 1,
            uid: 1000,
            state: "S".into(),
            elapsed_ms: 64_000,
            cpu_ms: 1_250,
            rss_kib: 1536,
            command: "sleep 1000".into(),
            ..Default::default()
        });
        let json = serde_json::to_value(&view).unwrap();
        let mut fields: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut columns: Vec<String> = HEADER.iter().map(|h| h.to_lowercase()).collect();
        fields.sort_unstable();
        columns.sort_unstable();
        assert_eq!(fields, columns);
        assert_eq!(
            rows(&[view]),
            [[
                "web",
                "7",
                "1",
                "1000",
                "S",
                "01:04",
                "1.25s",
                "1.5MiB",
                "sleep 1000"
            ]]
        );
    }
}
