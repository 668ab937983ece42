//! `containerd-shim-kvmpod-v2`: containerd's runtime v2 shim for kvmpod
//! (runtime `io.containerd.kvmpod.v2`). containerd runs it as `start` to
//! get a shim for a task (a daemon of its own, reached over ttrpc), as
//! `delete` to clean up after a shim that died, and the daemon serves the
//! task API (`task.rs`). Each task is a kvmpod pod, started and watched
//! through `host-ctl`.

mod error;
mod events;
mod guest;
mod hostctl;
mod mounts;
mod oom;
mod rootfs;
mod spec;
mod stdio;
mod task;

use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim::api::DeleteResponse;
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Config, ExitSignal, Flags, Shim, StartOpts};

/// The bundle file that names what `delete` removes: the task's pod, or
/// `<pod> <app>` for a container of a pod sandbox.
pub const POD_FILE: &str = "kvmpod-pod-id";

struct KvmpodShim {
    namespace: String,
    exit: Arc<ExitSignal>,
}

#[async_trait]
impl Shim for KvmpodShim {
    type T = task::Service;

    async fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        KvmpodShim {
            namespace: args.namespace.clone(),
            exit: Arc::new(ExitSignal::default()),
        }
    }

    /// The containers of one Kubernetes pod share their sandbox's shim (as
    /// runc's shim groups them), and so its VM: a second `start` finds the
    /// sandbox shim's socket in use and hands containerd its address.
    async fn start_shim(&mut self, opts: StartOpts) -> containerd_shim::Result<String> {
        let id = opts.id.clone();
        // containerd starts the shim in the bundle.
        let group = spec::read(std::path::Path::new("."))
            .map(|s| s.group(&id))
            .unwrap_or_else(|_| id.clone());
        let address = containerd_shim::spawn(opts, &group, Vec::new()).await?;
        // containerd reads it back when it restarts.
        containerd_shim::util::write_str_to_file("address", &address).await?;
        Ok(address)
    }

    async fn delete_shim(&mut self) -> containerd_shim::Result<DeleteResponse> {
        let bundle = std::env::current_dir().map_err(|e| {
            containerd_shim::Error::Other(format!("the bundle (working directory): {e}"))
        })?;
        task::clean_up(&bundle).await?;
        Ok(DeleteResponse {
            exit_status: 137,
            exited_at: MessageField::some(containerd_shim::util::timestamp()?),
            ..Default::default()
        })
    }

    async fn wait(&mut self) {
        self.exit.wait().await;
    }

    async fn create_task_service(&self, publisher: RemotePublisher) -> Self::T {
        task::Service::new(&self.namespace, publisher, Arc::clone(&self.exit))
    }
}

#[tokio::main]
async fn main() {
    // The shim waits for its own children (host-ctl commands): the crate's
    // reaper would take their exit statuses first (ECHILD), and as a
    // subreaper the shim would collect the pods' keepers, which must
    // outlive it. Set before the crate installs its signal handlers, which
    // is before `Shim::new`.
    let config = Config {
        no_reaper: true,
        no_sub_reaper: true,
        ..Config::default()
    };
    containerd_shim::run::<KvmpodShim>("io.containerd.kvmpod.v2", Some(config)).await;
}
