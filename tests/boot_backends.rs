//! Boot tests of the VM's make-up: vsock connectors, the accelerator
//! choice, memory and vCPUs, the initramfs's compression, many host volumes
//! and many pods at once. (lkvm and AF_VSOCK run in the nested KVM host:
//! `boot_nested.rs`.)

use std::fs;
use std::path::Path;

use kvmpod_tests::{assert_checks, check, equals, Fixture, CMD, POD_LIMIT};
use serde_json::{json, Value};

/// Four pods started at once with `--vsock hybrid` boot, get distinct CIDs
/// and sockets, and each one's `status` reaches its own agent; after stop
/// and gc no socket, CID lease or process is left.
#[test]
fn four_pods_at_once_each_have_their_own_cid_and_agent() {
    let fx = Fixture::new();
    let manifests: Vec<_> = (0..4)
        .map(|i| {
            fx.one_app(
                &format!("app-{i}"),
                &format!("echo pod {i}; exec sleep 600"),
            )
            .write(&format!("pod{i}.json"))
        })
        .collect();
    let runs: Vec<[&str; 3]> = manifests
        .iter()
        .map(|m| ["--vsock", "hybrid", m.to_str().unwrap()])
        .collect();
    let runs: Vec<&[&str]> = runs.iter().map(|r| r.as_slice()).collect();
    let ids = fx.detach_all(&runs);
    let mut cids = Vec::new();
    let mut sockets = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let rec = fx.record(id);
        assert_eq!(rec["endpoint"]["kind"], "hybrid", "{rec}");
        cids.push(rec["cid"].as_u64().unwrap());
        sockets.push(rec["endpoint"]["socket"].to_string());
        let st = fx.host_ctl(&["status", id, "--format", "json"], CMD);
        assert_eq!(st.code, Some(0), "{}", st.dump());
        let st: Value = serde_json::from_str(&st.stdout).unwrap();
        assert_eq!(
            st["live"]["apps"][0]["name"],
            format!("app-{i}"),
            "pod {id} reached another agent"
        );
        let logs = fx.host_ctl(&["logs", id], CMD);
        assert_eq!(logs.stdout, format!("pod {i}\n"));
    }
    let distinct = |mut v: Vec<String>| {
        v.sort();
        v.dedup();
        v.len()
    };
    assert_eq!(
        distinct(cids.iter().map(u64::to_string).collect()),
        4,
        "CIDs {cids:?}"
    );
    assert_eq!(distinct(sockets.clone()), 4, "sockets {sockets:?}");
    assert_eq!(
        kvmpod_tests::leftovers::cid_leases(&fx.state_dir()).len(),
        4
    );

    let stops: Vec<_> = ids
        .iter()
        .map(|id| fx.spawn_host_ctl(&["stop", "--timeout", "1", id]))
        .collect();
    for s in stops {
        let out = s.finish(std::time::Duration::from_secs(120));
        assert_eq!(out.code, Some(0), "{}", out.dump());
    }
    let gc = fx.host_ctl(&["gc"], CMD);
    assert_eq!(gc.code, Some(0), "{}", gc.dump());
    assert_eq!(fx.pods_created(), 0);
    fx.finish();
}

/// `--vsock vhost` where the host has no usable /dev/vhost-vsock is refused
/// before anything is created, saying what to do. (Where it works, the
/// nested tests boot pods with it.)
#[test]
fn vsock_vhost_without_the_device_is_refused_clearly() {
    let fx = Fixture::new();
    let m = fx.one_app("a", "true").write("pod.json");
    let usable = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/vhost-vsock")
        .is_ok();
    assert!(
        !usable,
        "this host has a usable /dev/vhost-vsock: this test proves the refusal where it has none, the nested tests prove pods where it has one"
    );
    let out = fx.run(&["--vsock", "vhost", m.to_str().unwrap()], CMD);
    assert_eq!(out.code, Some(125), "{}", out.dump());
    assert!(
        out.stderr
            .contains("--vsock vhost: /dev/vhost-vsock: No such file or directory"),
        "{}",
        out.dump()
    );
    assert!(
        out.stderr.contains("or use --vsock hybrid"),
        "{}",
        out.dump()
    );
    fx.finish_without_pods();
}

fn kvm_is_pvm() -> bool {
    Path::new("/sys/module/kvm_pvm").exists()
}

/// `--accel auto` says what it picked and why, and picks what works here:
/// TCG on a PVM host, KVM where the probe passes.
#[test]
fn accel_auto_says_what_it_picked_and_why() {
    let fx = Fixture::new();
    let m = fx.one_app("a", "true").write("pod.json");
    let out = fx.host_ctl(&["args", "--accel", "auto", m.to_str().unwrap()], CMD);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    let line = out
        .stderr
        .lines()
        .find(|l| l.starts_with("host-ctl: accelerator "))
        .unwrap_or_else(|| panic!("no accelerator line\n{}", out.dump()));
    let (accel, reason) = line
        .trim_start_matches("host-ctl: accelerator ")
        .split_once(": ")
        .unwrap_or_else(|| panic!("no reason given: {line}"));
    assert!(!reason.is_empty(), "{line}");
    if kvm_is_pvm() {
        assert_eq!(accel, "tcg", "{line}");
        assert!(reason.contains("PVM"), "{line}");
        assert!(out.stdout.contains("accel=tcg"), "{}", out.dump());
    } else {
        assert_eq!(accel == "kvm", reason.contains("probe guest ran"), "{line}");
        assert!(
            out.stdout.contains(&format!("accel={accel}")),
            "{}",
            out.dump()
        );
    }
    fx.finish_without_pods();
}

/// The accelerator and vsock choices are said by the first `run` and not
/// again while they stay the same; `--verbose` says them every time and
/// `--quiet` never; `host-ctl info` always shows them, in a table and in
/// JSON, as `run` said them.
#[test]
fn choices_are_said_once_and_info_always_shows_them() {
    let fx = Fixture::new();
    let m = fx.one_app("a", "echo ran").write("pod.json");
    let m = m.to_str().unwrap();
    let choice_lines = |out: &kvmpod_tests::Outcome| -> Vec<String> {
        out.stderr
            .lines()
            .filter(|l| {
                l.starts_with("host-ctl: accelerator ") || l.starts_with("host-ctl: vsock ")
            })
            .map(str::to_string)
            .collect()
    };
    let first = fx.run(&["--net", "none", m], POD_LIMIT);
    assert_eq!(first.code, Some(0), "{}", first.dump());
    assert_eq!(first.stdout, "ran\n", "{}", first.dump());
    let said = choice_lines(&first);
    assert_eq!(said.len(), 2, "{}", first.dump());
    let again = fx.run(&["--net", "none", m], POD_LIMIT);
    assert_eq!(again.code, Some(0), "{}", again.dump());
    assert!(choice_lines(&again).is_empty(), "{}", again.dump());
    let verbose = fx.run(&["--verbose", "--net", "none", m], POD_LIMIT);
    assert_eq!(choice_lines(&verbose), said, "{}", verbose.dump());
    let quiet = fx.run(&["-q", "--net", "none", m], POD_LIMIT);
    assert_eq!(quiet.code, Some(0), "{}", quiet.dump());
    assert!(!quiet.stderr.contains("host-ctl:"), "{}", quiet.dump());
    assert_eq!(quiet.stdout, "ran\n", "{}", quiet.dump());

    let table = fx.host_ctl(&["info"], CMD);
    assert_eq!(table.code, Some(0), "{}", table.dump());
    let json = fx.host_ctl(&["info", "--format", "json"], CMD);
    assert_eq!(json.code, Some(0), "{}", json.dump());
    let info: Value = serde_json::from_str(&json.stdout).expect("info is JSON");
    for (topic, line) in ["accelerator", "vsock"].iter().zip(&said) {
        let (choice, reason) = (
            info[topic]["choice"].as_str().unwrap_or_default(),
            info[topic]["reason"].as_str().unwrap_or_default(),
        );
        assert_eq!(
            line,
            &format!("host-ctl: {topic} {choice}: {reason}"),
            "{}",
            json.stdout
        );
        assert!(
            table
                .stdout
                .lines()
                .any(|l| l.starts_with(topic) && l.ends_with(reason)),
            "{}",
            table.stdout
        );
    }
    assert_eq!(info["pods"], 4, "{}", json.stdout);
    assert!(
        info["hypervisors"][0]["path"].is_string(),
        "{}",
        json.stdout
    );
    assert!(info["stage1Images"]
        .as_array()
        .is_some_and(|a| !a.is_empty()));
    fx.finish();
}

/// `--accel kvm` where KVM cannot boot the guest (a PVM host) ends with a
/// clear error within the boot deadline instead of hanging; where KVM
/// works, the pod runs under it.
#[test]
fn accel_kvm_runs_or_fails_clearly() {
    let fx = Fixture::new();
    let m = fx.one_app("a", "echo ran").write("pod.json");
    let out = fx.run(
        &[
            "--accel",
            "kvm",
            "--boot-timeout",
            "30",
            m.to_str().unwrap(),
        ],
        POD_LIMIT,
    );
    if kvm_is_pvm() {
        assert_eq!(out.code, Some(125), "{}", out.dump());
        assert!(
            out.stderr.contains("the VM exited")
                || out.stderr.contains("did not answer within 30s"),
            "{}",
            out.dump()
        );
        assert!(out.stderr.contains("the guest got to:"), "{}", out.dump());
    } else {
        assert_eq!(out.code, Some(0), "{}", out.dump());
        assert_eq!(out.stdout, "ran\n", "one app prints raw\n{}", out.dump());
    }
    fx.finish();
}

/// `--memory`, `--cpus` and `--gzip-initramfs` reach the guest: its memory
/// and CPU count are what was asked, and a gzip initramfs boots and is
/// smaller than the default uncompressed one.
#[test]
fn memory_cpus_and_gzip_initramfs_reach_the_guest() {
    let fx = Fixture::new();
    let script = [
        equals("cpus", "nproc", "2"),
        // The kernel keeps some of the RAM for itself.
        check(
            "memory",
            "kb=$(awk '/MemTotal/ {print $2}' /proc/meminfo); [ $kb -gt 200000 ] && [ $kb -le 262144 ]",
        ),
    ]
    .concat();
    let m = fx.one_app("probe", &script).write("pod.json");
    let args = [
        "--memory",
        "256",
        "--cpus",
        "2",
        "--gzip-initramfs",
        m.to_str().unwrap(),
    ];
    let gz = fx.run(&args, POD_LIMIT);
    assert_eq!(gz.code, Some(0), "{}", gz.dump());
    assert_checks(&gz.stdout, &gz.dump(), &["cpus", "memory"]);
    let plain = fx.run(&[m.to_str().unwrap()], POD_LIMIT);
    assert_eq!(plain.code, Some(0), "{}", plain.dump());
    let sizes: Vec<u64> = kvmpod_tests::fixture_pods(&fx)
        .iter()
        .map(|id| fx.record(id)["initramfsBytes"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes.len(), 2);
    let (gzip, raw) = (sizes[0].min(sizes[1]), sizes[0].max(sizes[1]));
    assert!(gzip * 10 < raw * 7, "gzip {gzip} vs uncompressed {raw}");
    fx.finish();
}

/// Read-only holds against root in the guest: an app with every
/// capability remounts its read-only view read-write and still cannot
/// write, because the host exports the volume read-only.
#[test]
fn read_only_holds_against_root_in_the_guest() {
    let fx = Fixture::new();
    let ro = fx.host_dir("ro", &[("keep.txt", "original\n")]);
    let script = [
        check(
            "remounted-rw",
            "mount -o remount,rw /ro && grep -q ' /ro 9p rw' /proc/mounts",
        ),
        check("write", "! echo evil > /ro/keep.txt"),
        check("create", "! echo new > /ro/new.txt"),
        check("delete", "! rm /ro/keep.txt"),
    ]
    .concat();
    let m = fx
        .one_app("root-app", &script)
        .set("capabilities", json!({"add": ["ALL"]}))
        .host_volume("ro", &ro)
        .mount_ro("ro", "/ro")
        .write("pod.json");
    let out = fx.run(&[m.to_str().unwrap()], POD_LIMIT);
    assert_checks(
        &out.stdout,
        &out.dump(),
        &["remounted-rw", "write", "create", "delete"],
    );
    assert_eq!(
        fs::read_to_string(ro.join("keep.txt")).unwrap(),
        "original\n"
    );
    assert!(!ro.join("new.txt").exists());
    fx.finish();
}

/// More host volumes than microvm has virtio-mmio slots: the pod moves to
/// q35 with its 9p devices behind PCIe-to-PCI bridges, and every volume is
/// mounted where it belongs, writable or read-only as the manifest says.
#[test]
fn forty_host_volumes_sit_behind_pci_bridges() {
    let fx = Fixture::new();
    // Each host volume: its own marker where it should be, then a write
    // that must succeed or fail; each empty volume: a write.
    let script = "for i in $(seq 0 39); do \
          [ \"$(cat /vol/$i/name)\" = v$i ] || echo \"CHECK name-$i FAIL\"; \
          if echo out > /vol/$i/out 2>/dev/null; then echo \"wrote $i\"; else echo \"refused $i\"; fi; \
        done; \
        for i in $(seq 0 7); do echo x > /empty/$i/x || echo \"CHECK empty-$i FAIL\"; done; \
        echo 'CHECK done ok'";
    let mut pod = fx.one_app("many", script);
    let mut dirs = Vec::new();
    for i in 0..40 {
        let d = fx.host_dir(&format!("v{i}"), &[("name", &format!("v{i}\n"))]);
        pod = pod
            .volume(json!({"name": format!("v{i}"), "kind": "host", "source": d, "readOnly": i % 4 == 3}))
            .mount(&format!("v{i}"), &format!("/vol/{i}"));
        dirs.push(d);
    }
    for i in 0..8 {
        pod = pod
            .volume(json!({"name": format!("e{i}"), "kind": "empty"}))
            .mount(&format!("e{i}"), &format!("/empty/{i}"));
    }
    let m = pod.write("pod.json");
    let args = fx.host_ctl(&["args", m.to_str().unwrap()], CMD);
    assert_eq!(args.code, Some(0), "{}", args.dump());
    assert!(args.stdout.contains("pcie-pci-bridge"), "{}", args.dump());
    let out = fx.run(&[m.to_str().unwrap()], POD_LIMIT);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_checks(&out.stdout, &out.dump(), &["done"]);
    for (i, d) in dirs.iter().enumerate() {
        let read_only = i % 4 == 3;
        assert_eq!(
            out.stdout.contains(&format!("refused {i}\n")),
            read_only,
            "volume {i}\n{}",
            out.dump()
        );
        assert_eq!(d.join("out").exists(), !read_only, "volume {i}");
    }
    fx.finish();
}
