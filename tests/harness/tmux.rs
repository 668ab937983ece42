//! A real terminal: a tmux server of the test's own (its own socket and
//! configuration) running one command in a window of a given size. Keys
//! are sent as a user types them, the screen is read as tmux shows it,
//! and the window can be resized, as a user's terminal would be.

use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The one session (and window) a test's server runs.
const SESSION: &str = "t";

/// A tmux server running one command; killed when dropped.
pub struct Tmux {
    socket: PathBuf,
    /// Where the command's exit status is written when it exits.
    status: PathBuf,
}

impl Tmux {
    /// Starts `cmd` (its program, arguments and environment) in a window
    /// of `cols` × `rows`, with a server of its own under `dir`. The pane
    /// stays once the command exits, so its screen can be read; a shell
    /// around the command writes its exit status (tmux's own record of it
    /// is empty for some exits), ignoring the keys' signals itself so that
    /// only the command gets them.
    pub fn start(dir: &Path, cmd: &Command, (cols, rows): (u16, u16)) -> Tmux {
        assert!(
            Command::new("tmux").arg("-V").output().is_ok(),
            "tmux is missing; run `make deps` as root"
        );
        let conf = dir.join("tmux.conf");
        std::fs::write(
            &conf,
            "set -g remain-on-exit on\nset -g status off\nset -g history-limit 10000\n",
        )
        .expect("writing tmux.conf");
        let t = Tmux {
            socket: dir.join("tmux.sock"),
            status: dir.join("tmux.status"),
        };
        let _ = std::fs::remove_file(&t.status);
        let (cols, rows) = (cols.to_string(), rows.to_string());
        let line = format!(
            "trap '' INT QUIT; (trap - INT QUIT; {}); echo $? > {}",
            shell_line(cmd),
            quote(&t.status.to_string_lossy())
        );
        let conf = conf.to_string_lossy();
        t.tmux(&[
            "-f",
            &conf,
            "new-session",
            "-d",
            "-s",
            SESSION,
            "-x",
            &cols,
            "-y",
            &rows,
            &line,
        ]);
        t
    }

    /// Runs `tmux <args>` against this server; its stdout.
    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("running tmux");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// What the window shows now.
    pub fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", SESSION])
    }

    /// Everything the window showed, its history included.
    pub fn history(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", SESSION, "-S", "-"])
    }

    /// Waits until the window shows `needle`; what it shows then. Fails
    /// with the screen after `limit`.
    pub fn wait_for(&self, needle: &str, limit: Duration) -> String {
        let until = Instant::now() + limit;
        loop {
            let history = self.history();
            if history.contains(needle) {
                return history;
            }
            assert!(
                Instant::now() < until,
                "the terminal did not show {needle:?} in {limit:?}; it shows:\n{history}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Types `text` as it is.
    pub fn type_text(&self, text: &str) {
        self.tmux(&["send-keys", "-t", SESSION, "-l", text]);
    }

    /// Presses keys by tmux's names (`C-c`, `Enter`, `C-p`).
    pub fn press(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", SESSION];
        args.extend_from_slice(keys);
        self.tmux(&args);
    }

    /// Makes the window `cols` × `rows`, as a user resizing it would.
    pub fn resize(&self, (cols, rows): (u16, u16)) {
        let (cols, rows) = (cols.to_string(), rows.to_string());
        self.tmux(&["resize-window", "-t", SESSION, "-x", &cols, "-y", &rows]);
    }

    /// The terminal type programs in the window are given.
    pub fn term(&self) -> String {
        self.tmux(&["show-options", "-gv", "default-terminal"])
            .trim()
            .to_string()
    }

    /// Waits until the command has exited; its exit status. Fails with the
    /// screen after `limit`.
    pub fn exit_status(&self, limit: Duration) -> i32 {
        let until = Instant::now() + limit;
        loop {
            if let Ok(status) = std::fs::read_to_string(&self.status) {
                return status.trim().parse().expect("an exit status");
            }
            assert!(
                Instant::now() < until,
                "the command did not exit in {limit:?}; the terminal shows:\n{}",
                self.history()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
    }
}

/// `cmd` as a line for `sh`: `env` with its environment, its program and
/// arguments, each quoted.
fn shell_line(cmd: &Command) -> String {
    let mut line = String::from("exec env");
    for (k, v) in cmd.get_envs() {
        let k = k.to_string_lossy();
        match v {
            Some(v) => write!(line, " {}", quote(&format!("{k}={}", v.to_string_lossy()))),
            None => write!(line, " -u {}", quote(&k)),
        }
        .expect("writing to a String");
    }
    let program = cmd.get_program().as_bytes();
    write!(line, " {}", quote(&String::from_utf8_lossy(program))).expect("writing to a String");
    for a in cmd.get_args() {
        write!(line, " {}", quote(&a.to_string_lossy())).expect("writing to a String");
    }
    line
}

/// `s` in single quotes, for `sh`.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_becomes_a_quoted_line() {
        let mut cmd = Command::new("/bin/echo");
        cmd.args(["it's", "a b"]).env("X", "1 2").env_remove("TERM");
        assert_eq!(
            shell_line(&cmd),
            r"exec env -u 'TERM' 'X=1 2' '/bin/echo' 'it'\''s' 'a b'"
        );
    }
}
