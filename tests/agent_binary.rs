//! The agent as built for the guest: a static executable (the guest has no
//! C library), small enough to cost little boot time.

use std::process::Command;

use kvmpod_tests::programs;

#[test]
fn agent_is_a_static_executable() {
    let agent = programs().agent;
    let out = Command::new("file")
        .arg(&agent)
        .output()
        .expect("running `file` (Debian package file; run `make deps`)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("statically linked"), "{text}");
    assert!(
        text.contains("stripped") && !text.contains("not stripped"),
        "{text}"
    );
    let size = std::fs::metadata(&agent).unwrap().len();
    eprintln!("agent: {} bytes ({text})", size);
    // The whole agent travels in every initramfs; keep an eye on it.
    assert!(size < 4 << 20, "the agent grew to {size} bytes");
}
