//! Boot tests of how a pod ends: interrupted, killed, broken before its
//! agent could answer, or with an app that cannot be executed. Nothing may
//! hang, and no host process may be left.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use kvmpod_tests::{Fixture, POD_LIMIT};
use nix::sys::signal::Signal;

/// Ctrl-C stops the pod gracefully: the app gets SIGTERM and its handler's
/// write reaches the host volume; host-ctl exits 130 and leaves nothing
/// behind.
#[test]
fn ctrl_c_stops_the_pod_gracefully_and_cleans_up() {
    let fx = Fixture::new();
    let out_dir = fx.host_dir("out", &[]);
    let manifest = fx
        .one_app(
            "server",
            "trap 'echo stopped-cleanly > /out/term.txt; exit 0' TERM; echo ready; while true; do sleep 0.2; done",
        )
        .host_volume("out", &out_dir)
        .mount("out", "/out")
        .write("pod.json");
    let mut run = fx.spawn(&["--grace", "20", manifest.to_str().unwrap()]);
    run.wait_for_stdout("ready", POD_LIMIT);
    run.signal(Signal::SIGINT);
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
    fx.finish();
}

/// host-ctl killed outright (SIGKILL, no chance to clean up): the kernel
/// kills QEMU and vhost-device-vsock with it.
#[test]
fn killing_host_ctl_takes_its_vm_along() {
    let fx = Fixture::new();
    let manifest = fx
        .one_app("sleeper", "echo ready; sleep 600")
        .write("pod.json");
    let mut run = fx.spawn(&[manifest.to_str().unwrap()]);
    run.wait_for_stdout("ready", POD_LIMIT);
    let running = fx.leftover_processes();
    assert!(
        running.iter().any(|p| p.contains("qemu-system")),
        "expected a running VM: {running:?}"
    );
    run.signal(Signal::SIGKILL);
    let _ = run.finish(Duration::from_secs(30));
    // The CID lease and sockets of a pod whose host-ctl was killed are
    // reclaimed by the next command that looks at it.
    let gc = fx.host_ctl(&["gc"], kvmpod_tests::CMD);
    assert_eq!(gc.code, Some(0), "{}", gc.dump());
    fx.finish();
}

/// A failure before vsock is up (here: a kernel module that cannot load)
/// is one FATAL console line and a power-off, which host-ctl reports with
/// the stage, instead of a kernel panic or a hang.
#[test]
fn a_failure_before_vsock_is_reported_from_the_console() {
    let fx = Fixture::new();
    let modules = fx.broken_modules();
    let manifest = fx.one_app("a", "true").write("pod.json");
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
    fx.finish();
}

/// A guest whose /init is not the agent never answers: host-ctl gives up
/// at the boot deadline, says how far the guest got, shows the console's
/// tail, and kills the VM.
#[test]
fn an_agent_that_never_answers_times_out_with_the_console_tail() {
    let fx = Fixture::new();
    let manifest = fx.one_app("a", "true").write("pod.json");
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
    for needle in [
        "the agent did not answer within 20s",
        "the guest got to: the guest wrote to its console, but the kvmpod agent never started",
        "console (",
    ] {
        assert!(out.stderr.contains(needle), "no {needle:?}\n{}", out.dump());
    }
    fx.finish();
}

/// A kernel that cannot boot ends with an error naming how far the guest
/// got; a kernel that does not exist is refused before anything starts.
#[test]
fn a_kernel_that_cannot_boot_is_reported_not_waited_for() {
    let fx = Fixture::new();
    let m = fx.one_app("a", "true").write("pod.json");
    let missing = fx.run(
        &["--kernel", "/nonexistent/vmlinuz", m.to_str().unwrap()],
        kvmpod_tests::CMD,
    );
    assert_eq!(missing.code, Some(125));
    assert!(
        missing
            .stderr
            .contains("--kernel /nonexistent/vmlinuz: no such file"),
        "{}",
        missing.dump()
    );
    assert_eq!(fx.pods_created(), 0);

    let garbage = fx
        .host_dir("boot", &[("vmlinuz-broken", "this is not a kernel\n")])
        .join("vmlinuz-broken");
    let start = Instant::now();
    let out = fx.run(
        &["--kernel", garbage.to_str().unwrap(), m.to_str().unwrap()],
        POD_LIMIT,
    );
    assert_eq!(out.code, Some(125), "{}", out.dump());
    assert!(out.stderr.contains("the VM exited"), "{}", out.dump());
    assert!(
        out.stderr
            .contains("the guest got to: nothing on the console"),
        "{}",
        out.dump()
    );
    eprintln!("a broken kernel was reported after {:?}", start.elapsed());
    fx.finish();
}

/// Programs that cannot run have the shell's statuses: 126 for a file that
/// is not executable (by anyone, or by the app's user: the kernel's EACCES
/// at exec), 127 for one that does not exist; host-ctl exits with the
/// first in manifest order and says why for each.
#[test]
fn programs_that_cannot_run_exit_126_and_127() {
    let fx = Fixture::new();
    let root = fx.root();
    let script = root.join("not-executable.sh");
    fs::write(&script, "#!/bin/sh\necho ran\n").unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o644)).unwrap();
    let owner_only = root.join("root-only.sh");
    fs::write(&owner_only, "#!/bin/sh\necho ran\n").unwrap();
    fs::set_permissions(&owner_only, fs::Permissions::from_mode(0o700)).unwrap();
    let m = fx
        .pod()
        .app_exec("noexec", serde_json::json!(["/not-executable.sh"]))
        .app_exec("denied", serde_json::json!(["/root-only.sh"]))
        .set("user", serde_json::json!("nobody"))
        .app_exec("missing", serde_json::json!(["/no/such/program"]))
        .write("pod.json");
    let out = fx.run(&[m.to_str().unwrap()], POD_LIMIT);
    assert_eq!(out.code, Some(126), "{}", out.dump());
    for needle in [
        "app \"noexec\" could not start (status 126)",
        "app \"denied\" could not start (status 126)",
        "app \"missing\" could not start (status 127)",
    ] {
        assert!(out.stderr.contains(needle), "no {needle:?}\n{}", out.dump());
    }
    assert!(!out.stdout.contains("ran"), "{}", out.dump());
    fx.finish();
}

/// `wait` blocks until a detached pod has exited and prints its status
/// (the first failing app's, in manifest order); `inspect` prints what is
/// known of it as a JSON array: its record, live state while it runs, the
/// manifest it runs and its VM's command lines; `prune` removes it once
/// it has exited.
#[test]
fn wait_inspect_and_prune_a_detached_pod() {
    let fx = Fixture::new();
    let m = fx
        .one_app("first", "sleep 3; exit 3")
        .app("second", "sleep 1; exit 4")
        .write("pod.json");
    let id = fx.detach(&m, &["--net", "none"]);

    let inspect = fx.host_ctl(&["inspect", &id[..8]], kvmpod_tests::CMD);
    assert_eq!(inspect.code, Some(0), "{}", inspect.dump());
    let all: serde_json::Value = serde_json::from_str(&inspect.stdout).expect("JSON");
    let pod = &all[0];
    assert_eq!(pod["id"], id.as_str(), "{pod}");
    assert_eq!(pod["state"], "running", "{pod}");
    assert_eq!(
        pod["live"]["apps"].as_array().map(Vec::len),
        Some(2),
        "{pod}"
    );
    assert_eq!(pod["pod"]["apps"][1]["name"], "second", "{pod}");
    assert!(
        pod["launch"]["vm"]["program"]
            .as_str()
            .is_some_and(|p| p.contains("qemu")),
        "{pod}"
    );
    assert!(pod["directory"].as_str().is_some_and(|d| d.ends_with(&id)));

    let wait = fx.host_ctl(&["wait", &id], POD_LIMIT);
    assert_eq!(wait.code, Some(0), "{}", wait.dump());
    assert_eq!(wait.stdout, "3\n", "{}", wait.dump());
    assert_eq!(fx.record(&id)["state"], "exited");
    // An exited pod is waited for at once; an unknown one is an error.
    let again = fx.host_ctl(&["wait", &id, &id[..8]], kvmpod_tests::CMD);
    assert_eq!(again.stdout, "3\n3\n", "{}", again.dump());
    let unknown = fx.host_ctl(&["wait", "nosuchpod"], kvmpod_tests::CMD);
    assert_eq!(unknown.code, Some(125), "{}", unknown.dump());
    assert!(unknown.stderr.contains("no pod"), "{}", unknown.dump());
    let after: serde_json::Value =
        serde_json::from_str(&fx.host_ctl(&["inspect", &id], kvmpod_tests::CMD).stdout)
            .expect("JSON");
    assert!(after[0].get("live").is_none(), "{after}");
    assert_eq!(after[0]["apps"][0]["exitCode"], 3, "{after}");
    // prune takes the exited pod.
    let prune = fx.host_ctl(&["prune"], kvmpod_tests::CMD);
    assert_eq!(prune.code, Some(0), "{}", prune.dump());
    assert!(
        prune.stdout.contains(&format!("removed {id}")),
        "{}",
        prune.dump()
    );
    assert_eq!(fx.pods_created(), 0);
    fx.finish();
}
