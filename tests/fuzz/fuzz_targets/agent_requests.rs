//! The agent's request handling on arbitrary bytes from a client: the real
//! ttrpc server of the agent, serving a pod whose apps have exited, gets
//! each input as raw frames on a fresh connection, and must still answer a
//! status request afterwards. A crash, a hang or a refused status fails.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use kvmpod_agent::pod::{Pod, Stream};
use kvmpod_agent::process::{Exit, Reaper};
use kvmpod_agent::timeline::Timeline;
use kvmpod_api::config::AgentConfig;
use kvmpod_api::protocol::agent_ttrpc::AgentClient;
use kvmpod_api::protocol::StatusRequest;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

struct Harness {
    rt: tokio::runtime::Runtime,
    socket: std::path::PathBuf,
    client: AgentClient,
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let manifest = kvmpod_api::validate::parse(
            r#"{"apps": [{"name": "a", "rootfs": "/", "exec": ["x"], "stdin": true},
                         {"name": "b", "rootfs": "/", "exec": ["y"]}]}"#,
        )
        .expect("the fixed manifest parses");
        let dir = std::env::temp_dir().join(format!("kvmpod-fuzz-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let socket = dir.join("agent.sock");
        let _ = std::fs::remove_file(&socket);
        let server = rt.block_on(async {
            let pod = Pod::new(
                manifest,
                AgentConfig::default(),
                Timeline::default(),
                Reaper::new(),
            );
            // Exited apps: every follow ends, nothing waits forever.
            for app in &pod.apps() {
                app.logs.append(Stream::Stdout, b"some output\n", 1);
                app.set_exited(Exit { code: 0, signal: 0 }, 2);
                app.logs.close();
            }
            pod.app_done();
            kvmpod_agent::rpc::serve(Arc::clone(&pod), &format!("unix://{}", socket.display()))
                .await
                .expect("the server starts")
        });
        // Serves for the life of the fuzzing process.
        std::mem::forget(server);
        let addr = format!("unix://{}", socket.display());
        let client = rt.block_on(async {
            AgentClient::new(
                ttrpc::r#async::Client::connect(&addr)
                    .await
                    .expect("the agent accepts"),
            )
        });
        Harness { rt, socket, client }
    })
}

fuzz_target!(|data: &[u8]| {
    let h = harness();
    h.rt.block_on(async {
        if let Ok(mut raw) = UnixStream::connect(&h.socket).await {
            let _ = raw.write_all(data).await;
            // Until the server answers or gives up on the connection.
            let mut sink = vec![0u8; 4096];
            let _ = tokio::time::timeout(Duration::from_millis(5), raw.read(&mut sink)).await;
        }
        let st = tokio::time::timeout(
            Duration::from_secs(5),
            h.client.status(
                ttrpc::context::with_timeout(5_000_000_000),
                &StatusRequest::new(),
            ),
        )
        .await
        .expect("the agent answers in time")
        .expect("the agent answers a status request");
        assert_eq!(st.apps.len(), 2);
    });
});
