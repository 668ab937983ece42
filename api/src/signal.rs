//! Signal names and numbers, as users write them: `TERM`, `SIGTERM`, `15`,
//! `RTMIN+3` (on the command line and in a manifest's `stopSignal`).

/// Linux's signals 1 to 31, by number.
const NAMES: [&str; 31] = [
    "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2",
    "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG",
    "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS",
];
/// The first realtime signal the kernel offers (glibc reserves 32 and 33).
const RTMIN: i32 = 34;
const RTMAX: i32 = 64;

/// A signal name or number that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadSignal(String);

/// Parses a signal; the error says what is accepted.
pub fn parse(text: &str) -> Result<i32, BadSignal> {
    let t = text.trim();
    if let Ok(n) = t.parse::<i32>() {
        return if (1..=RTMAX).contains(&n) {
            Ok(n)
        } else {
            Err(BadSignal(format!(
                "{n} is not a signal number (1 to {RTMAX})"
            )))
        };
    }
    let upper = t.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(i) = NAMES.iter().position(|n| *n == name) {
        return Ok(i as i32 + 1);
    }
    let rt = |base: i32, rest: &str, sign: i32| -> Option<i32> {
        let off: i32 = if rest.is_empty() {
            0
        } else {
            rest.parse().ok()?
        };
        let n = base + sign * off;
        (RTMIN..=RTMAX).contains(&n).then_some(n)
    };
    let realtime = if let Some(rest) = name.strip_prefix("RTMIN") {
        rest.strip_prefix('+')
            .map_or_else(|| (rest.is_empty()).then_some(RTMIN), |r| rt(RTMIN, r, 1))
    } else if let Some(rest) = name.strip_prefix("RTMAX") {
        rest.strip_prefix('-')
            .map_or_else(|| (rest.is_empty()).then_some(RTMAX), |r| rt(RTMAX, r, -1))
    } else {
        None
    };
    realtime.ok_or_else(|| {
        BadSignal(format!(
            "unknown signal {text:?} (use a name such as TERM or KILL, or a number)"
        ))
    })
}

/// `SIGTERM` for 15, `SIGRTMIN+2` for 36.
pub fn name(n: i32) -> String {
    match n {
        1..=31 => format!("SIG{}", NAMES[n as usize - 1]),
        RTMIN => "SIGRTMIN".into(),
        n if (RTMIN..=RTMAX).contains(&n) => format!("SIGRTMIN+{}", n - RTMIN),
        n => format!("signal {n}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_parse() {
        assert_eq!(parse("TERM"), Ok(15));
        assert_eq!(parse("sigkill"), Ok(9));
        assert_eq!(parse("SIGUSR1"), Ok(10));
        assert_eq!(parse("15"), Ok(15));
        assert_eq!(parse("RTMIN"), Ok(34));
        assert_eq!(parse("RTMIN+3"), Ok(37));
        assert_eq!(parse("SIGRTMAX-1"), Ok(63));
        assert!(parse("0").unwrap_err().0.contains("not a signal number"));
        assert!(parse("65").is_err());
        assert!(parse("-9").is_err());
        assert!(parse("NOPE").unwrap_err().0.contains("unknown signal"));
        assert!(parse("RTMIN+99").is_err());
    }

    #[test]
    fn numbers_have_names() {
        assert_eq!(name(15), "SIGTERM");
        assert_eq!(name(9), "SIGKILL");
        assert_eq!(name(36), "SIGRTMIN+2");
        assert_eq!(name(99), "signal 99");
    }
}
