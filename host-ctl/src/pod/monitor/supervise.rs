//! A running pod's life under its monitor: collect the apps' output, wait
//! for the apps, an interrupt or the VM's death, record the end and end
//! the VM.
//!
//! A broken ttrpc connection is made again here; each collector has its
//! own log stream connection and makes it again by itself (with backoff,
//! resuming where its file ends) until its app's output ends or the
//! monitor stops it: when the VM dies, or output stands still after the
//! apps exited. Every collector syncs its file as it ends.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvmpod_api::layout::DEFAULT_VSOCK_PORT;
use kvmpod_api::protocol::{PodStatus, ShutdownRequest, WaitRequest};
use tokio::sync::watch;

use super::added::{AddedApps, Change};
use super::end::record_end;
use super::{Monitor, Outcome, Result};
use crate::agent::{self, AgentClient};
use crate::logs::collect::Collectors;
use crate::logs::stream::Tee;
use crate::logs::Printer;
use crate::pod::store;
use crate::ui::text::indent;
use crate::vmm::process::tail;

/// How the wait for the pod ended.
enum Ending {
    Finished(PodStatus),
    Interrupted,
    VmDied(String),
}

/// The agent's answer once every app is over.
fn wait_all(
    client: &AgentClient,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ttrpc::Result<PodStatus>> + Send>> {
    let client = client.clone();
    Box::pin(async move { client.wait(agent::no_deadline(), &WaitRequest::new()).await })
}

impl Monitor {
    /// Runs the pod to its end: see the module documentation.
    pub async fn supervise(
        mut self,
        printer: Option<Printer>,
        mut interrupts: watch::Receiver<u32>,
    ) -> Result<Outcome> {
        let (mut collectors, collected) = self.start_collectors(printer);
        let (mut added, missing) =
            AddedApps::follow(&self.client, self.pod.sandbox, collected).await;
        for app in &missing {
            self.collect(&mut collectors, app);
        }
        let outcome = match self
            .wait_for_end(&mut interrupts, &mut collectors, &mut added)
            .await
        {
            Ending::Finished(status) => {
                collectors.finish().await;
                let record = record_end(&self.dir, Some(&status), "every app exited".into())?;
                self.end_vm(&mut interrupts).await;
                Outcome {
                    record,
                    status: Some(status),
                    interrupted: false,
                }
            }
            Ending::Interrupted => self.stop_on_interrupt(collectors, &mut interrupts).await?,
            Ending::VmDied(how) => self.vm_died(collectors, &how).await?,
        };
        store::release(&self.dir);
        Ok(outcome)
    }

    /// One collector per app, each on its own log stream connection;
    /// and the apps collected.
    fn start_collectors(&self, printer: Option<Printer>) -> (Collectors, HashSet<String>) {
        let printer = printer.map(|p| Arc::new(Mutex::new(p)));
        let mut collectors = Collectors::new(Tee::new(printer, self.guest_boot));
        for a in &self.pod.apps {
            self.collect(&mut collectors, &a.name);
        }
        let names = self.pod.apps.iter().map(|a| a.name.clone()).collect();
        (collectors, names)
    }

    fn collect(&self, collectors: &mut Collectors, app: &str) {
        let rotation = self.log_rotation;
        let files = self.dir.app_logs(app, rotation.max_files);
        collectors.spawn(app, files, rotation, self.endpoint.clone());
    }

    /// Waits for every app to end, an interrupt, or the VM's death. A
    /// broken connection to a VM that still runs is made again.
    async fn wait_for_end(
        &mut self,
        interrupts: &mut watch::Receiver<u32>,
        collectors: &mut Collectors,
        added: &mut AddedApps,
    ) -> Ending {
        // One wait at a time: each would be a waiter in the agent until
        // the apps are over.
        let mut wait = wait_all(&self.client);
        loop {
            tokio::select! {
                change = added.next() => match change {
                    Change::Collect(app) => self.collect(collectors, &app),
                    Change::Nothing => {}
                    Change::Ended => {
                        // The VM is going (the wait says so), or the
                        // connection broke: follow again if it answers.
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        added.resubscribe(&self.client).await;
                    }
                },
                st = &mut wait => match st {
                    Ok(st) => return Ending::Finished(st),
                    Err(e) => {
                        if let Some(end) = self.vm.vm.wait_for(Duration::from_millis(200)).await {
                            return Ending::VmDied(end);
                        }
                        match self.reconnect().await {
                            Some(c) => {
                                self.client = c;
                                wait = wait_all(&self.client);
                                if self.pod.sandbox && !added.is_following() {
                                    added.resubscribe(&self.client).await;
                                }
                            }
                            None => return Ending::VmDied(format!("its agent stopped answering ({e})")),
                        }
                    }
                },
                _ = interrupts.changed() => return Ending::Interrupted,
                end = self.vm.vm.wait_for(Duration::MAX) => return Ending::VmDied(end.unwrap_or_default()),
            }
        }
    }

    async fn reconnect(&mut self) -> Option<AgentClient> {
        let until = Instant::now() + Duration::from_secs(30);
        let vm = &mut self.vm.vm;
        agent::connect(
            &self.endpoint,
            DEFAULT_VSOCK_PORT,
            &mut || vm.exited(),
            until,
        )
        .await
        .ok()
    }

    /// The first interrupt: a graceful stop, waiting for the apps' status.
    async fn stop_on_interrupt(
        &mut self,
        collectors: Collectors,
        interrupts: &mut watch::Receiver<u32>,
    ) -> Result<Outcome> {
        eprintln!(
            "host-ctl: stopping pod {} (apps get {}s after SIGTERM; interrupt again to kill it)",
            self.dir.id,
            self.grace.as_secs()
        );
        let _ = self.shutdown_request().await;
        let until = self.grace + Duration::from_secs(15);
        let wait_req = WaitRequest::new();
        let status = tokio::select! {
            st = tokio::time::timeout(until, self.client.wait(agent::no_deadline(), &wait_req)) => st.ok().and_then(|r| r.ok()),
            _ = interrupts.changed() => None,
        };
        collectors.finish().await;
        let record = record_end(&self.dir, status.as_ref(), "interrupted".into())?;
        self.end_vm(interrupts).await;
        Ok(Outcome {
            record,
            status,
            interrupted: true,
        })
    }

    async fn vm_died(&mut self, collectors: Collectors, how: &str) -> Result<Outcome> {
        // What arrived is written and synced; nothing more will.
        collectors.stop().await;
        self.vm.kill_backends().await;
        let console = tail(&self.dir.console_log(), 5);
        let reason = format!(
            "the VM exited unexpectedly ({how}); console tail:\n{}",
            indent(&console)
        );
        let record = record_end(&self.dir, None, reason)?;
        Ok(Outcome {
            record,
            status: None,
            interrupted: false,
        })
    }

    async fn shutdown_request(&self) -> ttrpc::Result<()> {
        let mut req = ShutdownRequest::new();
        req.grace_ms = u32::try_from(self.grace.as_millis()).unwrap_or(u32::MAX);
        self.client
            .shutdown(agent::deadline(Duration::from_secs(5)), &req)
            .await
            .map(|_| ())
    }

    /// Asks the agent to end the VM and waits for the hypervisor to exit;
    /// kills it if it does not, or at a second interrupt. Then the vsock
    /// backend goes.
    async fn end_vm(&mut self, interrupts: &mut watch::Receiver<u32>) {
        // A lost reply is expected when the guest powers off first.
        let _ = self.shutdown_request().await;
        let exited = tokio::select! {
            end = self.vm.vm.wait_for(self.grace + Duration::from_secs(15)) => {
                if end.is_none() {
                    eprintln!("host-ctl: the VM of pod {} did not power off; killing it", self.dir.id);
                }
                end.is_some()
            }
            _ = interrupts.changed() => {
                eprintln!("host-ctl: interrupted again; killing the VM");
                false
            }
        };
        if !exited {
            self.vm.vm.kill().await;
        }
        self.vm.kill_backends().await;
    }
}
