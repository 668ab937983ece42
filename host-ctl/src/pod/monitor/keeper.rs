//! The keeper: the process that keeps a detached pod's monitor alive. When
//! the monitor dies while the pod runs, a new one adopts the pod at once,
//! so output the agent holds is collected again within about a second,
//! without any command from the user. When the pod is over, the keeper
//! ends too.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::spawn::{spawn_monitor, KeeperStart};
use crate::pod::record::{self, State};
use crate::pod::{store, PodDir, PodError};
use crate::vmm::Supervised;

/// More restarts than this within [`CRASH_WINDOW`] means the monitor
/// cannot run at all: the keeper stops and says so.
const MAX_RESTARTS: usize = 5;
const CRASH_WINDOW: Duration = Duration::from_secs(30);

/// The monitor being kept: a child, or (after a keeper died) a process
/// this keeper watches through a pidfd.
enum Kept {
    Child(tokio::process::Child),
    Watched(Supervised),
}

impl Kept {
    async fn wait(&mut self) -> String {
        match self {
            Kept::Child(c) => c
                .wait()
                .await
                .map(|s| s.to_string())
                .unwrap_or_else(|e| e.to_string()),
            Kept::Watched(s) => s.wait_for(Duration::MAX).await.unwrap_or_default(),
        }
    }
}

fn log(dir: &PodDir, what: impl std::fmt::Display) {
    eprintln!(
        "host-ctl keeper: pod {} at {}: {what}",
        dir.id,
        record::now()
    );
}

/// Keeps the pod's monitor alive until the pod is over.
pub async fn keep(dir: &PodDir, start: KeeperStart) -> Result<(), PodError> {
    record::update(dir, |r| {
        r.keeper = crate::vmm::process::ProcRef::of(std::process::id())
    })?;
    let mut kept = match start {
        KeeperStart::Boot => Kept::Child(spawn_monitor(dir, false)?),
        KeeperStart::Adopt => Kept::Child(spawn_monitor(dir, true)?),
        KeeperStart::Watch => match record::read(dir)?.monitor {
            Some(m) => Kept::Watched(Supervised::adopt("the monitor", m, &dir.monitor_log())?),
            None => Kept::Child(spawn_monitor(dir, true)?),
        },
    };
    let mut restarts: VecDeque<Instant> = VecDeque::new();
    loop {
        let how = kept.wait().await;
        let rec = record::read(dir)?;
        if rec.state == State::Exited {
            return Ok(());
        }
        if rec.state == State::Prepared {
            // It died while booting: there is no VM it handed over.
            log(
                dir,
                format!("the monitor died ({how}) before the pod started"),
            );
            store::abandon(dir, rec)?;
            return Ok(());
        }
        restarts.push_back(Instant::now());
        while restarts.front().is_some_and(|t| t.elapsed() > CRASH_WINDOW) {
            restarts.pop_front();
        }
        if restarts.len() > MAX_RESTARTS {
            log(dir, format!("the monitor died {MAX_RESTARTS} times within {CRASH_WINDOW:?}; giving up (the next host-ctl command will try again)"));
            return Ok(());
        }
        log(
            dir,
            format!("the monitor died ({how}); starting one to adopt the pod"),
        );
        kept = Kept::Child(spawn_monitor(dir, true)?);
    }
}
