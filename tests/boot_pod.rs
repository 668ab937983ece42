//! Boot tests of the core path: a real kernel in a real VM (QEMU, KVM or
//! TCG), volumes over real 9p, the agent reached over real vsock.

use std::fs;

use kvmpod_tests::{repo, Fixture, POD_LIMIT};
use serde_json::json;

/// The demo pod of `make demo`, from its own manifest: two apps, a host
/// volume and an empty volume; both apps' output is printed and the run
/// succeeds.
#[test]
fn demo_pod_prints_both_apps_output() {
    let fx = Fixture::new();
    let manifest = fx.path().join("pod.json");
    fs::copy(repo().join("examples/demo/pod.json"), &manifest).unwrap();
    fx.rootfs("rootfs");
    fx.host_dir("data", &[]);

    let out = fx.run(&["--timings", manifest.to_str().unwrap()], POD_LIMIT);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert!(
        out.stdout
            .contains("producer | producer wrote /shared/message"),
        "{}",
        out.dump()
    );
    assert!(
        out.stdout
            .contains("consumer | consumer read: hello from producer on 6."),
        "{}",
        out.dump()
    );
    assert!(
        out.stdout.contains("consumer | last-run.txt"),
        "{}",
        out.dump()
    );
    assert!(!out.stdout.contains("unexpected"), "{}", out.dump());
    // Nothing in the demo should fail quietly: its apps print no errors.
    for bad in ["can't", "denied", "not found"] {
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
    eprintln!("{}", out.stderr);
}

/// One pod exercising volumes and exit statuses: a read-write host volume
/// written by the guest; read-only mount points refused with EROFS and the
/// host files untouched; both directions of rkt's override rule; a guest-
/// side read-only bind of a writable export; an empty volume shared between
/// two apps; and the first failing app's code (7) becoming host-ctl's.
#[test]
fn volumes_read_only_rules_and_exit_codes() {
    let fx = Fixture::new();
    let root = fx.rootfs("rootfs");
    let rw = fx.host_dir("rw", &[]);
    let ro = fx.host_dir("ro", &[("keep.txt", "original\n")]);
    let forced_ro = fx.host_dir("forced-ro", &[("keep.txt", "original\n")]);
    let forced_rw = fx.host_dir("forced-rw", &[]);

    // Each check prints "CHECK <name> ok" or "CHECK <name> FAIL ...".
    let erofs = |name: &str, path: &str| {
        format!(
            "if ( echo evil > {path} ) 2>/tmp/err; then echo 'CHECK {name} FAIL: write succeeded'; \
             elif grep -q 'Read-only file system' /tmp/err; then echo 'CHECK {name} ok'; \
             else echo \"CHECK {name} FAIL: $(cat /tmp/err)\"; fi; "
        )
    };
    let writer = format!(
        "if printf 'written by the guest\\n' > /rw/out.txt; then echo 'CHECK rw-write ok'; else echo 'CHECK rw-write FAIL'; fi; \
         {} {} \
         if echo new > /frw/new.txt; then echo 'CHECK forced-rw-write ok'; else echo 'CHECK forced-rw-write FAIL'; fi; \
         echo 'from the writer' > /scratch/msg.tmp && mv /scratch/msg.tmp /scratch/msg",
        erofs("ro-erofs", "/ro/keep.txt"),
        erofs("forced-ro-erofs", "/fro/keep.txt"),
    );
    let reader = format!(
        "i=0; while [ ! -e /scratch/msg ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; \
         if [ \"$(cat /scratch/msg)\" = 'from the writer' ]; then echo 'CHECK empty-shared ok'; else echo 'CHECK empty-shared FAIL'; fi; \
         {}",
        erofs("guest-ro-bind-erofs", "/view/evil.txt")
    );
    let manifest = fx.write_manifest(
        "pod.json",
        &json!({
            "volumes": [
                {"name": "rw", "kind": "host", "source": rw},
                {"name": "ro", "kind": "host", "source": ro},
                {"name": "forced-ro", "kind": "host", "source": forced_ro, "readOnly": true},
                {"name": "forced-rw", "kind": "host", "source": forced_rw, "readOnly": false},
                {"name": "scratch", "kind": "empty"}
            ],
            "apps": [
                {"name": "failer", "rootfs": root, "exec": ["/bin/sh", "-c", "exit 7"]},
                {"name": "writer", "rootfs": root, "exec": ["/bin/sh", "-c", writer],
                 "mountPoints": [
                    {"volume": "rw", "path": "/rw"},
                    {"volume": "ro", "path": "/ro", "readOnly": true},
                    {"volume": "forced-ro", "path": "/fro", "readOnly": false},
                    {"volume": "forced-rw", "path": "/frw", "readOnly": true},
                    {"volume": "scratch", "path": "/scratch"}
                 ]},
                {"name": "reader", "rootfs": root, "exec": ["/bin/sh", "-c", reader],
                 "mountPoints": [
                    {"volume": "scratch", "path": "/scratch"},
                    {"volume": "rw", "path": "/view", "readOnly": true}
                 ]},
                {"name": "killed", "rootfs": root, "exec": ["/bin/sh", "-c", "kill -TERM $$; sleep 5"]}
            ]
        }),
    );

    let out = fx.run(&[manifest.to_str().unwrap()], POD_LIMIT);
    assert_eq!(out.code, Some(7), "{}", out.dump());
    for check in [
        "writer | CHECK rw-write ok",
        "writer | CHECK ro-erofs ok",
        "writer | CHECK forced-ro-erofs ok",
        "writer | CHECK forced-rw-write ok",
        "reader | CHECK empty-shared ok",
        "reader | CHECK guest-ro-bind-erofs ok",
    ] {
        assert!(
            out.stdout.contains(check),
            "missing {check:?}\n{}",
            out.dump()
        );
    }
    assert!(!out.stdout.contains("FAIL"), "{}", out.dump());
    assert!(
        out.stderr.contains("app \"failer\" exited with status 7"),
        "{}",
        out.dump()
    );
    assert!(
        out.stderr
            .contains("app \"killed\" was killed by SIGTERM (status 143)"),
        "{}",
        out.dump()
    );

    // What the host sees after the pod has ended.
    assert_eq!(
        fs::read_to_string(rw.join("out.txt")).unwrap(),
        "written by the guest\n"
    );
    assert!(!rw.join("evil.txt").exists());
    assert_eq!(
        fs::read_to_string(ro.join("keep.txt")).unwrap(),
        "original\n"
    );
    assert_eq!(
        fs::read_to_string(forced_ro.join("keep.txt")).unwrap(),
        "original\n"
    );
    assert_eq!(
        fs::read_to_string(forced_rw.join("new.txt")).unwrap(),
        "new\n"
    );
}
