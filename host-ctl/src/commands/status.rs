//! `host-ctl status <pod>`: the pod's state, its apps' state, pid and exit
//! status (and output dropped, if any), how its logs rotate, and the boot
//! timeline. A running pod's agent is asked directly.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use kvmpod_api::protocol::{PodStatus, StatusRequest};
use serde::Serialize;

use super::Format;
use crate::agent::{self, Endpoint};
use crate::logs::Rotation;
use crate::pod::record::{AppSummary, PodRecord, State, TimelineEntry};
use crate::pod::{StoredPod, VmLaunch};
use crate::ui::table;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct StatusView {
    #[serde(flatten)]
    record: PodRecord,
    /// From launch.json (absent when the pod failed before writing it).
    #[serde(skip_serializing_if = "Option::is_none")]
    log_rotation: Option<Rotation>,
    #[serde(skip_serializing_if = "Option::is_none")]
    live: Option<LiveView>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LiveView {
    pod_state: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    error: String,
    apps: Vec<AppSummary>,
    timeline: Vec<TimelineEntry>,
}

fn live_view(st: &PodStatus) -> LiveView {
    LiveView {
        pod_state: st.state.enum_value_or_default().name().into(),
        error: st.error.clone(),
        apps: st.apps.iter().map(AppSummary::from_status).collect(),
        timeline: st.timeline.iter().map(TimelineEntry::from).collect(),
    }
}

pub async fn run(state_dir: &Path, id: &str, format: Format) -> Result<i32> {
    let view = view(&StoredPod::open(state_dir, id)?).await?;
    if !format.print_one(&view)? {
        print_view(&view);
    }
    Ok(0)
}

/// What `status` shows of `pod`: its record, and a running pod's agent's
/// own account.
pub(super) async fn view(pod: &StoredPod) -> Result<StatusView> {
    let live = if pod.record.state == State::Running {
        let client = pod.client().await?;
        let st = client
            .status(
                agent::deadline(Duration::from_secs(10)),
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
    Ok(StatusView {
        log_rotation: VmLaunch::read(&pod.dir).ok().map(|l| l.log_rotation),
        record: pod.record.clone(),
        live,
    })
}

fn print_view(view: &StatusView) {
    let r = &view.record;
    println!("pod:      {}", r.id);
    if let Some(name) = &r.name {
        println!("name:     {name}");
    }
    if let Some(image) = &r.image {
        println!("image:    {image}");
    }
    println!(
        "state:    {}{}",
        view.live
            .as_ref()
            .map(|l| l.pod_state.as_str())
            .unwrap_or(r.state.as_str()),
        if r.detached { " (detached)" } else { "" }
    );
    println!("created:  {}", r.created);
    for (label, value) in [
        ("started: ", &r.started),
        ("finished:", &r.finished),
        ("ended:   ", &r.exit_reason),
    ] {
        if let Some(v) = value {
            println!("{label} {v}");
        }
    }
    if let Some(a) = &r.accel {
        println!("accel:    {a}");
    }
    match &r.endpoint {
        Some(Endpoint::Hybrid { socket, cid }) => {
            println!("vsock:    CID {cid}, hybrid through {}", socket.display())
        }
        Some(Endpoint::Vhost { cid }) => println!("vsock:    CID {cid}, AF_VSOCK"),
        None => {}
    }
    if let Some(n) = &r.network {
        let address = r
            .address
            .map(|a| format!(", address {a}"))
            .unwrap_or_default();
        let loopback = if n.host_loopback {
            ", host loopback reachable"
        } else {
            ""
        };
        println!("network:  {}{address}{loopback}", n.mode.name());
        if !n.ports.is_empty() {
            println!("ports:    {}", r.ports());
        }
    }
    if let Some(rot) = &view.log_rotation {
        println!("logs:     {}", rot.describe());
    }
    println!();
    print_apps(view.live.as_ref().map_or(&r.apps, |l| &l.apps));
    if let Some(l) = &view.live {
        println!("\nboot timeline (seconds after the guest kernel started):");
        for e in &l.timeline {
            println!("  {:>9.3}  {}", e.seconds, e.name);
        }
    }
}

/// The apps' table; a DROPPED column (bytes of output the agent dropped)
/// when any app lost output.
fn print_apps(apps: &[AppSummary]) {
    let dropped = apps.iter().any(|a| a.dropped_bytes > 0);
    let rows: Vec<Vec<String>> = apps
        .iter()
        .map(|a| {
            let mut row = vec![
                a.name.clone(),
                a.state.as_str().into(),
                a.pid.map_or("-".into(), |p| p.to_string()),
                a.exit_code.map_or("-".into(), |c| c.to_string()),
                a.restarts.to_string(),
            ];
            if dropped {
                row.push(match a.dropped_bytes {
                    0 => "-".into(),
                    n => n.to_string(),
                });
            }
            row.push(a.error.clone());
            row
        })
        .collect();
    let mut header = vec!["APP", "STATE", "PID", "EXIT", "RESTARTS"];
    if dropped {
        header.push("DROPPED");
    }
    header.push("ERROR");
    table::print(&header, &rows);
}
