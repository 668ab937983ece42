//! The Kubernetes path: containerd's CRI plugin (Debian's containerd 1.6,
//! started by the test) with a `kvmpod` runtime handler, driven the way the
//! kubelet drives it, by a CRI client: a pod sandbox, then two containers
//! in it sharing an emptyDir-style host directory, their status and logs
//! at the CRI log path, an ExecSync, then the sandbox stopped and removed.
//! The whole Kubernetes pod is one kvmpod pod: one VM.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, ContainerState, ContainerStatusRequest,
    CreateContainerRequest, ExecSyncRequest, ImageSpec, LinuxContainerConfig,
    LinuxContainerSecurityContext, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, Mount,
    NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxMetadata, PodSandboxStatusRequest,
    RemoveContainerRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
    StopContainerRequest, StopPodSandboxRequest,
};
use kvmpod_tests::containerd::{Containerd, Cri, CRI_HANDLER, CRI_NAMESPACE};
use kvmpod_tests::{Fixture, CMD};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

const IMAGE: &str = "docker.io/kvmpod/test:1";
const PAUSE: &str = "docker.io/kvmpod/pause:1";

type Client = RuntimeServiceClient<Channel>;

/// A CRI client on containerd's socket, as the kubelet connects.
async fn connect(socket: &Path) -> Client {
    let socket = socket.to_path_buf();
    let channel = Endpoint::try_from("http://[::]:50051")
        .expect("an endpoint")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
        }))
        .await
        .expect("connecting to containerd's CRI service");
    RuntimeServiceClient::new(channel)
}

fn sandbox_config(logs: &Path) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "web".into(),
            uid: "kvmpod-test-uid".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: "web-pod".into(),
        log_directory: logs.display().to_string(),
        // The node's network: no CNI plugin is configured here.
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Node as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Container `name` running `script`, with `shared` at `/shared` and, as
/// the kubelet gives every container, a file of its own at
/// `/dev/termination-log`: `<shared>/../<name>-termination-log`.
fn container(name: &str, script: &str, shared: &Path) -> ContainerConfig {
    let termination = shared.with_file_name(format!("{name}-termination-log"));
    fs::write(&termination, "").expect("creating the termination log");
    // As the kubelet makes it: any container user may write it.
    fs::set_permissions(&termination, fs::Permissions::from_mode(0o666)).unwrap();
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: IMAGE.into(),
            ..Default::default()
        }),
        command: vec!["/bin/sh".into(), "-c".into(), script.into()],
        mounts: vec![
            Mount {
                container_path: "/shared".into(),
                host_path: shared.display().to_string(),
                ..Default::default()
            },
            Mount {
                container_path: "/dev/termination-log".into(),
                host_path: termination.display().to_string(),
                ..Default::default()
            },
        ],
        log_path: format!("{name}.log"),
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                supplemental_groups: vec![1234],
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Waits until the CRI log file `path` has a line ending in `text`; its
/// lines' messages.
fn wait_for_cri_log(path: &Path, text: &str, containerd: &Containerd) -> Vec<String> {
    let until = Instant::now() + Duration::from_secs(90);
    loop {
        let lines: Vec<String> = fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            // "<time> <stream> <F|P> <message>"
            .filter_map(|l| l.splitn(4, ' ').nth(3).map(str::to_string))
            .collect();
        if lines.iter().any(|l| l == text) {
            return lines;
        }
        assert!(
            Instant::now() < until,
            "{} never showed {text:?}: {lines:?}\n{}",
            path.display(),
            containerd.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn import(containerd: &Containerd, archive: &Path) {
    let import = containerd.ctr_in(
        CRI_NAMESPACE,
        &["images", "import", archive.to_str().unwrap()],
        CMD,
    );
    assert_eq!(
        import.code,
        Some(0),
        "{}\n{}",
        import.dump(),
        containerd.log()
    );
}

/// Creates and starts container `name` running `script` in `sandbox`.
async fn run_container(
    cri: &mut Client,
    containerd: &Containerd,
    (sandbox, config): (&str, &PodSandboxConfig),
    (name, script): (&str, &str),
    shared: &Path,
) -> String {
    let id = cri
        .create_container(CreateContainerRequest {
            pod_sandbox_id: sandbox.to_string(),
            config: Some(container(name, script, shared)),
            sandbox_config: Some(config.clone()),
        })
        .await
        .unwrap_or_else(|e| panic!("CreateContainer {name}: {e}\n{}", containerd.log()))
        .into_inner()
        .container_id;
    cri.start_container(StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap_or_else(|e| panic!("StartContainer {name}: {e}\n{}", containerd.log()));
    id
}

async fn assert_running(cri: &mut Client, id: &str) {
    let st = cri
        .container_status(ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: false,
        })
        .await
        .expect("ContainerStatus")
        .into_inner()
        .status
        .expect("a status");
    assert_eq!(st.state, ContainerState::ContainerRunning as i32, "{st:?}");
}

/// ExecSync in the reader: the shared file, the pod's hostname, a status.
async fn exec_sync(cri: &mut Client, containerd: &Containerd, id: &str) {
    let script = "cat /shared/note; hostname; id -G | grep -qw 1234 && echo in 1234; exit 3";
    let exec = cri
        .exec_sync(ExecSyncRequest {
            container_id: id.to_string(),
            cmd: vec!["/bin/sh".into(), "-c".into(), script.into()],
            timeout: 60,
        })
        .await
        .unwrap_or_else(|e| panic!("ExecSync: {e}\n{}", containerd.log()))
        .into_inner();
    assert_eq!(
        String::from_utf8_lossy(&exec.stdout),
        "from the writer\nweb-pod\nin 1234\n"
    );
    assert_eq!(exec.exit_code, 3);
}

/// The kubelet stops and removes one container while the pod runs: its
/// app leaves the pod (its mounts and record with it); the pod stays.
/// Stops and removes the sandbox, as the kubelet does when a pod is deleted.
async fn end_sandbox(cri: &mut Client, containerd: &Containerd, sandbox: String) {
    cri.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: sandbox.clone(),
    })
    .await
    .unwrap_or_else(|e| panic!("StopPodSandbox: {e}\n{}", containerd.log()));
    cri.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: sandbox,
    })
    .await
    .unwrap_or_else(|e| panic!("RemovePodSandbox: {e}\n{}", containerd.log()));
}

async fn remove_one_container(fx: &Fixture, cri: &mut Client, containerd: &Containerd, id: &str) {
    cri.stop_container(StopContainerRequest {
        container_id: id.to_string(),
        timeout: 0,
    })
    .await
    .unwrap_or_else(|e| panic!("StopContainer: {e}\n{}", containerd.log()));
    cri.remove_container(RemoveContainerRequest {
        container_id: id.to_string(),
    })
    .await
    .unwrap_or_else(|e| panic!("RemoveContainer: {e}\n{}", containerd.log()));
    let pods = kvmpod_tests::fixture_pods(fx);
    assert_eq!(pods.len(), 1, "{pods:?}");
    let st = fx.host_ctl(&["status", &pods[0], "--format", "json"], CMD);
    assert_eq!(st.code, Some(0), "{}", st.dump());
    let app = &id[..63];
    let v: serde_json::Value = serde_json::from_str(&st.stdout).expect("status JSON");
    let names = |list: &serde_json::Value| -> Vec<String> {
        list.as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["name"].as_str().map(str::to_string))
            .collect()
    };
    for list in [&v["apps"], &v["live"]["apps"]] {
        assert!(
            !names(list).iter().any(|n| n == app),
            "{app} is still in the pod\n{}\n{}",
            st.dump(),
            containerd.log()
        );
    }
    assert_eq!(v["state"], "running", "{}", st.dump());
}

/// The pod, as the kubelet runs it: sandbox, two containers sharing a
/// directory, their status, logs and an exec; then stop and remove.
async fn kubelet(fx: &Fixture, containerd: &Containerd, logs: &Path, shared: &Path) {
    let mut cri = connect(&containerd.socket).await;
    let config = sandbox_config(logs);
    let sandbox = cri
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: CRI_HANDLER.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", containerd.log()))
        .into_inner()
        .pod_sandbox_id;
    assert_eq!(fx.pods_created(), 1, "the sandbox is a pod");

    let writer = "echo from the writer > /shared/note; echo done > /dev/termination-log; \
                  echo writer wrote; exec sleep 600";
    let reader =
        "while [ ! -e /shared/note ]; do sleep 0.1; done; cat /shared/note; exec sleep 600";
    let mut ids = Vec::new();
    for container in [("writer", writer), ("reader", reader)] {
        let pod = (sandbox.as_str(), &config);
        ids.push(run_container(&mut cri, containerd, pod, container, shared).await);
    }
    // Both containers are apps of the sandbox's pod: still one VM.
    assert_eq!(fx.pods_created(), 1, "a container got a VM of its own");
    for id in &ids {
        assert_running(&mut cri, id).await;
    }
    wait_for_cri_log(&logs.join("writer.log"), "writer wrote", containerd);
    let read = wait_for_cri_log(&logs.join("reader.log"), "from the writer", containerd);
    assert_eq!(read, ["from the writer"]);
    // A single file bound in reaches the host file.
    let termination = shared.with_file_name("writer-termination-log");
    assert_eq!(
        fs::read_to_string(&termination).unwrap(),
        "done\n",
        "{}",
        fs::read_to_string(logs.join("writer.log")).unwrap_or_default()
    );
    exec_sync(&mut cri, containerd, &ids[1]).await;
    remove_one_container(fx, &mut cri, containerd, &ids[0]).await;

    end_sandbox(&mut cri, containerd, sandbox).await;
}

#[test]
fn a_kubernetes_pod_runs_in_one_vm() {
    let fx = Fixture::new();
    let mut containerd = Containerd::start_cri(
        &fx,
        Cri {
            sandbox_image: PAUSE.into(),
            cni: None,
        },
    );
    let (image, pause) = (fx.path().join("test.tar"), fx.path().join("pause.tar"));
    kvmpod_tests::images::write_test_image(&fx.root(), &image, "kvmpod/test:1");
    kvmpod_tests::images::write_pause_image(&fx.root(), &pause, "kvmpod/pause:1");
    import(&containerd, &image);
    import(&containerd, &pause);
    let logs = fx.host_dir("pod-logs", &[]);
    let shared = fx.host_dir("empty-dir", &[]);
    // The image's user (65534) writes there.
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).unwrap();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(kubelet(&fx, &containerd, &logs, &shared));
    assert_eq!(fx.pods_created(), 0, "the sandbox's pod is left behind");
    containerd.stop();
    drop(containerd);
    fx.finish();
}

/// The pod's CNI bridge, deleted from the host when the test ends.
struct Bridge(String);

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.0])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// The kubelet's part: a CNI pod, its address, a container serving on it.
async fn cni_kubelet(containerd: &Containerd, logs: &Path, shared: &Path) {
    let mut cri = connect(&containerd.socket).await;
    let mut config = sandbox_config(logs);
    config.linux = None; // the pod's own network, by CNI
    let sandbox = cri
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: CRI_HANDLER.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", containerd.log()))
        .into_inner()
        .pod_sandbox_id;
    let status = cri
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: sandbox.clone(),
            verbose: false,
        })
        .await
        .expect("PodSandboxStatus")
        .into_inner()
        .status
        .expect("a sandbox status");
    let ip = status.network.expect("a pod network").ip;
    assert!(!ip.is_empty(), "no pod IP");
    let script = "mkdir -p /tmp/www; echo served from the pod > /tmp/www/index.html; \
                  exec httpd -f -p 8080 -h /tmp/www";
    let web = run_container(
        &mut cri,
        containerd,
        (&sandbox, &config),
        ("web", script),
        shared,
    )
    .await;
    let exec = cri
        .exec_sync(ExecSyncRequest {
            container_id: web.clone(),
            cmd: vec![
                "ip".into(),
                "-4".into(),
                "addr".into(),
                "show".into(),
                "eth0".into(),
            ],
            timeout: 60,
        })
        .await
        .expect("ExecSync")
        .into_inner();
    let shown = String::from_utf8_lossy(&exec.stdout);
    assert!(shown.contains(&format!("inet {ip}/24")), "{shown}");
    let page = kvmpod_tests::net::wait_for_http(&format!("{ip}:8080"), "/", "served from the pod");
    assert!(page.contains("served from the pod"), "{page:?}");
    end_sandbox(&mut cri, containerd, sandbox).await;
}

/// A pod on a CNI network (not the node's): containerd makes its network
/// namespace and runs the bridge plugin; the VM takes the namespace's
/// interface, so the pod's address (what PodSandboxStatus reports) is the
/// guest's, and the host reaches a container's server on it.
#[test]
fn a_cni_pod_gets_its_address_in_its_vm() {
    let fx = Fixture::new();
    let tag = std::process::id() % 10_000;
    let bridge = Bridge(format!("kvmpodcri{tag}"));
    let subnet = format!("10.{}.{}.0/24", 150 + tag / 250 % 100, tag % 250);
    let conflist = serde_json::json!({
        "cniVersion": "0.4.0", "name": "kvmpod-cri",
        "plugins": [{"type": "bridge", "bridge": bridge.0, "isGateway": true,
                     "ipam": {"type": "host-local", "subnet": subnet,
                              "dataDir": fx.path().join("ipam")}}]
    });
    let mut containerd = Containerd::start_cri(
        &fx,
        Cri {
            sandbox_image: PAUSE.into(),
            cni: Some(conflist.to_string()),
        },
    );
    let (image, pause) = (fx.path().join("test.tar"), fx.path().join("pause.tar"));
    kvmpod_tests::images::write_test_image(&fx.root(), &image, "kvmpod/test:1");
    kvmpod_tests::images::write_pause_image(&fx.root(), &pause, "kvmpod/pause:1");
    import(&containerd, &image);
    import(&containerd, &pause);
    let logs = fx.host_dir("pod-logs", &[]);
    let shared = fx.host_dir("empty-dir", &[]);
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(cni_kubelet(&containerd, &logs, &shared));
    assert_eq!(fx.pods_created(), 0, "the sandbox's pod is left behind");
    containerd.stop();
    drop(containerd);
    drop(bridge);
    fx.finish();
}
