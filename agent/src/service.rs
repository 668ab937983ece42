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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logbuf::Stream;
    use crate::reaper::{Exit, Reaper};
    use crate::timeline::Timeline;
    use kvmpod_api::config::AgentConfig;
    use kvmpod_api::protocol::agent_ttrpc::AgentClient;

    fn ctx() -> ttrpc::context::Context {
        ttrpc::context::with_timeout(10_000_000_000)
    }

    async fn setup() -> (tempfile::TempDir, Arc<Pod>, AgentClient, Server) {
        let manifest = kvmpod_api::validate::parse(
            r#"{"apps": [{"name": "a", "rootfs": "/", "exec": ["x"]}, {"name": "b", "rootfs": "/", "exec": ["y"]}]}"#,
        )
        .unwrap();
        let pod = Pod::new(
            manifest,
            AgentConfig::default(),
            Timeline::default(),
            Reaper::new(),
        );
        let dir = tempfile::tempdir().unwrap();
        let addr = format!("unix://{}", dir.path().join("agent.sock").display());
        let server = serve(Arc::clone(&pod), &addr).await.unwrap();
        let client = AgentClient::new(ttrpc::r#async::Client::connect(&addr).await.unwrap());
        (dir, pod, client, server)
    }

    async fn drain(
        mut rx: ttrpc::r#async::ClientStreamReceiver<pb::LogChunk>,
    ) -> Vec<(String, bool, Vec<u8>, u64)> {
        let mut got = Vec::new();
        while let Some(c) = rx.recv().await.unwrap() {
            let err = c.stream.enum_value_or_default() == pb::LogStream::LOG_STREAM_STDERR;
            got.push((c.app, err, c.data, c.dropped));
        }
        got
    }

    #[tokio::test(flavor = "current_thread")]
    async fn status_logs_and_wait_over_ttrpc() {
        let (_d, pod, client, _server) = setup().await;
        pod.apps[0].logs.append(Stream::Stdout, b"hello\n", 1);
        pod.apps[0].logs.append(Stream::Stderr, b"oops\n", 2);

        let st = client
            .status(ctx(), &pb::StatusRequest::new())
            .await
            .unwrap();
        let names: Vec<&str> = st.apps.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(
            st.apps[0].state.enum_value_or_default(),
            pb::AppState::APP_STATE_PENDING
        );

        let mut req = pb::LogsRequest::new();
        req.app = "a".into();
        let got = drain(client.logs(ctx(), &req).await.unwrap()).await;
        assert_eq!(
            got,
            [
                ("a".to_string(), false, b"hello\n".to_vec(), 0),
                ("a".to_string(), true, b"oops\n".to_vec(), 0)
            ]
        );

        // Following every app: the stream ends once both are done.
        let mut req = pb::LogsRequest::new();
        req.follow = true;
        let follow = tokio::spawn(drain(client.logs(ctx(), &req).await.unwrap()));
        let waiter = {
            let client = client.clone();
            tokio::spawn(async move {
                let mut w = pb::WaitRequest::new();
                w.app = "b".into();
                client.wait(ttrpc::context::with_timeout(0), &w).await
            })
        };
        tokio::task::yield_now().await;
        pod.apps[1].logs.append(Stream::Stdout, b"late\n", 3);
        for (i, app) in pod.apps.iter().enumerate() {
            app.set_exited(
                Exit {
                    code: i as i32 * 7,
                    signal: 0,
                },
                4,
            );
            app.logs.close();
        }
        let st = waiter.await.unwrap().unwrap();
        assert_eq!(st.apps[1].exit_code, 7);
        let got = follow.await.unwrap();
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[2], ("b".to_string(), false, b"late\n".to_vec(), 0));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn unknown_apps_are_not_found_errors() {
        let (_d, _pod, client, _server) = setup().await;
        let mut w = pb::WaitRequest::new();
        w.app = "nope".into();
        let e = client.wait(ctx(), &w).await.unwrap_err();
        let ttrpc::Error::RpcStatus(status) = e else {
            panic!("expected an RPC status, got {e:?}")
        };
        assert_eq!(status.code(), ttrpc::Code::NOT_FOUND);
        assert_eq!(
            status.message(),
            "no app named \"nope\" in this pod (apps: a, b)"
        );
        let mut l = pb::LogsRequest::new();
        l.app = "../etc".into();
        assert!(
            client.logs(ctx(), &l).await.is_err() || {
                // Streams report the error on the first receive.
                let mut rx = client.logs(ctx(), &l).await.unwrap();
                rx.recv().await.is_err()
            }
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn shutdown_is_requested_once_with_its_grace() {
        let (_d, pod, client, _server) = setup().await;
        let mut req = pb::ShutdownRequest::new();
        req.grace_ms = 1234;
        client.shutdown(ctx(), &req).await.unwrap();
        req.grace_ms = 99;
        client.shutdown(ctx(), &req).await.unwrap();
        assert_eq!(pod.stop_requested().await, Duration::from_millis(1234));
    }
}
