//! The one owner of `waitpid`. PID 1 inherits every orphan in the guest and
//! must reap them all; a second waiter (`Child::wait`, `tokio::process`)
//! would race it for the exit statuses of the processes it started.
//!
//! Spawning and reaping share one lock: a process is registered before the
//! reaper can collect it, so its exit is never mistaken for an orphan's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// The code it exited with, or 128 + the signal that killed it.
    pub code: i32,
    /// The signal that killed it, or 0.
    pub signal: i32,
}

impl Exit {
    fn from_status(status: WaitStatus) -> Option<(Pid, Exit)> {
        match status {
            WaitStatus::Exited(pid, code) => Some((pid, Exit { code, signal: 0 })),
            WaitStatus::Signaled(pid, sig, _) => Some((
                pid,
                Exit {
                    code: 128 + sig as i32,
                    signal: sig as i32,
                },
            )),
            _ => None,
        }
    }
}

/// A started process, as the reaper registers it.
pub trait HasPid {
    fn pid(&self) -> i32;
}

impl HasPid for super::start::Started {
    fn pid(&self) -> i32 {
        self.pid
    }
}

#[derive(Default)]
pub struct Reaper {
    waiting: Mutex<HashMap<i32, oneshot::Sender<Exit>>>,
}

impl Reaper {
    pub fn new() -> Arc<Self> {
        Arc::new(Reaper::default())
    }

    fn table(&self) -> MutexGuard<'_, HashMap<i32, oneshot::Sender<Exit>>> {
        // A poisoned lock only means a panic elsewhere; the table is still
        // consistent (every operation is a single insert or remove).
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a process with `start` (which returns once it has exec'd)
    /// and registers it; the receiver yields its exit. The table is locked
    /// across the start, so the reaper cannot collect the child first (nor
    /// the status of a child whose exec failed, which `start` reaps
    /// itself).
    pub fn spawn<C: HasPid>(
        &self,
        start: impl FnOnce() -> std::io::Result<C>,
    ) -> std::io::Result<(C, oneshot::Receiver<Exit>)> {
        let mut table = self.table();
        let child = start()?;
        let (tx, rx) = oneshot::channel();
        table.insert(child.pid(), tx);
        Ok((child, rx))
    }

    /// Collects every exited child now. Registered ones are reported to
    /// their waiter; orphans are just reaped.
    pub fn reap(&self) {
        let mut table = self.table();
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(status) => {
                    if let Some((pid, exit)) = Exit::from_status(status) {
                        match table.remove(&pid.as_raw()) {
                            Some(tx) => {
                                let _ = tx.send(exit);
                            }
                            None => log::debug!("reaped orphan {pid} ({exit:?})"),
                        }
                    }
                }
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    log::warn!("waitpid: {e}");
                    return;
                }
            }
        }
    }

    /// Reaps on every SIGCHLD, for the life of the agent.
    pub fn start(self: &Arc<Self>) -> std::io::Result<()> {
        let mut sigchld = signal(SignalKind::child())?;
        let me = Arc::clone(self);
        tokio::spawn(async move {
            me.reap();
            while sigchld.recv().await.is_some() {
                me.reap();
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::vfork::{self, BeforeExec, Exec};
    use super::*;
    use std::time::Duration;

    struct Plain(i32);
    impl HasPid for Plain {
        fn pid(&self) -> i32 {
            self.0
        }
    }

    struct Nothing;
    impl BeforeExec for Nothing {
        fn run(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn start(argv: &[&str]) -> std::io::Result<Plain> {
        let exec = Exec::new(argv[0], argv.iter().copied(), []).unwrap();
        vfork::spawn(&exec, [None, None, None], &Nothing).map(|p| Plain(p.as_raw()))
    }

    // Reaping waits for any child of the test process, so these run on a
    // fresh, single reaper in one test.
    #[tokio::test(flavor = "current_thread")]
    async fn exits_are_reported_with_codes_and_signals() {
        let reaper = Reaper::new();
        reaper.start().unwrap();
        let (_c, rx) = reaper
            .spawn(|| start(&["/bin/sh", "-c", "exit 7"]))
            .unwrap();
        let exit = tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(exit, Exit { code: 7, signal: 0 });

        let (_c, rx) = reaper
            .spawn(|| start(&["/bin/sh", "-c", "kill -9 $$"]))
            .unwrap();
        let exit = tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            exit,
            Exit {
                code: 137,
                signal: 9
            }
        );

        // A failed exec is reaped by the start itself; the shared lock
        // keeps the reaper from taking that status first.
        for _ in 0..20 {
            assert!(reaper.spawn(|| start(&["/nonexistent/program"])).is_err());
        }
    }
}
