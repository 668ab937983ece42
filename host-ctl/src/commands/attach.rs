//! `host-ctl attach <pod> <app>`: follows an app's output from now on and,
//! for an app started with `"stdin": true`, feeds it this process's stdin,
//! on an io stream of its own. Ctrl-C detaches and leaves the app running;
//! when the app exits, so does attach, with the app's status. An app on a
//! terminal gets this terminal's size and, with stdin, its keys in raw
//! mode: Ctrl-C then reaches the app, and the detach keys (`ctrl-p,ctrl-q`
//! unless `--detach-keys` says otherwise) leave it running.

use std::os::fd::AsFd;
use std::path::Path;

use anyhow::{anyhow, Result};
use kvmpod_api::iostream::{Input, Request};
use kvmpod_api::manifest::PodManifest;

use super::exec::{agent_endpoint, follow_resizes, output_until_detached, window};
use crate::agent::iostream;
use crate::pod::StoredPod;
use crate::ui::detach_keys::DetachKeys;
use crate::ui::terminal::{self, RawMode};

pub async fn run(state_dir: &Path, id: &str, app: &str, detach_keys: &str) -> Result<i32> {
    let keys = DetachKeys::parse(detach_keys).map_err(|e| anyhow!("--detach-keys: {e}"))?;
    let pod = StoredPod::open(state_dir, id)?;
    let manifest: PodManifest = serde_json::from_slice(&std::fs::read(pod.dir.manifest())?)?;
    let Some(spec) = manifest.apps.iter().find(|a| a.name == app) else {
        anyhow::bail!("pod {} has no app named {app:?}", pod.record.id);
    };
    let request = Request::Attach {
        app: app.to_string(),
    };
    let (tx, mut rx) = iostream::open(agent_endpoint(&pod)?, &request)
        .await
        .map_err(|e| anyhow!("attaching: {e}"))?;
    // An app on a terminal: this terminal's keys go to it as they are
    // typed (raw mode, restored however attach ends), and its size follows
    // this one's.
    let raw = (spec.terminal && spec.stdin && terminal::is_terminal(std::io::stdin().as_fd()))
        .then(RawMode::enter)
        .flatten();
    let mut feeders = Vec::new();
    let mut detached = None;
    if spec.terminal {
        if let Some(w) = window() {
            tx.send(Input::Resize(w))
                .await
                .map_err(|e| anyhow!("attaching: {e}"))?;
        }
        feeders.push(tokio::spawn(follow_resizes(tx.clone())));
    }
    if spec.stdin {
        // The end of this stdin ends a piped app's stdin; a terminal app's
        // stays open for the next attach.
        let close_at_end = !spec.terminal;
        match keys.filter(|_| spec.terminal) {
            // Typed on a terminal: the detach keys end the session.
            Some(keys) => {
                detached = Some(tokio::spawn(async move {
                    tx.pump_stdin_until(tokio::io::stdin(), close_at_end, keys)
                        .await
                }));
            }
            None => feeders.push(tokio::spawn(async move {
                tx.pump_stdin(tokio::io::stdin(), close_at_end).await;
            })),
        }
    }
    let interrupted = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let ended = output_until_detached(&mut rx, "attach", detached, interrupted).await;
    for f in feeders {
        f.abort();
    }
    // Out of raw mode before anything is said on this terminal.
    drop(raw);
    match ended {
        Some(status) => status,
        None => {
            eprintln!("host-ctl: detached from {app}; it keeps running");
            Ok(0)
        }
    }
}
