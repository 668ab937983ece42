//! Boot tests of app roots shared with the guest: a root reaches the guest
//! read-only through the pod's share and the agent stacks a writable layer
//! of the guest's own over it, so apps' writes never reach the host, two
//! pods of one root each see their own changes, a pod's directory does not
//! grow with its root, and a root larger than the guest's memory boots.

use std::fs;
use std::path::Path;
use std::time::Duration;

use kvmpod_tests::terminal::{on_a_terminal, typing_on_a_terminal, Typed};
use kvmpod_tests::{Fixture, CMD, POD_LIMIT};

/// `host-ctl exec <pod> <app> -- sh -c <script>`: its stdout, after
/// checking it succeeded.
fn exec(fx: &Fixture, id: &str, app: &str, script: &str) -> String {
    let out = fx.host_ctl(&["exec", id, app, "--", "/bin/sh", "-c", script], CMD);
    assert_eq!(out.code, Some(0), "{script}\n{}", out.dump());
    out.stdout
}

/// Bytes under `dir`, not counting what is mounted below it (the pod's
/// layers are bind mounts of the root, not copies).
fn bytes_under(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let dev = fs::metadata(dir).map(|m| m.dev()).unwrap_or(0);
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(m) = fs::symlink_metadata(e.path()) else {
                continue;
            };
            if m.is_dir() {
                if !is_mount_point(&e.path()) && m.dev() == dev {
                    stack.push(e.path());
                }
            } else {
                total += m.blocks() * 512;
            }
        }
    }
    total
}

fn is_mount_point(p: &Path) -> bool {
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let p = p.to_string_lossy();
    mounts
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(p.as_ref()))
}

/// Two pods of one root at once: one writes over a file of the root,
/// deletes another and replaces a directory; the other pod and the host
/// still see the originals. Neither pod's directory holds a copy of the
/// root (which has a 64 MiB file).
#[test]
fn two_pods_of_one_root_each_write_their_own_copy() {
    let fx = Fixture::new();
    let root = fx.rootfs("shared-root");
    fs::write(root.join("etc/motd"), "original\n").unwrap();
    fs::create_dir_all(root.join("etc/conf.d")).unwrap();
    fs::write(root.join("etc/conf.d/a.conf"), "a\n").unwrap();
    let big = fs::File::create(root.join("big")).unwrap();
    big.set_len(64 << 20).unwrap();
    drop(big);
    let manifest = fx
        .pod()
        .app("a", "exec sleep 600")
        .set("rootfs", serde_json::json!(root))
        .write("pod.json");
    let one = fx.detach(&manifest, &[]);
    let two = fx.detach(&manifest, &[]);

    let wrote = exec(
        &fx,
        &one,
        "a",
        "echo changed > /etc/motd && rm /bin/true && rm -rf /etc/conf.d && mkdir /etc/conf.d \
         && echo \"$(cat /etc/motd) true:$([ -e /bin/true ] && echo yes || echo no) conf.d:$(ls -A /etc/conf.d | wc -l)\"",
    );
    assert_eq!(wrote.trim(), "changed true:no conf.d:0");
    let other = exec(
        &fx,
        &two,
        "a",
        "echo \"$(cat /etc/motd) true:$([ -e /bin/true ] && echo yes || echo no) conf.d:$(ls /etc/conf.d)\"",
    );
    assert_eq!(other.trim(), "original true:yes conf.d:a.conf");
    assert_eq!(
        fs::read_to_string(root.join("etc/motd")).unwrap(),
        "original\n"
    );
    assert!(root.join("bin/true").exists() || fs::symlink_metadata(root.join("bin/true")).is_ok());
    assert!(root.join("etc/conf.d/a.conf").is_file());
    // The guest sees the whole root; the pod's directory holds none of it.
    let size = exec(&fx, &two, "a", "wc -c < /big");
    assert_eq!(size.trim(), (64u64 << 20).to_string());
    for id in [&one, &two] {
        let dir = fx.state_dir().join("pods").join(id);
        let held = bytes_under(&dir);
        assert!(held < 1 << 20, "pod {id}'s directory holds {held} bytes");
    }
    for id in [&one, &two] {
        let out = fx.host_ctl(&["stop", "--timeout", "1", id], Duration::from_secs(120));
        assert_eq!(out.code, Some(0), "{}", out.dump());
        let out = fx.host_ctl(&["rm", id], CMD);
        assert_eq!(out.code, Some(0), "{}", out.dump());
    }
    assert_eq!(
        fs::read_to_string(root.join("etc/motd")).unwrap(),
        "original\n"
    );
    assert!(
        root.join("big").is_file(),
        "removing a pod removed its root's files"
    );
    fx.finish();
}

/// A root of 1 GiB (a sparse file) boots with the default 512 MiB of guest
/// memory: the root is read through the share, never loaded whole.
#[test]
fn a_root_larger_than_guest_memory_boots() {
    let fx = Fixture::new();
    let root = fx.rootfs("huge-root");
    let f = fs::File::create(root.join("huge")).unwrap();
    f.set_len(1 << 30).unwrap();
    drop(f);
    let m = fx
        .pod()
        .app("a", "wc -c < /huge && tail -c 4096 /huge | wc -c")
        .set("rootfs", serde_json::json!(root))
        .write("pod.json");
    let out = fx.run(&[m.to_str().unwrap()], POD_LIMIT);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert!(
        out.stdout.contains(&(1u64 << 30).to_string()) && out.stdout.contains("4096"),
        "{}",
        out.dump()
    );
    fx.finish();
}

/// `run IMAGE` runs the image's Entrypoint and Cmd with its Env, WorkingDir
/// and User; a command after the image replaces the Cmd; -e, -w and -u
/// override; the layers read as OCI says (whiteout, opaque directory,
/// hard link, symlink, modes); a manifest app may name the image too. One
/// app prints raw, and `--rm` leaves no pod behind.
#[test]
fn images_run_with_their_config_and_layers() {
    let fx = Fixture::new();
    fx.import_test_image();
    let run = |args: &[&str]| {
        let mut all = vec!["--rm"];
        all.extend_from_slice(args);
        let out = fx.run(&all, POD_LIMIT);
        assert_eq!(out.code, Some(0), "{}", out.dump());
        out.stdout
    };
    assert_eq!(run(&["kvmpod/test:1"]), "cmd hello /data 65534\n");
    let layers = run(&[
        "kvmpod/test:1",
        "echo $(ls -A /data); [ -e /gone ] && echo gone-is-there; \
         stat -c '%a %h' /data/new; readlink /data/sym; cat /data/link /etc/motd",
    ]);
    assert_eq!(
        layers, "link new sym\n604 2\nnew\nnew\nfrom the image\n",
        "the layers did not apply as OCI says"
    );
    assert_eq!(
        run(&[
            "-e",
            "GREETING=bye",
            "-w",
            "/",
            "-u",
            "0",
            "kvmpod/test:1",
            "echo $GREETING $(pwd) $(id -u)"
        ]),
        "bye / 0\n"
    );
    // -i: this process's stdin reaches the app, and its end closes the
    // app's stdin.
    let mut child = fx
        .command(&["run", "--rm", "-i", "kvmpod/test:1", "cat; echo done"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("host-ctl run -i");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("piped");
        stdin.write_all(b"line one\nline two\n").unwrap();
    }
    let out = child.wait_with_output().expect("host-ctl run -i");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "line one\nline two\ndone\n"
    );
    let m = fx.write_manifest(
        "image-pod.json",
        &serde_json::json!({"apps": [
            {"name": "one", "image": "kvmpod/test:1", "args": ["echo from a manifest"]},
            {"name": "two", "image": "kvmpod/test:1", "exec": ["/bin/cat", "/data/new"]}
        ]}),
    );
    let both = run(&[m.to_str().unwrap()]);
    assert!(both.contains("one | from a manifest\n"), "{both}");
    assert!(both.contains("two | new\n"), "{both}");
    assert_eq!(fx.pods_created(), 0, "--rm left a pod behind");
    fx.finish();
}

/// `run -t`: the app's stdin, stdout and stderr are one terminal of its
/// own devpts, whose output reaches the host as the terminal wrote it.
/// With `-i` on a terminal of the host's, the keys reach the app as typed,
/// the app's terminal has the host's size, and run exits with the app's
/// status; `attach` to a detached one does the same, and its detach keys
/// leave the app running.
#[test]
fn run_t_gives_the_app_a_terminal() {
    let fx = Fixture::new();
    fx.import_test_image();
    let out = fx.run(
        &[
            "--rm",
            "-t",
            "kvmpod/test:1",
            "tty; [ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo on-a-terminal; echo to-stderr >&2",
        ],
        POD_LIMIT,
    );
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_eq!(
        out.stdout,
        "/dev/pts/0\r\non-a-terminal\r\nto-stderr\r\n",
        "{}",
        out.dump()
    );
    assert!(!out.stderr.contains("to-stderr"), "{}", out.dump());

    let mut cmd = fx.command(&["run", "--rm", "-i", "-t", "kvmpod/test:1", "sh"]);
    cmd.env("TERM", "screen-256color");
    let (code, seen) = on_a_terminal(
        cmd,
        (37, 111),
        Typed::after("$ ", b"stty size; echo $TERM; (exit 7)\n\x04"),
    );
    assert!(seen.contains("37 111\r\nscreen-256color\r\n"), "{seen:?}");
    assert_eq!(code, Some(7), "{seen:?}");
    // The ^D ended the shell (with its last status): it reached the app's
    // terminal as typed, so the host's terminal was in raw mode (cooked,
    // it is an end of file that run would have kept to itself). The
    // host's terminal is out of raw mode again before run reports the
    // exit: its newline is a terminal's newline.
    assert!(seen.contains("exited with status 7\r\n"), "{seen:?}");

    // Detached, then attached from another terminal, of another size.
    let mut detach = fx.command(&["run", "-d", "-i", "-t", "kvmpod/test:1", "sh"]);
    detach.env_remove("TERM");
    let id = kvmpod_tests::run_with_limit(detach, POD_LIMIT);
    assert_eq!(id.code, Some(0), "{}", id.dump());
    let id = id.stdout.trim().to_string();
    // The detach keys (docker's default, ctrl-p ctrl-q) end an attach and
    // leave the shell running; what was typed before them reached it.
    // (Typed once attach shows the shell's answer: by then it has put this
    // terminal in raw mode, where ^Q is a key, not flow control.)
    let first = fx.command(&["attach", &id, "test"]);
    let (code, seen) = typing_on_a_terminal(
        first,
        (20, 70),
        &[
            Typed::now(b"echo typed-$((40+2)) > /tmp/before-detach; echo done-$((1+1))\n"),
            Typed::after("done-2", b"\x10\x11"),
        ],
    );
    assert_eq!(code, Some(0), "{seen:?}");
    assert!(
        seen.contains("detached from test; it keeps running"),
        "{seen:?}"
    );
    assert_eq!(fx.record(&id)["state"], "running");
    let mut cmd = fx.command(&["attach", &id, "test"]);
    cmd.env("TERM", "vt220");
    let (code, seen) = on_a_terminal(
        cmd,
        (20, 70),
        Typed::now(b"cat /tmp/before-detach; stty size; tty; echo $TERM; exit 4\n"),
    );
    // The terminal type is the one the pod was started with (as docker's
    // attach: the app's environment was set at its start).
    assert!(
        seen.contains("typed-42\r\n20 70\r\n/dev/pts/0\r\nxterm\r\n"),
        "{seen:?}"
    );
    assert_eq!(code, Some(4), "{seen:?}");
    let rm = fx.host_ctl(&["rm", "-f", &id], Duration::from_secs(120));
    assert_eq!(rm.code, Some(0), "{}", rm.dump());
    assert_eq!(fx.pods_created(), 0, "--rm left a pod behind");
    fx.finish();
}

/// Names: `--name` is unique, every command takes it, and it is free again
/// once its pod is removed. Two pods of one image at once: one writes over
/// an image file, the other still reads the original. `--rm` removes a pod
/// that failed, and `image rm` is refused while a pod uses the image.
#[test]
fn named_pods_of_one_image_and_run_rm_on_failure() {
    let fx = Fixture::new();
    fx.import_test_image();
    let missing = fx.run(&["--rm", "no/such:image"], POD_LIMIT);
    assert_eq!(missing.code, Some(125), "{}", missing.dump());
    assert!(
        missing.stderr.contains("image import"),
        "{}",
        missing.dump()
    );
    let failed = fx.run(&["--rm", "kvmpod/test:1", "exit 3"], POD_LIMIT);
    assert_eq!(failed.code, Some(3), "{}", failed.dump());
    assert_eq!(fx.pods_created(), 0, "a failed run --rm left its pod");
    // A detached pod that is over before `run -d` looks still started:
    // its ID, and its app's status afterwards.
    let quick = fx.run(&["-d", "kvmpod/test:1", "exit 4"], POD_LIMIT);
    assert_eq!(quick.code, Some(0), "{}", quick.dump());
    let quick = quick.stdout.trim().to_string();
    let rec = fx.wait_until_exited(&quick, Duration::from_secs(60));
    assert_eq!(rec["apps"][0]["exitCode"], 4, "{rec}");
    assert_eq!(fx.host_ctl(&["rm", &quick], CMD).code, Some(0));

    let detach = |name: &str| {
        let out = fx.run(
            &[
                "-d",
                "--name",
                name,
                "-u",
                "0",
                "kvmpod/test:1",
                "exec sleep 600",
            ],
            POD_LIMIT,
        );
        assert_eq!(out.code, Some(0), "{}", out.dump());
        out.stdout.trim().to_string()
    };
    let web = detach("web");
    let taken = fx.run(&["-d", "--name", "web", "kvmpod/test:1", "true"], POD_LIMIT);
    assert_eq!(taken.code, Some(125), "{}", taken.dump());
    assert!(taken.stderr.contains("in use by pod"), "{}", taken.dump());
    let other = detach("web2");
    assert_ne!(web, other);
    assert_eq!(
        exec(
            &fx,
            "web",
            "test",
            "echo changed > /etc/motd; cat /etc/motd"
        ),
        "changed\n"
    );
    assert_eq!(
        exec(&fx, "web2", "test", "cat /etc/motd"),
        "from the image\n"
    );
    let st = fx.host_ctl(&["status", "web", "--format", "json"], CMD);
    assert_eq!(st.code, Some(0), "{}", st.dump());
    assert!(st.stdout.contains(&web), "{}", st.dump());
    let rm_image = fx.host_ctl(&["image", "rm", "kvmpod/test:1"], CMD);
    assert_ne!(rm_image.code, Some(0), "{}", rm_image.dump());
    assert!(
        rm_image.stderr.contains(&web[..8]) || rm_image.stderr.contains("in use"),
        "{}",
        rm_image.dump()
    );

    for name in ["web", "web2"] {
        let out = fx.host_ctl(&["rm", "-f", name], Duration::from_secs(120));
        assert_eq!(out.code, Some(0), "{}", out.dump());
    }
    let again = fx.run(
        &["--rm", "--name", "web", "kvmpod/test:1", "hostname"],
        POD_LIMIT,
    );
    assert_eq!(again.code, Some(0), "{}", again.dump());
    assert_eq!(again.stdout, "web\n", "the name is the pod's hostname");
    let rm_image = fx.host_ctl(&["image", "rm", "kvmpod/test:1"], CMD);
    assert_eq!(rm_image.code, Some(0), "{}", rm_image.dump());
    fx.finish();
}

/// An image whose layers hold 1 GiB boots with the default 512 MiB of
/// guest memory.
#[test]
fn a_one_gib_image_boots_with_the_default_memory() {
    let fx = Fixture::new();
    let dir = fx.path().join("big-image");
    let big = fx.path().join("big-layer");
    fs::create_dir_all(&big).unwrap();
    fs::File::create(big.join("huge"))
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    kvmpod_tests::images::docker_dir_from_roots(
        &dir,
        &[&fx.root(), &big],
        serde_json::json!({"Cmd": ["/bin/sh", "-c", "stat -c %s /huge; free -m | awk 'NR==2 {print $2}'; tail -c 4096 /huge | wc -c"]}),
        "kvmpod/big:1",
    );
    let out = fx.host_ctl(
        &["image", "import", dir.to_str().unwrap()],
        Duration::from_secs(300),
    );
    assert_eq!(out.code, Some(0), "{}", out.dump());
    let out = fx.run(&["--rm", "kvmpod/big:1"], POD_LIMIT);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.first().copied(), Some("1073741824"), "{}", out.dump());
    let mem_mib: u64 = lines
        .get(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(u64::MAX);
    assert!(
        mem_mib < 1024,
        "the guest has {mem_mib} MiB, not less than the image\n{}",
        out.dump()
    );
    assert_eq!(
        lines.get(2).map(|l| l.trim()),
        Some("4096"),
        "{}",
        out.dump()
    );
    fx.finish();
}
