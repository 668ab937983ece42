//! A process's figures as `ps` shows them, read from the guest's `/proc`
//! for `top`. Processes come and go while they are read: one that is gone
//! before its files are read is no process (`None`), not an error. The
//! parsing is separate from the reading, so it is tested on sample text.

use std::fs;
use std::io;

use super::SpawnError;

/// A process's figures, ready for the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: i32,
    pub ppid: i32,
    /// Effective uid.
    pub uid: u32,
    /// The kernel's state letter (R, S, D, Z, T, I ...).
    pub state: char,
    pub elapsed_ms: u64,
    /// User and system CPU time.
    pub cpu_ms: u64,
    pub rss_kib: u64,
    /// Arguments separated by spaces, or `[comm]` without any.
    pub command: String,
}

/// What turns clock ticks into milliseconds and start times into ages:
/// taken once per listing, so every process is measured against the same
/// moment.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// `sysconf(_SC_CLK_TCK)`, the unit of /proc/PID/stat's times.
    pub ticks_per_sec: u64,
    /// CLOCK_BOOTTIME now, the clock /proc/PID/stat's start time counts.
    pub now_ms: u64,
}

impl Clock {
    pub fn now() -> Clock {
        // SAFETY: sysconf only reads a configuration value.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        Clock {
            // Linux has reported 100 on every architecture for decades;
            // a failure must not become a division by zero.
            ticks_per_sec: u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100),
            now_ms: crate::timeline::boottime_ns() / 1_000_000,
        }
    }

    fn ms(&self, ticks: u64) -> u64 {
        ticks.saturating_mul(1000) / self.ticks_per_sec
    }
}

/// The fields of /proc/PID/stat that `top` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stat {
    comm: String,
    state: char,
    ppid: i32,
    utime: u64,
    stime: u64,
    /// Clock ticks after boot.
    starttime: u64,
}

/// Parses /proc/PID/stat: `pid (comm) state ppid ...`. The name may hold
/// spaces and parentheses of its own, so it ends at the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    // Fields from the state on; field 3 of proc(5) is index 0 here.
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    let field = |n: usize| rest.get(n - 3).copied();
    let number = |n: usize| field(n)?.parse::<u64>().ok();
    let state = match field(3)?.as_bytes() {
        [letter] if letter.is_ascii_alphabetic() => char::from(*letter),
        _ => return None,
    };
    Some(Stat {
        comm,
        state,
        ppid: field(4)?.parse().ok()?,
        utime: number(14)?,
        stime: number(15)?,
        starttime: number(22)?,
    })
}

/// The effective uid and resident set size (KiB) from /proc/PID/status.
/// A process without memory (a zombie) has no `VmRSS` line: 0.
fn parse_status(text: &str) -> Option<(u32, u64)> {
    let mut uid = None;
    let mut rss = 0;
    for line in text.lines() {
        if let Some(ids) = line.strip_prefix("Uid:") {
            // Real, effective, saved, filesystem.
            uid = ids.split_whitespace().nth(1)?.parse().ok();
        } else if let Some(kb) = line.strip_prefix("VmRSS:") {
            rss = kb.split_whitespace().next()?.parse().ok()?;
        }
    }
    Some((uid?, rss))
}

/// /proc/PID/cmdline with its NULs as spaces; `[comm]` when it is empty.
fn command_line(cmdline: &[u8], comm: &str) -> String {
    let args: Vec<String> = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    if args.is_empty() {
        format!("[{comm}]")
    } else {
        args.join(" ")
    }
}

/// Reads one of the process's files; `None` when the process is gone.
fn read(pid: i32, file: &'static str) -> Result<Option<Vec<u8>>, SpawnError> {
    match fs::read(format!("/proc/{pid}/{file}")) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if gone(&e) => Ok(None),
        Err(e) => Err(SpawnError::Procfs {
            pid,
            file,
            reason: e.to_string(),
        }),
    }
}

/// Whether a read failed because the process exited (ENOENT for its
/// directory, ESRCH for a file of a process being torn down).
fn gone(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESRCH))
}

fn malformed(pid: i32, file: &'static str) -> SpawnError {
    SpawnError::Procfs {
        pid,
        file,
        reason: "not in the format the kernel documents".into(),
    }
}

/// The process `pid`'s figures, or `None` when it has exited.
pub fn process(pid: i32, clock: &Clock) -> Result<Option<ProcessInfo>, SpawnError> {
    let Some(stat) = read(pid, "stat")? else {
        return Ok(None);
    };
    // The name is whatever bytes the process chose (prctl PR_SET_NAME).
    let stat = parse_stat(&String::from_utf8_lossy(&stat)).ok_or_else(|| malformed(pid, "stat"))?;
    let Some(status) = read(pid, "status")? else {
        return Ok(None);
    };
    let (uid, rss_kib) =
        parse_status(&String::from_utf8_lossy(&status)).ok_or_else(|| malformed(pid, "status"))?;
    let Some(cmdline) = read(pid, "cmdline")? else {
        return Ok(None);
    };
    Ok(Some(ProcessInfo {
        pid,
        ppid: stat.ppid,
        uid,
        state: stat.state,
        elapsed_ms: clock.now_ms.saturating_sub(clock.ms(stat.starttime)),
        cpu_ms: clock.ms(stat.utime.saturating_add(stat.stime)),
        rss_kib,
        command: command_line(&cmdline, &stat.comm),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLEEP: &str = "412 (sleep) S 398 412 398 0 -1 4194560 98 0 0 0 3 7 0 0 20 0 1 0 \
        1520 1626112 184 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";

    #[test]
    fn stat_fields_are_found() {
        let s = parse_stat(SLEEP).unwrap();
        assert_eq!(
            s,
            Stat {
                comm: "sleep".into(),
                state: 'S',
                ppid: 398,
                utime: 3,
                stime: 7,
                starttime: 1520,
            }
        );
    }

    #[test]
    fn a_name_with_spaces_and_parentheses_ends_at_the_last_one() {
        let text = SLEEP.replace("(sleep)", "(a) Z 1 (b ))");
        let s = parse_stat(&text).unwrap();
        assert_eq!(s.comm, "a) Z 1 (b )");
        assert_eq!((s.state, s.ppid, s.starttime), ('S', 398, 1520));
        assert_eq!(parse_stat("7 () R 1 ").map(|s| s.comm), None);
        let empty = SLEEP.replace("(sleep)", "()");
        assert_eq!(parse_stat(&empty).unwrap().comm, "");
    }

    #[test]
    fn truncated_or_garbled_stat_is_refused() {
        assert_eq!(parse_stat(""), None);
        assert_eq!(parse_stat("412 sleep S 398"), None);
        assert_eq!(parse_stat("412 (sleep) S 398 412"), None);
        assert_eq!(parse_stat(&SLEEP.replace(" 398 ", " x ")), None);
        assert_eq!(parse_stat(&SLEEP.replace(") S", ")")), None);
    }

    #[test]
    fn status_gives_the_effective_uid_and_rss() {
        let status = "Name:\tsh\nState:\tS (sleeping)\nUid:\t1000\t1001\t1001\t1001\n\
            Gid:\t0\t0\t0\t0\nVmPeak:\t    1700 kB\nVmRSS:\t     936 kB\nThreads:\t1\n";
        assert_eq!(parse_status(status), Some((1001, 936)));
        // A zombie has no memory lines.
        assert_eq!(
            parse_status("Name:\tsh\nState:\tZ (zombie)\nUid:\t0\t0\t0\t0\n"),
            Some((0, 0))
        );
        assert_eq!(parse_status("Name:\tsh\n"), None);
        assert_eq!(parse_status("Uid:\tx\tx\tx\tx\n"), None);
    }

    #[test]
    fn command_lines_join_their_arguments() {
        assert_eq!(command_line(b"sleep\x001000\x00", "sleep"), "sleep 1000");
        assert_eq!(
            command_line(b"sh\x00-c\x00while true; do sleep 1; done\x00", "sh"),
            "sh -c while true; do sleep 1; done"
        );
        // No trailing NUL (a process that rewrote its arguments).
        assert_eq!(command_line(b"nginx: worker", "nginx"), "nginx: worker");
        assert_eq!(command_line(b"", "kworker/0:1"), "[kworker/0:1]");
        assert_eq!(command_line(b"\xff\x00", "x"), "\u{fffd}");
    }

    #[test]
    fn ticks_become_milliseconds_and_ages() {
        let clock = Clock {
            ticks_per_sec: 100,
            now_ms: 20_000,
        };
        assert_eq!(clock.ms(1520), 15_200);
        assert_eq!(clock.now_ms.saturating_sub(clock.ms(1520)), 4_800);
        assert_eq!(clock.ms(u64::MAX), u64::MAX / 100);
    }

    #[test]
    fn this_process_reads_and_a_gone_one_is_none() {
        let clock = Clock::now();
        let me = std::process::id() as i32;
        let p = process(me, &clock).unwrap().unwrap();
        assert_eq!(p.pid, me);
        assert_eq!(p.uid, nix::unistd::geteuid().as_raw());
        assert!(p.rss_kib > 0, "{p:?}");
        assert!(p.elapsed_ms < clock.now_ms, "{p:?}");
        assert!(!p.command.is_empty());
        // PIDs never go this high (pid_max is at most 2^22).
        assert_eq!(process(i32::MAX, &clock).unwrap(), None);
    }
}
