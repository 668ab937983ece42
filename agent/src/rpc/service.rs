//! The ttrpc service the host talks to (see `api/proto/agent.proto`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::select_all;
use kvmpod_api::addapp::AddApp;
use kvmpod_api::protocol::{self as pb, agent_ttrpc};
use ttrpc::r#async::{Server, ServerStreamSender, TtrpcContext};

use super::exec::valid_signal;
use super::RpcError;
use crate::pod::{self, AppRecord, Chunk, Item, Pod, Stream};
use crate::process::signal_group;

struct AgentService {
    pod: Arc<Pod>,
}

impl AgentService {
    /// The apps a request names: one by name, or all for "".
    fn select(&self, app: &str) -> Result<Vec<Arc<AppRecord>>, RpcError> {
        if app.is_empty() {
            return Ok(self.pod.apps());
        }
        match self.pod.app(app) {
            Some(a) => Ok(vec![a]),
            None => Err(RpcError::unknown_app(&self.pod, app)),
        }
    }
}

#[async_trait]
impl agent_ttrpc::Agent for AgentService {
    async fn ping(
        &self,
        _ctx: &TtrpcContext,
        _req: pb::PingRequest,
    ) -> ttrpc::Result<pb::PingResponse> {
        Ok(pb::PingResponse::new())
    }

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
        if req.app.is_empty() {
            // Apps added meanwhile are waited for too.
            self.pod.wait_all().await;
        } else {
            for app in self.select(&req.app)? {
                app.wait().await;
            }
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
        if req.offset != 0 && apps.len() != 1 {
            return Err(RpcError::OffsetNeedsApp.into());
        }
        let cursors = vec![req.offset; apps.len()];
        stream_logs(&apps, cursors, req.follow, |msg| {
            let sink = &sink;
            async move { sink.send(&msg).await }
        })
        .await;
        Ok(())
    }

    async fn signal(
        &self,
        _ctx: &TtrpcContext,
        req: pb::SignalRequest,
    ) -> ttrpc::Result<pb::SignalResponse> {
        let n = valid_signal(req.signal)?;
        let mut sent = 0;
        for app in self.select(&req.app)? {
            if let Some(pid) = app.running_pid() {
                signal_group(pid, n);
                sent += 1;
            }
        }
        if sent == 0 {
            return Err(if req.app.is_empty() {
                RpcError::NoneRunning
            } else {
                RpcError::NotRunning(req.app)
            }
            .into());
        }
        Ok(pb::SignalResponse::new())
    }

    async fn add_app(
        &self,
        _ctx: &TtrpcContext,
        req: pb::AddAppRequest,
    ) -> ttrpc::Result<pb::AppStatus> {
        let spec: AddApp =
            serde_json::from_str(&req.spec).map_err(|e| RpcError::BadAddApp(e.to_string()))?;
        let record = pod::add_app(&self.pod, spec).map_err(RpcError::from)?;
        Ok(record.wire_status())
    }

    async fn remove_app(
        &self,
        _ctx: &TtrpcContext,
        req: pb::RemoveAppRequest,
    ) -> ttrpc::Result<pb::RemoveAppResponse> {
        pod::remove_app(&self.pod, &req.app, req.force)
            .await
            .map_err(RpcError::from)?;
        Ok(pb::RemoveAppResponse::new())
    }

    async fn stats(
        &self,
        _ctx: &TtrpcContext,
        req: pb::StatsRequest,
    ) -> ttrpc::Result<pb::StatsResponse> {
        let mut out = pb::StatsResponse::new();
        for app in self.select(&req.app)? {
            let u = app.cgroup.get().map(|cg| cg.usage()).unwrap_or_default();
            let mut s = pb::AppStats::new();
            s.app = app.name().to_string();
            s.memory_current = u.memory_current;
            s.memory_peak = u.memory_peak;
            s.memory_max = u.memory_max;
            s.cpu_usage_usec = u.cpu_usage_usec;
            s.pids_current = u.pids_current;
            s.oom_kills = u.oom_kills;
            out.apps.push(s);
        }
        out.interfaces = crate::network::counters()
            .iter()
            .map(crate::pod::interface_stats)
            .collect();
        Ok(out)
    }

    async fn top(
        &self,
        _ctx: &TtrpcContext,
        req: pb::TopRequest,
    ) -> ttrpc::Result<pb::TopResponse> {
        let apps = self.select(&req.app)?;
        let mut out = pb::TopResponse::new();
        out.processes = super::top::list(&apps).map_err(RpcError::from)?;
        Ok(out)
    }

    async fn events(
        &self,
        _ctx: &TtrpcContext,
        req: pb::EventsRequest,
        sink: ServerStreamSender<pb::Event>,
    ) -> ttrpc::Result<()> {
        let mut changed = self.pod.events.subscribe();
        let mut after = req.after;
        loop {
            for e in self.pod.events.after(after) {
                after = e.seq;
                let last = e.kind.enum_value_or_default() == pb::EventKind::EVENT_KIND_POD_EXITED;
                if sink.send(&e).await.is_err() || (last && req.follow) {
                    return Ok(());
                }
            }
            if !req.follow || changed.changed().await.is_err() {
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

/// Output a follower takes from a buffer at once.
const FOLLOW_BATCH: usize = 1 << 20;

/// The wire form of a chunk, with the bytes the reader missed before it.
fn log_chunk(app: &AppRecord, c: Chunk, dropped: u64) -> pb::LogChunk {
    let mut msg = pb::LogChunk::new();
    msg.app = app.name().to_string();
    msg.stream = match c.stream {
        Stream::Stdout => pb::LogStream::LOG_STREAM_STDOUT,
        Stream::Stderr => pb::LogStream::LOG_STREAM_STDERR,
    }
    .into();
    msg.offset = c.offset;
    msg.data = c.data.as_slice().to_vec();
    msg.dropped = dropped;
    msg.boottime_ns = c.boottime_ns;
    msg
}

/// Sends the apps' output from `cursors` on (one per app) through `send`,
/// following new output when `follow`, until every app is done and
/// drained, or the client goes away. It acknowledges nothing: what it
/// reads stays for the log stream, and output the host already persisted
/// (or that was dropped) counts as missed.
async fn stream_logs<F, Fut>(apps: &[Arc<AppRecord>], mut cursors: Vec<u64>, follow: bool, send: F)
where
    F: Fn(pb::LogChunk) -> Fut,
    Fut: std::future::Future<Output = ttrpc::Result<()>>,
{
    // Subscribe before the first read, so no append is missed between a
    // read and the wait that follows it.
    let mut subs: Vec<_> = apps.iter().map(|a| a.logs.subscribe()).collect();
    let mut missed = vec![0u64; apps.len()];
    let batch = if follow { FOLLOW_BATCH } else { usize::MAX };
    loop {
        let (mut all_finished, mut progressed) = (true, false);
        for ((app, cursor), missed) in apps.iter().zip(cursors.iter_mut()).zip(missed.iter_mut()) {
            let read = app.logs.read(*cursor, batch);
            progressed |= !read.items.is_empty();
            for item in read.items {
                *missed += item.offset().saturating_sub(*cursor);
                *cursor = item.end();
                match item {
                    Item::Dropped { count, .. } => *missed += count,
                    Item::Data(c) => {
                        if send(log_chunk(app, c, std::mem::take(missed)))
                            .await
                            .is_err()
                        {
                            return; // the client went away
                        }
                    }
                }
            }
            *cursor = read.next;
            all_finished &= read.finished;
        }
        if !follow || all_finished {
            return;
        }
        if progressed {
            continue;
        }
        let changed = subs.iter_mut().map(|rx| Box::pin(rx.changed()));
        let (res, _, _) = select_all(changed).await;
        if res.is_err() {
            return;
        }
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
    use crate::process::{Exit, Reaper};
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
        pod.apps()[0].logs.append(Stream::Stdout, b"hello\n", 1);
        pod.apps()[0].logs.append(Stream::Stderr, b"oops\n", 2);

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
        pod.apps()[1].logs.append(Stream::Stdout, b"late\n", 3);
        for (i, app) in pod.apps().iter().enumerate() {
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
        // A stream reports its error on the first receive.
        let mut rx = client.logs(ctx(), &l).await.unwrap();
        let (code, _) = rpc_code(rx.recv().await.unwrap_err());
        assert_eq!(code, ttrpc::Code::NOT_FOUND);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn top_lists_no_process_of_idle_apps_and_names_the_apps_it_has() {
        let (_d, _pod, client, _server) = setup().await;
        let top = client.top(ctx(), &pb::TopRequest::new()).await.unwrap();
        assert_eq!(top.processes.len(), 0, "{top:?}");
        let mut req = pb::TopRequest::new();
        req.app = "c".into();
        let (code, msg) = rpc_code(client.top(ctx(), &req).await.unwrap_err());
        assert_eq!(code, ttrpc::Code::NOT_FOUND);
        assert_eq!(msg, "no app named \"c\" in this pod (apps: a, b)");
    }

    fn rpc_code(e: ttrpc::Error) -> (ttrpc::Code, String) {
        match e {
            ttrpc::Error::RpcStatus(s) => (s.code(), s.message().to_string()),
            other => panic!("expected an RPC status, got {other:?}"),
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn bad_signals_and_idle_apps_are_refused() {
        let (_d, _pod, client, _server) = setup().await;
        for bad in [0, -1, 65, i32::MAX, i32::MIN] {
            let mut req = pb::SignalRequest::new();
            req.app = "a".into();
            req.signal = bad;
            let (code, msg) = rpc_code(client.signal(ctx(), &req).await.unwrap_err());
            assert_eq!(code, ttrpc::Code::INVALID_ARGUMENT, "{bad}");
            assert!(msg.contains("is not a signal number"), "{msg}");
        }
        let mut req = pb::SignalRequest::new();
        req.app = "a".into();
        req.signal = 15;
        let (code, msg) = rpc_code(client.signal(ctx(), &req).await.unwrap_err());
        assert_eq!(code, ttrpc::Code::FAILED_PRECONDITION);
        assert_eq!(msg, "app \"a\" is not running");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_hostile_frame_does_not_take_the_server_down() {
        use tokio::io::AsyncWriteExt;
        let (dir, _pod, _client, _server) = setup().await;
        let path = dir.path().join("agent.sock");
        // A ttrpc header announcing a 4 GiB request, then garbage.
        let mut raw = tokio::net::UnixStream::connect(&path).await.unwrap();
        raw.write_all(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1, 1, 0])
            .await
            .unwrap();
        raw.write_all(&[0xab; 64]).await.unwrap();
        drop(raw);
        // And a request whose body is not a protobuf message.
        let mut raw = tokio::net::UnixStream::connect(&path).await.unwrap();
        raw.write_all(&[0, 0, 0, 8, 0, 0, 0, 3, 1, 0])
            .await
            .unwrap();
        raw.write_all(&[0xff; 8]).await.unwrap();
        drop(raw);
        let addr = format!("unix://{}", path.display());
        let fresh = AgentClient::new(ttrpc::r#async::Client::connect(&addr).await.unwrap());
        let st = fresh
            .status(ctx(), &pb::StatusRequest::new())
            .await
            .unwrap();
        assert_eq!(st.apps.len(), 2);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn logs_offsets_apply_to_one_app() {
        let (_d, pod, client, _server) = setup().await;
        pod.apps()[0].logs.append(Stream::Stdout, b"0123456789", 1);
        let mut req = pb::LogsRequest::new();
        req.app = "a".into();
        req.offset = 4;
        let got = drain(client.logs(ctx(), &req).await.unwrap()).await;
        assert_eq!(got[0].2, b"456789");
        let mut req = pb::LogsRequest::new();
        req.offset = 4;
        let mut rx = client.logs(ctx(), &req).await.unwrap();
        let (code, _) = rpc_code(rx.recv().await.unwrap_err());
        assert_eq!(code, ttrpc::Code::INVALID_ARGUMENT);
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
