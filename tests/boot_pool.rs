//! Boot tests of the warm pool: a pod from the pool is the pod a cold VM
//! would run (same mounts, options, hostname, exit code, output); a pool VM
//! that died is replaced and never handed out; concurrent runs never share
//! a VM; and `pool stop` leaves nothing (every test ends checking that).
//! The volume rules in a pooled VM are `boot_volumes`'s own test, run
//! again from the pool.

use std::collections::BTreeSet;

use kvmpod_tests::{pool, Fixture, Outcome, CMD, POD_LIMIT};

/// What a pod can see of its VM: hostname, mounts with their options,
/// what the read-only rules do; and an exit code of its own.
const PROBE: &str = "hostname; \
    awk '{print $5, $6}' /proc/self/mountinfo | sort; \
    echo written > /rw/out.txt && echo rw-ok; \
    touch /ro/x 2>/dev/null || echo ro-refused; \
    cat /ro/keep.txt; \
    exit 3";

#[test]
fn a_pooled_pod_is_indistinguishable_from_a_cold_one() {
    let fx = Fixture::new();
    let rw = fx.host_dir("rw", &[]);
    let ro = fx.host_dir("ro", &[("keep.txt", "kept\n")]);
    let m = fx
        .pod()
        .host_volume("rw", &rw)
        .host_volume("ro", &ro)
        .volume(serde_json::json!({"name": "scratch", "kind": "empty"}))
        .app("probe", PROBE)
        .mount("rw", "/rw")
        .mount_ro("ro", "/ro")
        .mount("scratch", "/scratch")
        .write("pod.json");
    let m = m.to_str().unwrap();
    let cold = fx.run(&["--net", "none", "--timings", m], POD_LIMIT);
    assert_eq!(cold.code, Some(3), "{}", cold.dump());
    assert!(!cold.stderr.contains("claimed"), "{}", cold.dump());
    let cold_id = kvmpod_tests::fixture_pods(&fx).pop().expect("a pod");

    let members = pool::start(&fx, 1);
    let pooled = fx.run(&["--net", "none", "--timings", m], POD_LIMIT);
    assert_eq!(pooled.code, Some(3), "{}", pooled.dump());
    assert!(pool::served(&pooled), "{}", pooled.dump());
    let pods = kvmpod_tests::fixture_pods(&fx);
    assert!(pods.contains(&members[0]), "{pods:?} {members:?}");
    let pooled_id = members[0].clone();

    // Everything but the hostname (the start of the pod's ID) is the same.
    let lines =
        |out: &Outcome| -> Vec<String> { out.stdout.lines().skip(1).map(str::to_string).collect() };
    assert_eq!(
        lines(&cold),
        lines(&pooled),
        "cold:\n{}\npooled:\n{}",
        cold.stdout,
        pooled.stdout
    );
    for (out, id) in [(&cold, &cold_id), (&pooled, &pooled_id)] {
        let host = out.stdout.lines().next().unwrap_or_default();
        assert_eq!(host, &id[..12], "{}", out.dump());
        assert!(out.stdout.contains("rw-ok") && out.stdout.contains("ro-refused"));
        assert!(
            out.stdout.lines().any(|l| l.starts_with("/ro ro,")),
            "{}",
            out.stdout
        );
    }
    let (a, b) = (fx.record(&cold_id), fx.record(&pooled_id));
    // A CID of its own while it ran (the cold pod's, freed, may be reused).
    assert!(a["cid"].is_u64() && b["cid"].is_u64(), "{a}\n{b}");
    assert_eq!(b["state"], "exited", "{b}");
    assert_eq!(
        std::fs::read_to_string(rw.join("out.txt")).unwrap(),
        "written\n"
    );
    // The pod's output is in its logs, as a cold pod's.
    let logs = fx.host_ctl(&["logs", &pooled_id, "probe"], CMD);
    assert_eq!(logs.stdout, pooled.stdout, "{}", logs.dump());
    pool::stop(&fx);
    fx.finish();
}

#[test]
fn a_dead_pool_vm_is_replaced_and_never_handed_out() {
    let fx = Fixture::new();
    let members = pool::start(&fx, 1);
    let dead = &members[0];
    let vm = fx.record(dead)["vm"]["pid"].as_i64().expect("a VM pid");
    kvmpod_tests::send_signal(vm as i32, nix::sys::signal::Signal::SIGKILL);
    let m = fx.one_app("app", "echo ran").write("pod.json");
    let out = fx.run(&["--net", "none", m.to_str().unwrap()], POD_LIMIT);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert!(out.stdout.contains("ran"), "{}", out.dump());
    let pods = kvmpod_tests::fixture_pods(&fx);
    assert!(!pods.contains(dead), "the dead VM was handed out: {pods:?}");
    let fresh = pool::wait_for_waiting(&fx, 1, std::slice::from_ref(dead));
    assert!(!fresh.contains(dead), "{fresh:?}");
    // The replacement serves the next pod.
    let out = fx.run(
        &["--net", "none", "--timings", m.to_str().unwrap()],
        POD_LIMIT,
    );
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert!(pool::served(&out), "{}", out.dump());
    pool::stop(&fx);
    fx.finish();
}

#[test]
fn concurrent_runs_never_share_a_vm() {
    let fx = Fixture::new();
    let members = pool::start(&fx, 2);
    // The status table's columns are in its JSON, a member each.
    let table = fx.host_ctl(&["pool", "status"], CMD);
    kvmpod_tests::table_and_json_agree(
        &table.stdout,
        pool::status(&fx)["members"].as_array().expect("members"),
        &[
            ("ID", "id"),
            ("CID", "cid"),
            ("STATE", "state"),
            ("CREATED", "created"),
        ],
    );
    let m = fx.one_app("app", "seq 1 20000; hostname").write("pod.json");
    let m = m.to_str().unwrap().to_string();
    // Both started before either is done.
    let run: &[&str] = &["--net", "none", &m];
    let ids = fx.detach_all(&[run, run]);
    let distinct: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), 2, "{ids:?}");
    let cids: BTreeSet<String> = ids
        .iter()
        .map(|id| fx.record(id)["cid"].to_string())
        .collect();
    assert_eq!(cids.len(), 2, "{cids:?}");
    let want: String = (1..=20000).map(|n| format!("{n}\n")).collect();
    for id in &ids {
        assert!(members.contains(id), "{id} was not the pool's: {members:?}");
        fx.wait_until_exited(id, POD_LIMIT);
        let logs = fx.host_ctl(&["logs", id, "app"], CMD);
        assert_eq!(logs.stdout, format!("{want}{}\n", &id[..12]), "{id}");
    }
    pool::stop(&fx);
    fx.finish();
}
