//! The containerd shim under a real containerd (Debian's 1.6, started by
//! the test with its own root, state and socket): an image imported with
//! `ctr`, run as a kvmpod pod by `ctr run --runtime io.containerd.kvmpod.v2`.

use std::time::Duration;

use kvmpod_tests::containerd::{Containerd, RUNTIME};
use kvmpod_tests::{Fixture, CMD, POD_LIMIT};

/// `ctr run --rm` prints the app's output and exits with its status;
/// `ctr run -d` leaves a task that `ctr task ls` shows running, that `ctr
/// task kill` ends, and that `ctr task delete` removes with its pod.
#[test]
fn ctr_runs_an_image_as_a_kvmpod_pod() {
    let fx = Fixture::new();
    let mut containerd = Containerd::start(&fx);
    let archive = fx.path().join("test-image.tar");
    kvmpod_tests::images::write_test_image(&fx.root(), &archive, "kvmpod/test:1");
    let import = containerd.ctr(&["images", "import", archive.to_str().unwrap()], CMD);
    assert_eq!(
        import.code,
        Some(0),
        "{}\n{}",
        import.dump(),
        containerd.log()
    );
    let image = "docker.io/kvmpod/test:1";

    let run = containerd.ctr(
        &[
            "run",
            "--rm",
            "--runtime",
            RUNTIME,
            image,
            "once",
            "sh",
            "-c",
            "echo to stdout; echo to stderr >&2; cat /etc/motd; exit 3",
        ],
        POD_LIMIT,
    );
    assert_eq!(
        run.stdout,
        "to stdout\nfrom the image\n",
        "{}\n{}",
        run.dump(),
        containerd.log()
    );
    assert!(run.stderr.contains("to stderr\n"), "{}", run.dump());
    assert_eq!(run.code, Some(3), "{}", run.dump());
    assert_eq!(fx.pods_created(), 0, "ctr run --rm left a pod behind");

    detached_task_killed_and_deleted(&fx, &containerd, image);

    containerd.stop();
    drop(containerd);
    fx.finish();
}

/// `ctr run -d`: `ctr task ls` shows it running, `ctr task exec` runs a
/// command in it, `ctr task kill` ends it, `ctr task delete` removes it
/// with its pod.
fn detached_task_killed_and_deleted(fx: &Fixture, containerd: &Containerd, image: &str) {
    let detached = containerd.ctr(
        &[
            "run",
            "-d",
            "--runtime",
            RUNTIME,
            image,
            "bg",
            "sh",
            "-c",
            "exec sleep 600",
        ],
        POD_LIMIT,
    );
    assert_eq!(
        detached.code,
        Some(0),
        "{}\n{}",
        detached.dump(),
        containerd.log()
    );
    let tasks = containerd.ctr(&["task", "ls"], CMD);
    assert!(
        tasks
            .stdout
            .lines()
            .any(|l| l.starts_with("bg ") && l.contains("RUNNING")),
        "{}",
        tasks.dump()
    );
    assert_eq!(fx.pods_created(), 1);
    // An exec: its own output and status, in the app's root and
    // environment.
    let exec = containerd.ctr(
        &[
            "task",
            "exec",
            "--exec-id",
            "e1",
            "bg",
            "sh",
            "-c",
            "echo from exec; cat /etc/motd; echo oops >&2; exit 5",
        ],
        CMD,
    );
    assert_eq!(
        exec.stdout,
        "from exec\nfrom the image\n",
        "{}\n{}",
        exec.dump(),
        containerd.log()
    );
    assert!(exec.stderr.contains("oops\n"), "{}", exec.dump());
    assert_eq!(exec.code, Some(5), "{}", exec.dump());
    // Its processes and its app's cgroup in the guest.
    let ps = containerd.ctr(&["task", "ps", "bg"], CMD);
    assert_eq!(ps.code, Some(0), "{}\n{}", ps.dump(), containerd.log());
    assert_eq!(ps.stdout.lines().count(), 2, "{}", ps.dump());
    let metrics = containerd.ctr(&["task", "metrics", "--format", "json", "bg"], CMD);
    assert_eq!(
        metrics.code,
        Some(0),
        "{}\n{}",
        metrics.dump(),
        containerd.log()
    );
    let m: serde_json::Value = serde_json::from_str(&metrics.stdout).expect(&metrics.dump());
    assert!(m["memory"]["usage"].as_u64().unwrap_or(0) > 0, "{m}");
    assert!(m["pids"]["current"].as_u64().unwrap_or(0) >= 1, "{m}");
    let kill = containerd.ctr(&["task", "kill", "--signal", "SIGKILL", "bg"], CMD);
    assert_eq!(kill.code, Some(0), "{}", kill.dump());
    let until = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let tasks = containerd.ctr(&["task", "ls"], CMD);
        if tasks
            .stdout
            .lines()
            .any(|l| l.starts_with("bg ") && l.contains("STOPPED"))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "bg did not stop\n{}",
            tasks.dump()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let delete = containerd.ctr(&["task", "delete", "bg"], Duration::from_secs(120));
    assert_eq!(
        delete.code,
        Some(0),
        "{}\n{}",
        delete.dump(),
        containerd.log()
    );
    let rm = containerd.ctr(&["container", "delete", "bg"], CMD);
    assert_eq!(rm.code, Some(0), "{}", rm.dump());
    assert_eq!(fx.pods_created(), 0, "task delete left the pod behind");
}
