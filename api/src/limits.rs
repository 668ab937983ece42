//! Names of Linux capabilities and resource limits, as a manifest writes
//! them, and the default capability set apps get (Docker's).

/// Capability names (without `CAP_`) by number, 0 to 40.
pub const CAPABILITIES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Docker's default set: what an app gets unless the manifest says
/// otherwise.
pub const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// The number of a capability named `NAME` or `CAP_NAME` (any case).
pub fn capability(name: &str) -> Option<u32> {
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    CAPABILITIES
        .iter()
        .position(|c| *c == bare)
        .map(|i| i as u32)
}

/// The set an app runs with, as a bit mask: the default set, minus
/// `drop`, plus `add` (`ALL` in either means every capability). Unknown
/// names are left out (validation refuses them first).
pub fn capability_set(add: &[String], drop: &[String]) -> u64 {
    let all = (1u64 << CAPABILITIES.len()) - 1;
    let mask = |names: &[String]| -> u64 {
        names.iter().fold(0, |m, n| {
            if n.eq_ignore_ascii_case("ALL") {
                all
            } else {
                m | capability(n).map_or(0, |c| 1 << c)
            }
        })
    };
    let default = DEFAULT_CAPABILITIES
        .iter()
        .fold(0u64, |m, n| m | capability(n).map_or(0, |c| 1 << c));
    (default & !mask(drop)) | mask(add)
}

/// Resource limit names (as `ulimit` and Docker write them) and their
/// `RLIMIT_*` numbers on Linux.
pub const RLIMITS: [(&str, u32); 16] = [
    ("cpu", 0),
    ("fsize", 1),
    ("data", 2),
    ("stack", 3),
    ("core", 4),
    ("rss", 5),
    ("nproc", 6),
    ("nofile", 7),
    ("memlock", 8),
    ("as", 9),
    ("locks", 10),
    ("sigpending", 11),
    ("msgqueue", 12),
    ("nice", 13),
    ("rtprio", 14),
    ("rttime", 15),
];

/// The `RLIMIT_*` number of `nofile`, `RLIMIT_NOFILE` or `NOFILE`.
pub fn rlimit(name: &str) -> Option<u32> {
    let lower = name.to_ascii_lowercase();
    let bare = lower.strip_prefix("rlimit_").unwrap_or(&lower);
    RLIMITS.iter().find(|(n, _)| *n == bare).map(|(_, v)| *v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve() {
        assert_eq!(capability("CAP_SYS_ADMIN"), Some(21));
        assert_eq!(capability("net_raw"), Some(13));
        assert_eq!(capability("CHECKPOINT_RESTORE"), Some(40));
        assert_eq!(capability("CAP_NOPE"), None);
        assert_eq!(rlimit("nofile"), Some(7));
        assert_eq!(rlimit("RLIMIT_NPROC"), Some(6));
        assert_eq!(rlimit("files"), None);
    }

    #[test]
    fn sets_are_the_default_adjusted() {
        let s = |add: &[&str], drop: &[&str]| {
            capability_set(
                &add.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                &drop.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            )
        };
        let default = s(&[], &[]);
        assert_eq!(default.count_ones(), 14);
        assert_eq!(
            default & (1 << 21),
            0,
            "SYS_ADMIN is not in the default set"
        );
        assert_eq!(s(&[], &["NET_RAW"]) & (1 << 13), 0);
        assert_ne!(s(&["SYS_ADMIN"], &[]) & (1 << 21), 0);
        assert_eq!(s(&[], &["ALL"]), 0);
        assert_eq!(s(&["KILL"], &["ALL"]), 1 << 5);
        assert_eq!(s(&["ALL"], &[]).count_ones(), 41);
    }
}
