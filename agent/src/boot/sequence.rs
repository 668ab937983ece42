//! The agent's whole life, in order: kernel modules from the stage1 image,
//! the guest's own file systems, (in a VM booted for the warm pool) the
//! wait for a pod to claim it, the pod's share (settings, manifest, app
//! layers), the vsock server, app roots and volumes, apps; then waiting for
//! shutdown.
//!
//! Until the vsock server is up, a failure can only be told on the console:
//! one `FATAL` line, then power-off. After that the failure is recorded in
//! the pod's status for the host to collect.

use std::sync::Arc;
use std::time::Duration;

use kvmpod_api::config::AgentConfig;
use kvmpod_api::layout::{self, FORWARD_VSOCK_PORT, IO_VSOCK_PORT, LOG_VSOCK_PORT};
use kvmpod_api::manifest::PodManifest;
use kvmpod_api::timeline::Stage;
use ttrpc::r#async::Server;

use super::{config, early, kmod, pool, power, rootswitch};
use crate::pod::{self, Pod};
use crate::process::{self, Reaper};
use crate::timeline::Timeline;
use crate::{console, network, rpc, storage};

/// Reports a failure on the console and powers off.
fn fatal(stage: &str, error: &dyn std::fmt::Display) -> ! {
    console::fatal(stage, error);
    power::power_off()
}

/// Runs the pod; returns when it is time to power off.
pub async fn run(init_ns: u64) {
    let timeline = Timeline::default();
    timeline.mark_at(Stage::Init, init_ns);
    from_stage1(&timeline);
    guest_system();
    timeline.mark(Stage::BaseMounted);
    if pool::pooled() {
        timeline.mark(Stage::PoolWaiting);
        if let Err(e) = pool::await_claim() {
            fatal("waiting for a pod to claim the VM", &e);
        }
        timeline.mark(Stage::Claimed);
    }
    let (config, manifest) = from_pod_share(&timeline);
    pod_network(&config);

    let reaper = Reaper::new();
    if let Err(e) = reaper.start() {
        fatal("starting the reaper", &e);
    }
    let linger = Duration::from_secs(config.linger_secs);
    let pod = Pod::new(manifest, config, timeline, reaper);
    // Kept alive for the life of the agent: dropping it stops serving.
    let _server = serve(&pod).await;
    pod.timeline.mark(Stage::AgentReady);
    console::stage(Stage::AgentReady);

    start_pod(&pod);
    let grace = shutdown_requested(&pod, linger).await;
    pod::stop(&pod, grace).await;
}

/// What comes from the stage1 image, before the root moves off it: the
/// kernel modules for the VM's transport, and its network driver's when
/// it has a network interface.
fn from_stage1(timeline: &Timeline) {
    power::set_vm_end(config::vm_end());
    console::init_logger(false);
    let modules = config::read_stage1()
        .and_then(|s1| {
            let transport = config::transport()?;
            let mut modules = config::modules_for(&s1, &transport)?.to_vec();
            if config::has_network() {
                modules.extend_from_slice(config::modules_for(&s1, layout::NET_MODULES_KEY)?);
            }
            Ok(modules)
        })
        .unwrap_or_else(|e| fatal("reading the stage1 image's settings", &e));
    if let Err(e) = kmod::load_all(&modules) {
        fatal("loading kernel modules", &e);
    }
    timeline.mark(Stage::ModulesLoaded);
    console::stage(Stage::ModulesLoaded);

    // Apps pivot_root into their roots, which the initramfs cannot allow.
    if rootswitch::on_initramfs() {
        match rootswitch::switch_to_tmpfs() {
            Ok(()) => {
                timeline.mark(Stage::RootSwitched);
            }
            Err(e) => fatal("moving the root off the initramfs", &e),
        }
    }
}

/// The guest's network: loopback always, and the pod's interface when the
/// host gave it one (its driver was loaded with the other modules).
fn pod_network(config: &AgentConfig) {
    let net = match (network::GuestNet::open(), &config.network) {
        (Ok(net), _) => net,
        (Err(e), Some(_)) => fatal("configuring the pod's network", &e),
        // Without it the pod still runs; port forwarding finds nothing to
        // connect to.
        (Err(e), None) => {
            log::warn!("{e}");
            return;
        }
    };
    if let Err(e) = net.loopback_up() {
        log::warn!("{e}");
    }
    let Some(plan) = &config.network else {
        return;
    };
    match net.configure(plan) {
        Ok(name) => log::debug!("{name}: {}/{} up", plan.address, plan.prefix_len),
        Err(e) => fatal("configuring the pod's network", &e),
    }
}

/// The guest's own file systems and cgroups.
fn guest_system() {
    if let Err(e) = early::mount_base() {
        fatal("mounting the guest's file systems", &e);
    }
    early::protect_from_oom();
    // Without them the pod still runs: apps lose their statistics and
    // limits (an app that asks for limits then fails to start).
    if let Err(e) = process::setup_cgroups() {
        log::warn!("{e}");
    }
}

/// The pod's settings and manifest, from its share; and the `/etc` files
/// they decide.
fn from_pod_share(timeline: &Timeline) -> (AgentConfig, PodManifest) {
    if let Err(e) = storage::mount_pod_share(AgentConfig::default().ninep_msize) {
        fatal("mounting the pod's share", &e);
    }
    let config =
        config::read_config().unwrap_or_else(|e| fatal("reading the agent's settings", &e));
    console::init_logger(config.debug);
    let manifest =
        config::read_manifest().unwrap_or_else(|e| fatal("reading the pod manifest", &e));
    timeline.mark(Stage::ConfigRead);
    if let Err(e) = storage::write_pod_files(&config.hostname, config.network.as_ref()) {
        log::warn!("{e}");
    }
    (config, manifest)
}

/// Serves the agent API on its vsock port, the apps' output, exec and
/// attach, and port forwarding.
async fn serve(pod: &Arc<Pod>) -> Server {
    let addr = format!("vsock://-1:{}", pod.config.vsock_port);
    let server = match rpc::serve(Arc::clone(pod), &addr).await {
        Ok(s) => s,
        Err(e) => fatal(&format!("serving the agent API on {addr}"), &e),
    };
    // Without it no output reaches the host, and none is ever acknowledged.
    if let Err(e) = rpc::start_log_stream(Arc::clone(pod), LOG_VSOCK_PORT) {
        fatal(
            &format!("serving app output on vsock port {LOG_VSOCK_PORT}"),
            &e,
        );
    }
    // Without it the pod runs, but exec and attach are refused.
    if let Err(e) = rpc::start_io_stream(Arc::clone(pod), IO_VSOCK_PORT) {
        log::warn!("exec and attach unavailable: listening on vsock port {IO_VSOCK_PORT}: {e}");
    }
    if let Err(e) = rpc::start_forwarding(FORWARD_VSOCK_PORT) {
        log::warn!(
            "port forwarding unavailable: listening on vsock port {FORWARD_VSOCK_PORT}: {e}"
        );
    }
    server
}

/// Mounts the volumes, then starts the apps; a volume that cannot be
/// mounted fails the pod instead.
fn start_pod(pod: &Arc<Pod>) {
    match storage::mount_all(&pod.manifest, &pod.config) {
        Ok(()) => {
            pod.timeline.mark(Stage::VolumesMounted);
            console::stage(Stage::VolumesMounted);
            pod::start_apps(pod);
        }
        Err(e) => {
            // The host learns this from the status; the console line helps
            // whoever reads the console file.
            console::fatal("mounting volumes", &e);
            pod.fail(e.to_string());
        }
    }
}

/// Waits until the host asks for shutdown, or the apps are done and the
/// host did not come for the final status within `linger`; returns the
/// grace period for the apps still running.
async fn shutdown_requested(pod: &Pod, linger: Duration) -> Duration {
    tokio::select! {
        grace = pod.stop_requested() => grace,
        _ = async {
            pod.wait_all().await;
            tokio::time::sleep(linger).await;
        } => {
            console::line(format_args!("no shutdown request {linger:?} after the apps exited; powering off"));
            Duration::from_millis(u64::from(pod.config.grace_ms))
        }
    }
}
