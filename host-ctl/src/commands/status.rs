//! `host-ctl status <pod>`: the pod's state, its apps' state, pid and exit
//! status, and the boot timeline. A running pod's agent is asked directly.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use kvmpod_api::protocol::{PodStatus, StatusRequest};
use serde::Serialize;

use super::Format;
use crate::agent_client;
use crate::pods::Pod;
use crate::record::{PodRecord, State};
use crate::table;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AppView {
    name: String,
    state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pid: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signal: Option<i32>,
    #[serde(skip_serializing_if = "String::is_empty")]
    error: String,
    /// Seconds after the guest kernel started.
    #[serde(skip_serializing_if = "Option::is_none")]
    started: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exited: Option<f64>,
    restarts: u32,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TimelineView {
    name: String,
    seconds: f64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusView {
    #[serde(flatten)]
    record: PodRecord,
    #[serde(skip_serializing_if = "Option::is_none")]
    live: Option<LiveView>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LiveView {
    pod_state: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    error: String,
    apps: Vec<AppView>,
    timeline: Vec<TimelineView>,
}

fn secs(ns: u64) -> Option<f64> {
    (ns > 0).then(|| ns as f64 / 1e9)
}

fn live_view(st: &PodStatus) -> LiveView {
    LiveView {
        pod_state: st.state.enum_value_or_default().name().into(),
        error: st.error.clone(),
        apps: st
            .apps
            .iter()
            .map(|a| {
                let state = a.state.enum_value_or_default();
                let done = state.is_done();
                AppView {
                    name: a.name.clone(),
                    state: state.name().into(),
                    pid: (a.pid > 0).then_some(a.pid),
                    exit_code: done.then_some(a.exit_code),
                    signal: (a.signal > 0).then_some(a.signal),
                    error: a.error.clone(),
                    started: secs(a.started_ns),
                    exited: secs(a.exited_ns),
                    restarts: a.restarts,
                }
            })
            .collect(),
        timeline: st
            .timeline
            .iter()
            .map(|e| TimelineView {
                name: e.name.clone(),
                seconds: e.boottime_ns as f64 / 1e9,
            })
            .collect(),
    }
}

pub async fn run(state_dir: &Path, id: &str, format: Format) -> Result<i32> {
    let pod = Pod::open(state_dir, id)?;
    let live = if pod.record.state == State::Running {
        let client = pod.client().await?;
        let st = client
            .status(
                agent_client::deadline(Duration::from_secs(10)),
                &StatusRequest::new(),
            )
            .await
            .map_err(|e| {
                anyhow::anyhow!("asking pod {}'s agent for its status: {e}", pod.record.id)
            })?;
        Some(live_view(&st))
    } else {
        None
    };
    let view = StatusView {
        record: pod.record,
        live,
    };
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&view)?);
        return Ok(0);
    }
    let r = &view.record;
    println!("pod:      {}", r.id);
    println!(
        "state:    {}{}",
        view.live
            .as_ref()
            .map(|l| l.pod_state.as_str())
            .unwrap_or(r.state.as_str()),
        if r.detached { " (detached)" } else { "" }
    );
    println!("created:  {}", r.created);
    if let Some(s) = &r.started {
        println!("started:  {s}");
    }
    if let Some(f) = &r.finished {
        println!("finished: {f}");
    }
    if let Some(reason) = &r.exit_reason {
        println!("ended:    {reason}");
    }
    if let Some(a) = &r.accel {
        println!("accel:    {a}");
    }
    match &r.endpoint {
        Some(crate::vsock::Endpoint::Hybrid { socket, .. }) => {
            println!(
                "vsock:    CID {}, hybrid through {}",
                r.endpoint.as_ref().map_or(0, |e| e.cid()),
                socket.display()
            )
        }
        Some(crate::vsock::Endpoint::Vhost { cid }) => println!("vsock:    CID {cid}, AF_VSOCK"),
        None => {}
    }
    println!();
    let rows: Vec<Vec<String>> = match &view.live {
        Some(l) => l
            .apps
            .iter()
            .map(|a| {
                vec![
                    a.name.clone(),
                    a.state.clone(),
                    a.pid.map_or("-".into(), |p| p.to_string()),
                    a.exit_code.map_or("-".into(), |c| c.to_string()),
                    a.restarts.to_string(),
                    a.error.clone(),
                ]
            })
            .collect(),
        None => r
            .apps
            .iter()
            .map(|a| {
                vec![
                    a.name.clone(),
                    a.state.clone(),
                    "-".into(),
                    a.exit_code.map_or("-".into(), |c| c.to_string()),
                    a.restarts.to_string(),
                    a.error.clone(),
                ]
            })
            .collect(),
    };
    table::print(&["APP", "STATE", "PID", "EXIT", "RESTARTS", "ERROR"], &rows);
    if let Some(l) = &view.live {
        println!("\nboot timeline (seconds after the guest kernel started):");
        for e in &l.timeline {
            println!("  {:>9.3}  {}", e.seconds, e.name);
        }
    }
    Ok(0)
}
