//! Boot tests that need a real KVM host with vhost-vsock: lkvm (the seed's
//! hypervisor) and QEMU with KVM over AF_VSOCK. They run inside the nested
//! test host (`tests/nested/run`: a TCG guest that is a KVM host), as the
//! scenarios of `kvmpod-nested-scenarios` (tests/nested/scenarios.rs).

use std::process::Command;
use std::time::Duration;

use kvmpod_tests::{programs, repo, run_with_limit};

const SCENARIOS: [&str; 7] = [
    "lkvm-pod",
    "lkvm-image",
    "lkvm-detached",
    "lkvm-sandbox",
    "lkvm-ends-on-failures",
    "lkvm-symlink-jail",
    "qemu-kvm-af-vsock",
];

#[test]
fn lkvm_and_af_vsock_in_a_nested_kvm_host() {
    let p = programs();
    let run = repo().join("tests/nested/run");
    assert!(run.is_file(), "{} is missing", run.display());
    assert!(
        std::path::Path::new("/usr/local/bin/lkvm").is_file()
            || std::env::var_os("PATH")
                .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join("lkvm").is_file())),
        "lkvm is not installed; run `make deps` (it builds kvmtool from ../shared/vendor)"
    );
    let mut cmd = Command::new(&run);
    cmd.args(["--timeout", "1200", "--"])
        .arg(env!("CARGO_BIN_EXE_kvmpod-nested-scenarios"))
        .env("KVMPOD_HOST_CTL", &p.host_ctl)
        .env("KVMPOD_AGENT", &p.agent)
        .env("KVMPOD_NESTED_VERBOSE", "1");
    let out = run_with_limit(cmd, Duration::from_secs(1300));
    eprintln!("{}", out.stdout);
    for s in SCENARIOS {
        assert!(
            out.stdout.contains(&format!("SCENARIO {s} ok")),
            "scenario {s} did not pass\n{}",
            out.dump()
        );
    }
    assert_eq!(out.code, Some(0), "{}", out.dump());
    let l1 = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("nested: "))
        .collect::<Vec<_>>()
        .join("\n");
    eprintln!("{l1}\nwhole nested run: {:.1?}", out.elapsed);
}
