//! Running host-ctl from a test: to completion with a time limit, or in the
//! background for tests that interrupt it or follow its output.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What a host-ctl run produced.
#[derive(Debug)]
pub struct Outcome {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Outcome {
    /// Everything, for assertion messages.
    pub fn dump(&self) -> String {
        format!(
            "exit code {:?} after {:.1?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.elapsed, self.stdout, self.stderr
        )
    }

    /// Fails unless the command exited with `code`.
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, Some(code), "{}", self.dump());
        self
    }
}

/// Sends `sig` to a process the test knows by pid.
pub fn send_signal(pid: i32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
}

/// Runs `cmd`, collecting its output, and kills it after `limit` (a boot
/// test must fail, not hang CI).
pub fn run_with_limit(cmd: Command, limit: Duration) -> Outcome {
    Running::start(cmd).finish(limit)
}

/// A process in progress, its output collected as it comes.
pub struct Running {
    child: Child,
    what: String,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
    start: Instant,
}

fn collect(mut from: impl Read + Send + 'static, into: Arc<Mutex<String>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => into
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
    })
}

/// How long the output of a process that exited may take to reach its end:
/// longer means one of its children kept the pipes open.
const READER_GRACE: Duration = Duration::from_secs(30);

impl Running {
    /// Waits up to `grace` for the output readers to reach end of file;
    /// whether some did not (they are left running: a child of the process
    /// holds the pipe, and the test must fail rather than hang).
    fn join_readers(&mut self, grace: Duration) -> bool {
        let until = Instant::now() + grace;
        while self.readers.iter().any(|r| !r.is_finished()) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        let leaked = self.readers.iter().any(|r| !r.is_finished());
        for r in self.readers.drain(..) {
            if r.is_finished() {
                let _ = r.join();
            }
        }
        leaked
    }

    /// Starts `cmd` with its stdout and stderr collected.
    pub fn start(mut cmd: Command) -> Running {
        let what = format!("{cmd:?}");
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what}: {e}"));
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            collect(child.stdout.take().expect("piped"), stdout.clone()),
            collect(child.stderr.take().expect("piped"), stderr.clone()),
        ];
        Running {
            child,
            what,
            stdout,
            stderr,
            readers,
            start: Instant::now(),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn stdout(&self) -> String {
        self.stdout
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until stdout contains `needle`; panics after `limit` or if the
    /// process exits first.
    pub fn wait_for_stdout(&mut self, needle: &str, limit: Duration) {
        let until = Instant::now() + limit;
        while !self.stdout().contains(needle) {
            if let Ok(Some(status)) = self.child.try_wait() {
                // Let the readers catch up with what it printed last.
                std::thread::sleep(Duration::from_millis(100));
                if self.stdout().contains(needle) {
                    return;
                }
                panic!(
                    "{} exited ({status}) before printing {needle:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    self.what,
                    self.stdout(),
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < until,
                "no {needle:?} within {limit:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                self.stdout(),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        send_signal(self.pid(), sig);
    }

    /// Waits for the process to exit (killing it and failing after `limit`).
    pub fn finish(mut self, limit: Duration) -> Outcome {
        let until = Instant::now() + limit;
        let code = loop {
            if let Some(status) = self.child.try_wait().expect("waiting for a child") {
                break status.code();
            }
            if Instant::now() > until {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let leaked = if self.join_readers(READER_GRACE) {
                    " (and a process it started still holds its output)"
                } else {
                    ""
                };
                panic!(
                    "{} did not finish within {limit:?}{leaked}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    self.what,
                    self.stdout(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if self.join_readers(READER_GRACE) {
            panic!(
                "{} exited, but a process it started still holds its stdout or stderr {READER_GRACE:?} later (a VM or helper outlived it?)\n--- stdout ---\n{}\n--- stderr ---\n{}",
                self.what,
                self.stdout(),
                self.stderr()
            );
        }
        Outcome {
            code,
            stdout: self.stdout(),
            stderr: self.stderr(),
            elapsed: self.start.elapsed(),
        }
    }
}
