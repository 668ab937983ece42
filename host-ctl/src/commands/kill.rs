//! `host-ctl kill <pod> [app] [--signal SIG]`: signals an app's process
//! group, or every running app's.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Result};
use kvmpod_api::protocol::SignalRequest;

use crate::agent;
use crate::pod::StoredPod;

pub async fn run(state_dir: &Path, id: &str, app: Option<&str>, signal: i32) -> Result<i32> {
    let pod = StoredPod::open(state_dir, id)?;
    let client = pod.client().await?;
    let mut req = SignalRequest::new();
    req.app = app.unwrap_or_default().to_string();
    req.signal = signal;
    client
        .signal(agent::deadline(Duration::from_secs(10)), &req)
        .await
        .map_err(|e| match e {
            ttrpc::Error::RpcStatus(s) => anyhow!("{}", s.message()),
            e => anyhow!("signalling: {e}"),
        })?;
    Ok(0)
}
