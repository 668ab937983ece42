//! TaskOOM: containerd learns that the OOM killer struck the task, as runc's
//! shim reports from the container cgroup's `memory.events`. In a kvmpod pod
//! the app's cgroup is in the guest, so the agent sees the kill and reports
//! it as an event; the shim follows the pod's events and passes each OOM
//! kill of the app on.

use containerd_shim::protos::events::task::TaskOOM;
use containerd_shim::protos::topics::TASK_OOM_EVENT_TOPIC;
use host_ctl::agent::{self, Endpoint};
use kvmpod_api::layout::DEFAULT_VSOCK_PORT;
use kvmpod_api::protocol::{EventKind, EventsRequest};
use log::warn;

use crate::events::Events;

/// Follows the pod's events until the pod ends, publishing a TaskOOM for
/// container `container` at each OOM kill of its app `app`. Without the event
/// stream the task still runs; only the OOM events are lost, and that is
/// logged.
pub async fn follow(endpoint: Endpoint, events: Events, container: String, app: String) {
    let client = match agent::connect_once(&endpoint, DEFAULT_VSOCK_PORT).await {
        Ok(c) => c,
        Err(e) => {
            warn!("task {container}: no OOM events: {e}");
            return;
        }
    };
    let mut req = EventsRequest::new();
    req.follow = true;
    let mut rx = match client.events(agent::no_deadline(), &req).await {
        Ok(rx) => rx,
        Err(e) => {
            warn!("task {container}: no OOM events: asking for the pod's events: {e}");
            return;
        }
    };
    // The stream ends (or breaks) when the VM powers off.
    while let Ok(Some(e)) = rx.recv().await {
        if e.kind.enum_value_or_default() == EventKind::EVENT_KIND_APP_OOM_KILLED && e.app == app {
            let event = TaskOOM {
                container_id: container.clone(),
                ..Default::default()
            };
            events.publish(TASK_OOM_EVENT_TOPIC, Box::new(event)).await;
        }
    }
}
