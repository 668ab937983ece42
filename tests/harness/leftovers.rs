//! What a pod may leave on the host after it ended, and the check every
//! booting test ends with: no process (hypervisor, vhost-device-vsock,
//! monitor or any host-ctl) mentioning the test's directory, no mount under
//! it, no CID lease and no socket.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Processes whose command line mentions `dir` (QEMU, lkvm and
/// vhost-device-vsock name the pod directory; host-ctl and its monitors
/// name the state directory), as "pid: command line".
pub fn processes(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if pid == me || !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let zombie = fs::read_to_string(entry.path().join("stat"))
            .map(|s| s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')))
            .unwrap_or(false);
        if cmdline.contains(&needle) && !zombie {
            found.push(format!("{pid}: {cmdline}"));
        }
    }
    found
}

/// Mount points under `dir` (lkvm's share aliases live in pod directories).
pub fn mounts(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter(|m| m.starts_with(&needle))
        .map(str::to_string)
        .collect()
}

/// CID leases held in `state_dir` (`cids/<cid>`, naming the pod).
pub fn cid_leases(state_dir: &Path) -> Vec<String> {
    fs::read_dir(state_dir.join("cids"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect()
}

/// Unix sockets under `dir`.
pub fn sockets(dir: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_socket() {
                out.push(e.path());
            }
        }
    }
    out
}

/// Everything left behind, one line each; empty when clean.
pub fn everything(dir: &Path, state_dir: &Path) -> Vec<String> {
    let mut left: Vec<String> = processes(dir)
        .into_iter()
        .map(|p| format!("process {p}"))
        .collect();
    left.extend(mounts(dir).into_iter().map(|m| format!("mount {m}")));
    left.extend(
        cid_leases(state_dir)
            .into_iter()
            .map(|c| format!("CID lease {c}")),
    );
    left.extend(
        sockets(state_dir)
            .into_iter()
            .map(|s| format!("socket {}", s.display())),
    );
    left
}

/// Waits up to `limit` for `dir` to be clean (processes exit and leases
/// are released shortly after a pod ends); panics with what is left.
pub fn assert_clean(dir: &Path, state_dir: &Path, limit: Duration) {
    let until = Instant::now() + limit;
    loop {
        let left = everything(dir, state_dir);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < until,
            "left behind after the test's pods ended:\n{}",
            left.join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Kills and unmounts whatever a failed test left (its own failure is
/// what it reports).
pub fn clean_up(dir: &Path) {
    for p in processes(dir) {
        if let Some(pid) = p.split(':').next().and_then(|p| p.parse::<i32>().ok()) {
            crate::process::send_signal(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
    for m in mounts(dir).iter().rev() {
        let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
}
