//! Boot tests of how a pod ends: interrupted, killed, or broken before its
//! agent could answer. Nothing may hang, and no host process may be left.

use std::fs;
use std::time::Duration;

use kvmpod_tests::{Fixture, POD_LIMIT};
use serde_json::json;

/// Ctrl-C stops the pod gracefully: the app gets SIGTERM and its handler's
/// write reaches the host volume; host-ctl exits 130 and leaves no QEMU or
/// vhost-device-vsock behind.
#[test]
fn ctrl_c_stops_the_pod_gracefully_and_cleans_up() {
    let fx = Fixture::new();
    let root = fx.rootfs("rootfs");
    let out_dir = fx.host_dir("out", &[]);
    let manifest = fx.write_manifest(
        "pod.json",
        &json!({
            "volumes": [{"name": "out", "kind": "host", "source": out_dir}],
            "apps": [{
                "name": "server", "rootfs": root,
                "exec": ["/bin/sh", "-c",
                    "trap 'echo stopped-cleanly > /out/term.txt; exit 0' TERM; echo ready; while true; do sleep 0.2; done"],
                "mountPoints": [{"volume": "out", "path": "/out"}]
            }]
        }),
    );
    let mut run = fx.spawn(&["--grace", "20", manifest.to_str().unwrap()]);
    run.wait_for_stdout("server | ready", POD_LIMIT);
    run.signal(libc::SIGINT);
    let out = run.finish(Duration::from_secs(120));
    assert_eq!(out.code, Some(130), "{}", out.dump());
    assert!(
        out.stderr.contains("host-ctl: stopping pod"),
        "{}",
        out.dump()
    );
    assert_eq!(
        fs::read_to_string(out_dir.join("term.txt")).unwrap_or_default(),
        "stopped-cleanly\n",
        "{}",
        out.dump()
    );
    fx.assert_no_leftovers(Duration::from_secs(5));
}

/// host-ctl killed outright (SIGKILL, no chance to clean up): the kernel
/// kills QEMU and vhost-device-vsock with it.
#[test]
fn killing_host_ctl_takes_its_vm_along() {
    let fx = Fixture::new();
    let root = fx.rootfs("rootfs");
    let manifest = fx.write_manifest(
        "pod.json",
        &json!({"apps": [{"name": "sleeper", "rootfs": root,
            "exec": ["/bin/sh", "-c", "echo ready; sleep 600"]}]}),
    );
    let mut run = fx.spawn(&[manifest.to_str().unwrap()]);
    run.wait_for_stdout("sleeper | ready", POD_LIMIT);
    assert!(!fx.leftover_processes().is_empty(), "expected a running VM");
    run.signal(libc::SIGKILL);
    let _ = run.finish(Duration::from_secs(30));
    fx.assert_no_leftovers(Duration::from_secs(10));
}

/// A failure before vsock is up (here: a kernel module that cannot load)
/// is one FATAL console line and a power-off, which host-ctl reports with
/// the stage, instead of a kernel panic or a hang.
#[test]
fn a_failure_before_vsock_is_reported_from_the_console() {
    let fx = Fixture::new();
    let root = fx.rootfs("rootfs");
    let modules = fx.path().join("modules/6.1.0-fake");
    fs::create_dir_all(modules.join("kernel")).unwrap();
    // Either virtio transport, whichever machine host-ctl picks.
    for m in ["virtio_pci", "virtio_mmio"] {
        fs::write(
            modules.join(format!("kernel/{m}.ko")),
            b"not a kernel module",
        )
        .unwrap();
    }
    fs::write(
        modules.join("kernel/vmw_vsock_virtio_transport.ko"),
        b"nor this",
    )
    .unwrap();
    fs::write(
        modules.join("modules.dep"),
        "kernel/virtio_pci.ko:\nkernel/virtio_mmio.ko:\nkernel/vmw_vsock_virtio_transport.ko:\n",
    )
    .unwrap();
    let manifest = fx.write_manifest(
        "pod.json",
        &json!({"apps": [{"name": "a", "rootfs": root, "exec": ["/bin/true"]}]}),
    );
    let out = fx.run(
        &[
            "--modules-dir",
            modules.to_str().unwrap(),
            manifest.to_str().unwrap(),
        ],
        POD_LIMIT,
    );
    assert_eq!(out.code, Some(125), "{}", out.dump());
    assert!(out.stderr.contains("the VM exited"), "{}", out.dump());
    assert!(
        out.stderr
            .contains("the agent reported: loading kernel modules: loading kernel module /lib/modules/6.1.0-fake/kernel/virtio_"),
        "{}",
        out.dump()
    );
    assert!(!out.stderr.contains("Kernel panic"), "{}", out.dump());
    fx.assert_no_leftovers(Duration::from_secs(5));
}

/// A guest whose /init is not the agent never answers: host-ctl gives up
/// at the boot deadline, says how far the guest got, shows the console's
/// tail, and kills the VM.
#[test]
fn an_agent_that_never_answers_times_out_with_the_console_tail() {
    let fx = Fixture::new();
    let root = fx.rootfs("rootfs");
    let manifest = fx.write_manifest(
        "pod.json",
        &json!({"apps": [{"name": "a", "rootfs": root, "exec": ["/bin/true"]}]}),
    );
    // busybox is static, so it passes host-ctl's check, and boots as init,
    // but it is not the agent.
    let out = fx.run(
        &[
            "--agent",
            "/bin/busybox",
            "--boot-timeout",
            "20",
            manifest.to_str().unwrap(),
        ],
        POD_LIMIT,
    );
    assert_eq!(out.code, Some(125), "{}", out.dump());
    assert!(
        out.stderr.contains("the agent did not answer within 20s"),
        "{}",
        out.dump()
    );
    assert!(
        out.stderr.contains(
            "the guest got to: the guest wrote to its console, but the kvmpod agent never started"
        ),
        "{}",
        out.dump()
    );
    assert!(out.stderr.contains("console ("), "{}", out.dump());
    fx.assert_no_leftovers(Duration::from_secs(5));
}
