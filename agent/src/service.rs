//! The ttrpc service the host talks to (see `agent/api/proto/agent.proto`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::select_all;
use kvmpod_api::protocol::{self as pb, agent_ttrpc};
use ttrpc::r#async::{Server, ServerStreamSender, TtrpcContext};

use crate::logbuf::Stream;
use crate::pod::{AppRecord, Pod};

pub struct AgentService {
    pod: Arc<Pod>,
}

fn rpc_error(code: ttrpc::Code, message: String) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, message))
}

impl AgentService {
    /// The apps a request names: one by name, or all for "".
    fn select(&self, app: &str) -> ttrpc::Result<Vec<Arc<AppRecord>>> {
        if app.is_empty() {
            return Ok(self.pod.apps.clone());
        }
        match self.pod.app(app) {
            Some(a) => Ok(vec![Arc::clone(a)]),
            None => {
                let known: Vec<&str> = self.pod.apps.iter().map(|a| a.name()).collect();
                Err(rpc_error(
                    ttrpc::Code::NOT_FOUND,
                    format!(
                        "no app named {app:?} in this pod (apps: {})",
                        known.join(", ")
                    ),
                ))
            }
        }
    }
}

#[async_trait]
impl agent_ttrpc::Agent for AgentService {
    async fn status(
        &self,
        _ctx: &TtrpcContext,
        _req: pb::StatusRequest,
    ) -> ttrpc::Result<pb::PodStatus> {
        Ok(self.pod.status())
    }

    async fn wait(
        &self,
        _ctx: &TtrpcContext,
        req: pb::WaitRequest,
    ) -> ttrpc::Result<pb::PodStatus> {
        for app in self.select(&req.app)? {
            app.wait().await;
        }
        Ok(self.pod.status())
    }

    async fn logs(
        &self,
        _ctx: &TtrpcContext,
        req: pb::LogsRequest,
        sink: ServerStreamSender<pb::LogChunk>,
    ) -> ttrpc::Result<()> {
        let apps = self.select(&req.app)?;
        // Subscribe before the first read, so no append is missed between a
        // read and the wait that follows it.
        let mut subs: Vec<_> = apps.iter().map(|a| a.logs.subscribe()).collect();
        let mut cursors = vec![0u64; apps.len()];
        loop {
            let mut all_finished = true;
            for (app, cursor) in apps.iter().zip(cursors.iter_mut()) {
                let read = app.logs.read_from(*cursor);
                let mut dropped = read.dropped;
                for c in read.chunks {
                    let mut msg = pb::LogChunk::new();
                    msg.app = app.name().to_string();
                    msg.stream = match c.stream {
                        Stream::Stdout => pb::LogStream::LOG_STREAM_STDOUT,
                        Stream::Stderr => pb::LogStream::LOG_STREAM_STDERR,
                    }
                    .into();
                    msg.data = c.data;
                    msg.dropped = std::mem::take(&mut dropped);
                    msg.boottime_ns = c.boottime_ns;
                    if sink.send(&msg).await.is_err() {
                        return Ok(()); // the client went away
                    }
                }
                *cursor = read.next;
                all_finished &= read.finished;
            }
            if !req.follow || all_finished {
                return Ok(());
            }
            let changed = subs.iter_mut().map(|rx| Box::pin(rx.changed()));
            let (res, _, _) = select_all(changed).await;
            if res.is_err() {
                return Ok(());
            }
        }
    }

    async fn shutdown(
        &self,
        _ctx: &TtrpcContext,
        req: pb::ShutdownRequest,
    ) -> ttrpc::Result<pb::ShutdownResponse> {
        let ms = if req.grace_ms == 0 {
            self.pod.config.grace_ms
        } else {
            req.grace_ms
        };
        if !self.pod.request_stop(Duration::from_millis(u64::from(ms))) {
            log::debug!("shutdown already under way");
        }
        Ok(pb::ShutdownResponse::new())
    }
}

/// Serves the agent API on `addr` (`vsock://-1:<port>` in the guest).
pub async fn serve(pod: Arc<Pod>, addr: &str) -> ttrpc::Result<Server> {
    let service = agent_ttrpc::create_agent(Arc::new(AgentService { pod }));
    let mut server = Server::new().bind(addr)?.register_service(service);
    server.start().await?;
    Ok(server)
}
