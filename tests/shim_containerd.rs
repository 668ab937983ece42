//! The containerd shim under a real containerd (Debian's 1.6, started by
//! the test with its own root, state and socket): an image imported with
//! `ctr`, run as a kvmpod pod by `ctr run --runtime io.containerd.kvmpod.v2`.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kvmpod_tests::containerd::{Containerd, RUNTIME};
use kvmpod_tests::terminal::{on_a_terminal, Typed};
use kvmpod_tests::{pool, Fixture, CMD, POD_LIMIT};

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
            "echo to stdout; echo to stderr >&2; cat /etc/motd; ulimit -n; exit 3",
        ],
        POD_LIMIT,
    );
    // (ctr's spec sets RLIMIT_NOFILE to 1024.)
    assert_eq!(
        run.stdout,
        "to stdout\nfrom the image\n1024\n",
        "{}\n{}",
        run.dump(),
        containerd.log()
    );
    assert!(run.stderr.contains("to stderr\n"), "{}", run.dump());
    assert_eq!(run.code, Some(3), "{}", run.dump());
    assert_eq!(fx.pods_created(), 0, "ctr run --rm left a pod behind");

    spec_mounts_and_capabilities(&fx, &containerd, image);
    oom_kill_is_reported(&containerd, image);
    on_terminals(&containerd, image);
    detached_task_killed_and_deleted(&fx, &mut containerd, image);

    containerd.stop();
    drop(containerd);
    fx.finish();
}

/// `ctr run -d` with a memory limit: `ctr task ls` shows it running, also
/// after containerd restarted; `ctr task exec` runs a command in it, `ctr task ps` and
/// `metrics` see it, `ctr task kill` ends it, `ctr task delete` removes
/// it with its pod.
fn detached_task_killed_and_deleted(fx: &Fixture, containerd: &mut Containerd, image: &str) {
    let args = [
        "run",
        "-d",
        "--memory-limit",
        "67108864",
        "--runtime",
        RUNTIME,
        image,
        "bg",
        "sh",
        "-c",
        "exec sleep 600",
    ];
    let detached = containerd.ctr(&args, POD_LIMIT);
    let log = containerd.log();
    assert_eq!(detached.code, Some(0), "{}\n{log}", detached.dump());
    assert_eq!(task_status(containerd, "bg").as_deref(), Some("RUNNING"));
    assert_eq!(fx.pods_created(), 1);
    // containerd restarted: the shim and the pod keep running, and the
    // new containerd manages the task through the same shim.
    containerd.restart();
    assert_eq!(task_status(containerd, "bg").as_deref(), Some("RUNNING"));
    exec_ps_and_metrics(containerd);
    // An exec on a terminal of its own, the size of ctr's.
    let exec_t = containerd.command(&["task", "exec", "-t", "--exec-id", "t1", "bg", "sh"]);
    let (code, seen) = on_a_terminal(
        exec_t,
        (25, 81),
        Typed::after("$ ", b"stty size; tty; exit 2\n"),
    );
    assert!(
        seen.replace('\r', "").contains("25 81\n/dev/pts/"),
        "{seen:?}"
    );
    assert_eq!(code, Some(2), "{seen:?}");

    let kill = containerd.ctr(&["task", "kill", "--signal", "SIGKILL", "bg"], CMD);
    assert_eq!(kill.code, Some(0), "{}", kill.dump());
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while task_status(containerd, "bg").as_deref() != Some("STOPPED") {
        assert!(std::time::Instant::now() < until, "bg did not stop");
        std::thread::sleep(Duration::from_millis(250));
    }
    let delete = containerd.ctr(&["task", "delete", "bg"], Duration::from_secs(120));
    let log = containerd.log();
    assert_eq!(delete.code, Some(0), "{}\n{log}", delete.dump());
    let rm = containerd.ctr(&["container", "delete", "bg"], CMD);
    assert_eq!(rm.code, Some(0), "{}", rm.dump());
    assert_eq!(fx.pods_created(), 0, "task delete left the pod behind");
}

/// The spec's mounts and capabilities reach the app: a host directory
/// bound read-only, a tmpfs, and a dropped capability.
fn spec_mounts_and_capabilities(fx: &Fixture, containerd: &Containerd, image: &str) {
    let dir = fx.host_dir("bound", &[("note", "from the host\n")]);
    let bind = format!("type=bind,src={},dst=/data,options=rbind:ro", dir.display());
    let conf = fx
        .host_dir("conf", &[("app.conf", "one file\n")])
        .join("app.conf");
    let file = format!(
        "type=bind,src={},dst=/etc/app.conf,options=rbind:ro",
        conf.display()
    );
    let script = "cat /data/note; touch /data/new 2>/dev/null || echo read-only; \
                  cat /etc/app.conf; \
                  awk '$2 == \"/scratch\" { print $3 }' /proc/mounts; \
                  grep CapBnd /proc/self/status";
    let run = containerd.ctr(
        &[
            "run",
            "--rm",
            "--runtime",
            RUNTIME,
            "--mount",
            &bind,
            "--mount",
            &file,
            "--mount",
            "type=tmpfs,src=tmpfs,dst=/scratch,options=size=1m",
            "--cap-drop",
            "CAP_CHOWN",
            image,
            "mounts",
            "sh",
            "-c",
            script,
        ],
        POD_LIMIT,
    );
    // ctr's default capabilities, as kvmpod's, less CAP_CHOWN (bit 0).
    assert_eq!(
        run.stdout,
        "from the host\nread-only\none file\ntmpfs\nCapBnd:\t00000000a80425fa\n",
        "{}\n{}",
        run.dump(),
        containerd.log()
    );
    assert_eq!(run.code, Some(0), "{}", run.dump());
    assert!(!dir.join("new").exists());
}

/// An app the OOM killer of its cgroup (the spec's memory limit, in the
/// guest) ends: containerd publishes `/tasks/oom` for its task, which
/// `ctr events` shows, and the task exits with a failure.
fn oom_kill_is_reported(containerd: &Containerd, image: &str) {
    let mut follower = containerd
        .command(&["events"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting ctr events");
    let stdout = follower.stdout.take().expect("ctr events' stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let run = containerd.ctr(
        &[
            "run",
            "--rm",
            "--runtime",
            RUNTIME,
            "--memory-limit",
            "16777216",
            image,
            "oom",
            "sh",
            "-c",
            "s=$(head -c 64000000 /dev/zero | tr '\\0' x); echo survived ${#s}",
        ],
        POD_LIMIT,
    );
    assert_ne!(run.code, Some(0), "{}", run.dump());
    assert!(!run.stdout.contains("survived"), "{}", run.dump());
    // TaskOOM and TaskExit travel apart: the first may come second.
    let until = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    let found = loop {
        let left = until.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("/tasks/oom") && line.contains("\"oom\"") => break true,
            Ok(line) => seen.push(line),
            Err(_) => break false,
        }
    };
    let _ = follower.kill();
    let _ = follower.wait();
    assert!(
        found,
        "no /tasks/oom event for task oom; ctr events printed:\n{}\n{}",
        seen.join("\n"),
        containerd.log()
    );
}

/// The STATUS column of `ctr task ls` for task `id`.
fn task_status(containerd: &Containerd, id: &str) -> Option<String> {
    let tasks = containerd.ctr(&["task", "ls"], CMD);
    assert_eq!(tasks.code, Some(0), "{}", tasks.dump());
    let row = tasks
        .stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(id))?;
    row.split_whitespace().nth(2).map(str::to_string)
}

/// An exec in task `bg`: its own output and status, in the app's root;
/// then `ctr task ps` and `ctr task metrics` (the app's cgroup in the
/// guest).
fn exec_ps_and_metrics(containerd: &Containerd) {
    let script = "echo from exec; cat /etc/motd; echo oops >&2; exit 5";
    let exec = containerd.ctr(
        &["task", "exec", "--exec-id", "e1", "bg", "sh", "-c", script],
        CMD,
    );
    let log = containerd.log();
    assert_eq!(
        exec.stdout,
        "from exec\nfrom the image\n",
        "{}\n{log}",
        exec.dump()
    );
    assert!(exec.stderr.contains("oops\n"), "{}", exec.dump());
    assert_eq!(exec.code, Some(5), "{}", exec.dump());
    let as_other = containerd.ctr(
        &[
            "task",
            "exec",
            "--exec-id",
            "e2",
            "--user",
            "1000:100",
            "--cwd",
            "/tmp",
            "bg",
            "sh",
            "-c",
            "id -u; id -g; pwd",
        ],
        CMD,
    );
    assert_eq!(as_other.code, Some(0), "{}", as_other.dump());
    assert_eq!(as_other.stdout, "1000\n100\n/tmp\n", "{}", as_other.dump());
    let ps = containerd.ctr(&["task", "ps", "bg"], CMD);
    assert_eq!(ps.code, Some(0), "{}", ps.dump());
    assert_eq!(ps.stdout.lines().count(), 2, "{}", ps.dump());
    let metrics = containerd.ctr(&["task", "metrics", "--format", "json", "bg"], CMD);
    assert_eq!(metrics.code, Some(0), "{}", metrics.dump());
    let m: serde_json::Value =
        serde_json::from_str(&metrics.stdout).unwrap_or_else(|e| panic!("{e}: {}", metrics.dump()));
    assert!(m["memory"]["usage"].as_u64().unwrap_or(0) > 0, "{m}");
    // The spec's memory limit is the app's cgroup's in the guest.
    assert_eq!(m["memory"]["usage_limit"], 67108864, "{m}");
    assert!(m["pids"]["current"].as_u64().unwrap_or(0) >= 1, "{m}");
}

/// `ctr run -t`: the app on a terminal of its own, sized as ctr's, its
/// keys typed there; ctr exits with its status.
fn on_terminals(containerd: &Containerd, image: &str) {
    let run = containerd.command(&[
        "run",
        "--rm",
        "-t",
        "--runtime",
        RUNTIME,
        image,
        "tty1",
        "sh",
    ]);
    let (code, seen) = on_a_terminal(
        run,
        (30, 90),
        Typed::after("$ ", b"stty size; tty; echo $TERM; exit 6\n"),
    );
    // (ctr's own terminal may translate newlines once more: \r\r\n.)
    let lines = seen.replace('\r', "");
    assert!(lines.contains("30 90\n/dev/pts/0\nxterm\n"), "{seen:?}");
    assert_eq!(code, Some(6), "{seen:?}");
}

/// With a warm pool in the shim's state directory, `ctr run` takes a VM
/// from it: the container's output and exit status are a cold pod's, the
/// pool's VM is gone from it (claimed, then removed with the pod) and a
/// new one waits in its place.
#[test]
fn ctr_run_takes_a_vm_from_the_pool() {
    let fx = Fixture::new();
    let containerd = Containerd::start(&fx);
    let archive = fx.path().join("test-image.tar");
    kvmpod_tests::images::write_test_image(&fx.root(), &archive, "kvmpod/test:1");
    let import = containerd.ctr(&["images", "import", archive.to_str().unwrap()], CMD);
    assert_eq!(import.code, Some(0), "{}", import.dump());
    let before = pool::start(&fx, 1);

    let run = containerd.ctr(
        &[
            "run",
            "--rm",
            "--runtime",
            RUNTIME,
            "docker.io/kvmpod/test:1",
            "pooled",
            "sh",
            "-c",
            "echo from the pool; cat /etc/motd; exit 4",
        ],
        POD_LIMIT,
    );
    assert_eq!(
        run.stdout,
        "from the pool\nfrom the image\n",
        "{}\n{}",
        run.dump(),
        containerd.log()
    );
    assert_eq!(run.code, Some(4), "{}", run.dump());
    assert!(
        !fx.state_dir().join("pods").join(&before[0]).exists(),
        "the pool's VM was not the pod's"
    );
    pool::wait_for_waiting(&fx, 1, &before);
    pool::stop(&fx);
    drop(containerd);
    fx.finish();
}
