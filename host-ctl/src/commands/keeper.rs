//! `host-ctl keeper [--boot|--adopt|--watch] <pod dir>` (hidden): keeps a
//! detached pod's monitor alive (see `pod::monitor::keeper`).

use std::path::Path;

use anyhow::Result;

use crate::pod::monitor::keeper;
use crate::pod::monitor::spawn::KeeperStart;
use crate::pod::PodDir;

pub async fn run(dir: &Path, start: KeeperStart) -> Result<i32> {
    let dir = PodDir::open(dir)?;
    keeper::keep(&dir, start).await?;
    Ok(0)
}
