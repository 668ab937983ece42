//! `host-ctl attach <pod> <app>`: follows an app's output from now on and,
//! for an app started with `"stdin": true`, feeds it this process's stdin.
//! Ctrl-C detaches and leaves the app running; when the app exits, so does
//! attach, with the app's status.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Result};
use kvmpod_api::manifest::PodManifest;
use kvmpod_api::protocol::{attach_input, AttachInput, LogChunk, LogStream, StatusRequest};

use crate::agent;
use crate::pod::StoredPod;

fn input(kind: attach_input::Kind) -> AttachInput {
    let mut m = AttachInput::new();
    m.kind = Some(kind);
    m
}

/// Writes a chunk of the app's output to our stdout or stderr.
fn write_out(chunk: &LogChunk) {
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    let w: &mut dyn Write = if chunk.stream.enum_value_or_default() == LogStream::LOG_STREAM_STDERR
    {
        &mut err
    } else {
        &mut out
    };
    let _ = w.write_all(&chunk.data);
    let _ = w.flush();
}

pub async fn run(state_dir: &Path, id: &str, app: &str) -> Result<i32> {
    let pod = StoredPod::open(state_dir, id)?;
    let manifest: PodManifest = serde_json::from_slice(&std::fs::read(pod.dir.manifest())?)?;
    let Some(spec) = manifest.apps.iter().find(|a| a.name == app) else {
        anyhow::bail!("pod {} has no app named {app:?}", pod.record.id);
    };
    let client = pod.client().await?;
    let stream = client
        .attach(agent::no_deadline())
        .await
        .map_err(|e| anyhow!("attaching: {e}"))?;
    let (tx, mut rx) = stream.split();
    tx.send(&input(attach_input::Kind::App(app.to_string())))
        .await
        .map_err(|e| anyhow!("attaching: {e}"))?;
    let feeder = spec.stdin.then(|| {
        tokio::spawn(agent::stdin::pump(
            tx.clone(),
            |data| input(attach_input::Kind::Stdin(data)),
            || input(attach_input::Kind::CloseStdin(true)),
        ))
    });

    let detached = loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Ok(chunk) => write_out(&chunk),
                // The stream ends when the app has exited and its output is out.
                Err(_) => break false,
            },
            _ = tokio::signal::ctrl_c() => break true,
        }
    };
    if let Some(f) = feeder {
        f.abort();
    }
    if detached {
        eprintln!("host-ctl: detached from {app}; it keeps running");
        return Ok(0);
    }
    let st = client
        .status(
            agent::deadline(Duration::from_secs(10)),
            &StatusRequest::new(),
        )
        .await;
    Ok(match st {
        Ok(st) => st
            .apps
            .iter()
            .find(|a| a.name == app)
            .filter(|a| a.state.enum_value_or_default().is_done())
            .map_or(0, |a| a.exit_code),
        Err(_) => 0,
    })
}
