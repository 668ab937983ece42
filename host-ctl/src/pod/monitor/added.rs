//! Apps added to a running sandbox pod (`host-ctl app add`): the monitor
//! starts a collector for each, so an added app's output is persisted as a
//! booted app's is. It reads the pod's events so far (the apps added and
//! not removed since boot: those added while no monitor ran, or between
//! its reading the manifest and now), then follows the events after them.

use std::collections::HashSet;
use std::time::Duration;

use kvmpod_api::protocol::{Event, EventKind, EventsRequest};
use ttrpc::r#async::ClientStreamReceiver;

use crate::agent::{self, AgentClient};

/// The pod's events after a point, and the apps already collected.
pub struct AddedApps {
    events: Option<ClientStreamReceiver<Event>>,
    /// The last event seen: where a broken stream resumes.
    after: u64,
    collected: HashSet<String>,
}

/// What an event means for the collectors.
pub enum Change {
    /// Start collecting this app's output.
    Collect(String),
    Nothing,
    /// The stream is over (the VM is going, or the connection broke).
    Ended,
}

impl AddedApps {
    /// Reads the pod's events so far and follows those after them;
    /// `collected` are the apps that already have a collector. Returns the
    /// added apps that still need one. A pod that cannot take new apps has
    /// nothing to follow.
    pub async fn follow(
        client: &AgentClient,
        sandbox: bool,
        collected: HashSet<String>,
    ) -> (Self, Vec<String>) {
        let mut this = AddedApps {
            events: None,
            after: 0,
            collected,
        };
        if !sandbox {
            return (this, Vec::new());
        }
        let (after, present) = history(client).await;
        this.after = after;
        let missing = present
            .into_iter()
            .filter(|app| this.collected.insert(app.clone()))
            .collect();
        this.resubscribe(client).await;
        (this, missing)
    }

    /// Subscribes again after a reconnection, from the last event seen.
    pub async fn resubscribe(&mut self, client: &AgentClient) {
        let mut req = EventsRequest::new();
        req.follow = true;
        req.after = self.after;
        self.events = client.events(agent::no_deadline(), &req).await.ok();
    }

    pub fn is_following(&self) -> bool {
        self.events.is_some()
    }

    /// The next change; pending forever when nothing is followed.
    pub async fn next(&mut self) -> Change {
        let Some(rx) = self.events.as_mut() else {
            return std::future::pending().await;
        };
        match rx.recv().await {
            Ok(Some(e)) => {
                self.after = self.after.max(e.seq);
                self.take(&e)
            }
            Ok(None) | Err(_) => {
                self.events = None;
                Change::Ended
            }
        }
    }

    fn take(&mut self, e: &Event) -> Change {
        match e.kind.enum_value_or_default() {
            EventKind::EVENT_KIND_APP_ADDED if self.collected.insert(e.app.clone()) => {
                Change::Collect(e.app.clone())
            }
            // Its collector has ended with its output; the name may come
            // back as a new app.
            EventKind::EVENT_KIND_APP_REMOVED => {
                self.collected.remove(&e.app);
                Change::Nothing
            }
            _ => Change::Nothing,
        }
    }
}

/// The pod's events so far: the last one's sequence number (0 for none)
/// and the apps added and not removed since, in the order added.
async fn history(client: &AgentClient) -> (u64, Vec<String>) {
    let req = EventsRequest::new();
    let Ok(mut rx) = client
        .events(agent::deadline(Duration::from_secs(5)), &req)
        .await
    else {
        return (0, Vec::new());
    };
    let mut last = 0;
    let mut present: Vec<String> = Vec::new();
    while let Ok(Some(e)) = rx.recv().await {
        last = last.max(e.seq);
        match e.kind.enum_value_or_default() {
            EventKind::EVENT_KIND_APP_ADDED if !present.contains(&e.app) => {
                present.push(e.app.clone());
            }
            EventKind::EVENT_KIND_APP_REMOVED => present.retain(|a| a != &e.app),
            _ => {}
        }
    }
    (last, present)
}
