//! Running a command on a terminal of the test's own (a pty pair), typing
//! on it and reading what it shows: how `run -t`, `attach` and `ctr -t`
//! are tested as a user at a terminal would use them.

use std::fs;
use std::io::{Read, Write};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::POD_LIMIT;

/// What is typed, and when.
pub struct Typed<'a> {
    pub keys: &'a [u8],
    /// Typed once the terminal shows this (a prompt); at once when None.
    pub after: Option<&'a str>,
}

impl<'a> Typed<'a> {
    pub fn now(keys: &'a [u8]) -> Self {
        Typed { keys, after: None }
    }

    pub fn after(prompt: &'a str, keys: &'a [u8]) -> Self {
        Typed {
            keys,
            after: Some(prompt),
        }
    }
}

/// Runs `cmd` with its stdin, stdout and stderr on a new terminal of
/// `rows` × `cols`, typing `typed` on it; its exit code and everything the
/// terminal showed. Fails after POD_LIMIT.
pub fn on_a_terminal(
    cmd: Command,
    (rows, cols): (u16, u16),
    typed: Typed<'_>,
) -> (Option<i32>, String) {
    typing_on_a_terminal(cmd, (rows, cols), &[typed])
}

/// [`on_a_terminal`], typing each of `steps` in turn, each once the
/// terminal shows what it waits for.
pub fn typing_on_a_terminal(
    mut cmd: Command,
    (rows, cols): (u16, u16),
    steps: &[Typed<'_>],
) -> (Option<i32>, String) {
    let size = nix::pty::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None).expect("a terminal");
    let slave = fs::File::from(pty.slave);
    cmd.stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave);
    let mut child = cmd.spawn().expect("a command on a terminal");
    // Only the child holds the slave now: the master reads EIO once it
    // exits.
    drop(cmd);
    let mut master = fs::File::from(pty.master);
    let mut keyboard = master.try_clone().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let reader = std::thread::spawn({
        let seen = Arc::clone(&seen);
        move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = master.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        }
    });
    let shown =
        |seen: &Arc<Mutex<Vec<u8>>>| String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
    let mut pending = steps.iter();
    let mut next = pending.next();
    let until = Instant::now() + POD_LIMIT;
    let status = loop {
        while let Some(t) = next {
            if !t.after.is_none_or(|p| shown(&seen).contains(p)) {
                break;
            }
            keyboard.write_all(t.keys).unwrap();
            next = pending.next();
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > until {
            let _ = child.kill();
            panic!(
                "the command on a terminal did not end within {POD_LIMIT:?}: {:?}",
                shown(&seen)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    reader.join().unwrap();
    (status.code(), shown(&seen))
}
