//! `host-ctl args <manifest>`: the commands `run` would start, shell-quoted,
//! one per line (the vsock backend first, when there is one), so a user can
//! see exactly what would run. Nothing is created or started.

use anyhow::Result;

use crate::launch::{self, RunOptions};
use crate::vmm::Program;

/// Quotes a word for a POSIX shell: as it is when it is plainly safe, else
/// in single quotes.
pub fn shell_quote(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@%+=:,./_-".contains(&b));
    if safe {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

pub fn command_line(cmd: &Program) -> String {
    std::iter::once(cmd.program.to_string_lossy().into_owned())
        .chain(cmd.args.iter().cloned())
        .map(|w| shell_quote(&w))
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn run(s: &RunOptions) -> Result<i32> {
    let plan = launch::plan(s)?;
    for n in plan.notes.lines() {
        eprintln!("host-ctl: {n}");
    }
    eprintln!(
        "host-ctl: pod directory {} (created by `host-ctl run`), guest CID {}",
        plan.dir.path.display(),
        plan.cid
    );
    for a in &plan.host_binds() {
        println!(
            "# then: bind-mount {} at {}{}",
            shell_quote(&a.source.to_string_lossy()),
            shell_quote(&a.path.to_string_lossy()),
            if a.read_only {
                ", read-only with everything under it"
            } else {
                ""
            }
        );
    }
    for b in [&plan.launch.vsock_backend, &plan.launch.net_backend]
        .into_iter()
        .flatten()
    {
        println!("{}", command_line(b));
    }
    println!("{}", command_line(&plan.launch.vm));
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_only_when_needed() {
        assert_eq!(shell_quote("--nodefaults"), "--nodefaults");
        assert_eq!(shell_quote("/srv/data,tag"), "/srv/data,tag");
        assert_eq!(
            shell_quote("console=ttyS0 panic=-1"),
            "'console=ttyS0 panic=-1'"
        );
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$HOME"), "'$HOME'");
    }
}
