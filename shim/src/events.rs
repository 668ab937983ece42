//! Task events published to containerd (`/tasks/create`, `/tasks/exit`,
//! ...), which ctr, the CRI plugin and containerd's own task bookkeeping
//! follow. A lost event is logged, not fatal: the task API's answers stay
//! the source of truth.

use std::sync::Arc;

use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::protos::ttrpc::context::Context;
use containerd_shim::publisher::RemotePublisher;
use log::warn;

#[derive(Clone)]
pub struct Events {
    publisher: Arc<RemotePublisher>,
    namespace: String,
}

impl Events {
    pub fn new(publisher: RemotePublisher, namespace: &str) -> Self {
        Events {
            publisher: Arc::new(publisher),
            namespace: namespace.to_string(),
        }
    }

    pub async fn publish(&self, topic: &str, event: Box<dyn MessageDyn>) {
        if let Err(e) = self
            .publisher
            .publish(Context::default(), topic, &self.namespace, event)
            .await
        {
            warn!("publishing {topic}: {e}");
        }
    }
}
