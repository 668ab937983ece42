//! Boot tests of app roots shared with the guest: a root reaches the guest
//! read-only through the pod's share and the agent stacks a writable layer
//! of the guest's own over it, so apps' writes never reach the host, two
//! pods of one root each see their own changes, a pod's directory does not
//! grow with its root, and a root larger than the guest's memory boots.

use std::fs;
use std::path::Path;
use std::time::Duration;

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
