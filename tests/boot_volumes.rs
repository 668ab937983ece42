//! Boot tests of volumes and app roots: a real kernel in a real VM, host
//! volumes over real 9p, empty volumes on tmpfs, the read-only rules, and
//! app roots from directories and tar archives.

use std::fs;
use std::path::Path;
use std::process::Command;

use kvmpod_tests::{assert_checks, check, equals, erofs, pool, repo, Fixture, POD_LIMIT};
use serde_json::json;

/// The demo pod of `make demo`, from its own manifest: two apps, a host
/// volume and an empty volume; both apps' output is printed and the run
/// succeeds. The consumer proves its view of the host volume is read-only
/// by the error it gets (EROFS), not by a permission error.
#[test]
fn demo_pod_prints_both_apps_output() {
    let fx = Fixture::new();
    let manifest = fx.path().join("pod.json");
    fs::copy(repo().join("examples/demo/pod.json"), &manifest).unwrap();
    fx.rootfs("rootfs");
    fx.host_dir("data", &[]);

    let out = fx.run(&["--timings", manifest.to_str().unwrap()], POD_LIMIT);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    for line in [
        "producer | producer wrote /shared/message",
        "consumer | consumer read: hello from producer on 6.",
        "consumer | last-run.txt",
        "consumer | the write was refused: Read-only file system",
    ] {
        assert!(out.stdout.contains(line), "no {line:?}\n{}", out.dump());
    }
    // Nothing in the demo should fail quietly: its apps print no errors.
    for bad in ["unexpected", "can't", "denied", "not found"] {
        assert!(!out.stdout.contains(bad), "{bad:?} in\n{}", out.dump());
    }
    let written = fs::read_to_string(fx.path().join("data/last-run.txt")).unwrap();
    assert!(written.contains("UTC"), "{written}");
    // --timings shows the guest's boot timeline.
    for stage in [
        "init",
        "modules-loaded",
        "agent-ready",
        "volumes-mounted",
        "app-started:producer",
        "app-exited:consumer",
    ] {
        assert!(
            out.stderr.contains(stage),
            "no {stage} in the timeline\n{}",
            out.dump()
        );
    }
    fx.finish();
}

/// The writer app's checks: a read-write host volume, read-only mount
/// points refused with EROFS, both directions of rkt's override rule, and
/// an empty volume it shares with the reader.
fn writer_script() -> String {
    [
        check("rw-write", "printf 'written by the guest\\n' > /rw/out.txt"),
        erofs("ro-erofs", "/ro/keep.txt"),
        erofs("forced-ro-erofs", "/fro/keep.txt"),
        check("forced-rw-write", "echo new > /frw/new.txt"),
        "echo 'from the writer' > /scratch/msg.tmp && mv /scratch/msg.tmp /scratch/msg".into(),
    ]
    .concat()
}

/// The reader app's checks: the shared empty volume, and a guest-side
/// read-only bind of a volume the host exports writable.
fn reader_script() -> String {
    format!(
        "i=0; while [ ! -e /scratch/msg ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; {}{}",
        equals("empty-shared", "cat /scratch/msg", "from the writer"),
        erofs("guest-ro-bind-erofs", "/view/evil.txt")
    )
}

/// One pod exercising volumes and exit statuses; the first failing app's
/// code (7) becomes host-ctl's, and a killed app is reported by signal.
#[test]
fn volumes_read_only_rules_and_exit_codes() {
    let fx = Fixture::new();
    volume_rules(&fx, &[]);
    fx.finish();
}

/// The same pod in a VM of the warm pool: its host volumes bound into the
/// VM's volumes share after boot, under the same rules.
#[test]
fn volumes_read_only_rules_and_exit_codes_from_the_pool() {
    let fx = Fixture::new();
    pool::start(&fx, 1);
    let out = volume_rules(&fx, &["--net", "none", "--timings"]);
    assert!(
        pool::served(&out),
        "the pod did not run in the pool's VM\n{}",
        out.dump()
    );
    pool::stop(&fx);
    fx.finish();
}

fn volume_rules(fx: &Fixture, args: &[&str]) -> kvmpod_tests::Outcome {
    let rw = fx.host_dir("rw", &[]);
    let ro = fx.host_dir("ro", &[("keep.txt", "original\n")]);
    let forced_ro = fx.host_dir("forced-ro", &[("keep.txt", "original\n")]);
    let forced_rw = fx.host_dir("forced-rw", &[]);
    let manifest = fx
        .pod()
        .host_volume("rw", &rw)
        .host_volume("ro", &ro)
        .volume(json!({"name": "forced-ro", "kind": "host", "source": forced_ro, "readOnly": true}))
        .volume(
            json!({"name": "forced-rw", "kind": "host", "source": forced_rw, "readOnly": false}),
        )
        .volume(json!({"name": "scratch", "kind": "empty"}))
        .app("failer", "exit 7")
        .app("writer", &writer_script())
        .mount("rw", "/rw")
        .mount_ro("ro", "/ro")
        .mount("forced-ro", "/fro")
        .mount_ro("forced-rw", "/frw")
        .mount("scratch", "/scratch")
        .app("reader", &reader_script())
        .mount("scratch", "/scratch")
        .mount_ro("rw", "/view")
        .app("killed", "kill -TERM $$; sleep 5")
        .write("pod.json");

    let mut all = args.to_vec();
    all.push(manifest.to_str().unwrap());
    let out = fx.run(&all, POD_LIMIT);
    assert_eq!(out.code, Some(7), "{}", out.dump());
    assert_checks(
        &out.stdout,
        &out.dump(),
        &[
            "rw-write",
            "ro-erofs",
            "forced-ro-erofs",
            "forced-rw-write",
            "empty-shared",
            "guest-ro-bind-erofs",
        ],
    );
    for line in [
        "app \"failer\" exited with status 7",
        "app \"killed\" was killed by SIGTERM (status 143)",
    ] {
        assert!(out.stderr.contains(line), "no {line:?}\n{}", out.dump());
    }
    // What the host sees after the pod has ended.
    let read = |p: &Path| fs::read_to_string(p).unwrap();
    assert_eq!(read(&rw.join("out.txt")), "written by the guest\n");
    assert!(!rw.join("evil.txt").exists());
    assert_eq!(read(&ro.join("keep.txt")), "original\n");
    assert_eq!(read(&forced_ro.join("keep.txt")), "original\n");
    assert_eq!(read(&forced_rw.join("new.txt")), "new\n");
    out
}

/// An empty volume's `mode`, `uid`, `gid` and `size` are what the guest
/// sees: the root's permission bits and owner (stat), and the tmpfs's size
/// (df), with writes past the size refused (ENOSPC).
#[test]
fn empty_volume_options_reach_the_guest() {
    let fx = Fixture::new();
    let script = [
        equals("mode-owner", "stat -c '%a %u %g' /shared", "1770 1234 4321"),
        equals("size", "df -k /shared | awk 'NR==2 {print $2}'", "8192"),
        equals("default-mode", "stat -c '%a %u %g' /plain", "755 0 0"),
        check(
            "size-enforced",
            "! dd if=/dev/zero of=/shared/big bs=1M count=9 2>/tmp/dd && grep -q 'No space left' /tmp/dd",
        ),
    ]
    .concat();
    let m = fx
        .pod()
        .volume(json!({"name": "shared", "kind": "empty", "mode": "1770", "uid": 1234, "gid": 4321, "size": "8M"}))
        .volume(json!({"name": "plain", "kind": "empty"}))
        .app("probe", &script)
        .mount("shared", "/shared")
        .mount("plain", "/plain")
        .write("pod.json");
    let out = fx.run(&[m.to_str().unwrap()], POD_LIMIT);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_checks(
        &out.stdout,
        &out.dump(),
        &["mode-owner", "size", "default-mode", "size-enforced"],
    );
    fx.finish();
}

/// App roots given as a tar archive and as a gzip-compressed one boot like
/// a directory: their files, modes and symlinks are there.
#[test]
fn tar_and_tar_gz_roots_boot() {
    let fx = Fixture::new();
    let dir = fx.root();
    fs::write(dir.join("marker"), "from the archive\n").unwrap();
    let tar = fx.path().join("root.tar");
    let tgz = fx.path().join("root.tar.gz");
    for (file, flag) in [(&tar, "-cf"), (&tgz, "-czf")] {
        let status = Command::new("tar")
            .args([
                flag,
                file.to_str().unwrap(),
                "-C",
                dir.to_str().unwrap(),
                ".",
            ])
            .status()
            .expect("running tar");
        assert!(status.success());
    }
    let script = [
        equals("marker", "cat /marker", "from the archive"),
        equals("symlink", "readlink /bin/sh", "busybox"),
        equals("tmp-mode", "stat -c %a /tmp", "1777"),
    ]
    .concat();
    let m = fx
        .pod()
        .app("from-tar", &script)
        .set("rootfs", json!(tar))
        .app("from-tgz", &script)
        .set("rootfs", json!(tgz))
        .write("pod.json");
    let out = fx.run(&[m.to_str().unwrap()], POD_LIMIT);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    for app in ["from-tar", "from-tgz"] {
        for name in ["marker", "symlink", "tmp-mode"] {
            let line = format!("{app} | CHECK {name} ok");
            assert!(out.stdout.contains(&line), "no {line:?}\n{}", out.dump());
        }
    }
    assert!(!out.stdout.contains(" FAIL"), "{}", out.dump());
    fx.finish();
}
