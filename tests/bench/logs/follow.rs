//! `host-ctl logs -f` on the running pod, as a user follows an app: the
//! time its stdout has shown a whole run, for the "keeps up" figures.
//!
//! It is started with `--tail 1` before the run, so it reads the app's
//! kept logs first (up to the rotation limit) and prints their last line;
//! that line on its stdout says it has caught up and follows. The run's
//! bytes are then counted on its stdout (one app, no prefix, no
//! timestamps: exactly the app's bytes) by a thread of their own, which
//! notes the time the last one arrived and checks it is the run's last
//! line.

use std::fs::File;
use std::io::Read;
use std::process::{Child, ChildStdout, Stdio};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::ctx::Ctx;

/// How long `logs -f` may take to read the kept logs, and then to print a
/// run after it was persisted.
const LIMIT: Duration = Duration::from_secs(300);

/// A run `logs -f` is expected to print: its size and its last line.
pub struct Expect {
    pub bytes: u64,
    pub last_line: Vec<u8>,
}

/// A running `host-ctl logs -f --tail 1 <pod> <app>`; ended when dropped.
pub struct Follow {
    child: Child,
    err_path: std::path::PathBuf,
    done: Receiver<Result<Instant>>,
}

impl Follow {
    /// Starts it and waits until it has printed the kept logs' last line;
    /// `run` is the run that will be triggered next.
    pub fn start(ctx: &Ctx, id: &str, app: &str, run: Expect) -> Result<Follow> {
        let err_path = ctx.work.join("logs-f.stderr");
        let err =
            File::create(&err_path).with_context(|| format!("creating {}", err_path.display()))?;
        let mut child = ctx
            .host_ctl()
            .args(["logs", "-f", "--tail", "1", id, app])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .context("starting host-ctl logs -f")?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("host-ctl logs -f has no stdout"))?;
        let (ready_tx, ready) = channel();
        let (done_tx, done) = channel();
        std::thread::spawn(move || {
            let _ = done_tx.send(count(stdout, &ready_tx, &run));
        });
        let mut f = Follow {
            child,
            err_path,
            done,
        };
        match ready.recv_timeout(LIMIT) {
            Ok(()) => Ok(f),
            Err(_) => Err(f.failed("did not print the kept logs' last line")),
        }
    }

    /// Waits until the run is printed; when its last byte was.
    pub fn printed(mut self) -> Result<Instant> {
        match self.done.recv_timeout(LIMIT) {
            Ok(Ok(t)) => Ok(t),
            Ok(Err(e)) => Err(self.failed(&format!("{e:#}"))),
            Err(_) => Err(self.failed("did not print the whole run")),
        }
    }

    /// An error with what `logs -f` said on stderr; ends it first.
    fn failed(&mut self, what: &str) -> anyhow::Error {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let said = std::fs::read_to_string(&self.err_path).unwrap_or_default();
        anyhow!("host-ctl logs -f {what}; its stderr: {:?}", said.trim())
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads `logs -f`'s stdout: says when its first line is complete, then
/// counts the run's bytes until they are all there; when the last came.
fn count(mut out: ChildStdout, ready: &Sender<()>, run: &Expect) -> Result<Instant> {
    let mut buf = vec![0u8; 256 << 10];
    let mut run_bytes = loop {
        let n = out.read(&mut buf).context("reading logs -f")?;
        if n == 0 {
            bail!("logs -f ended before its first line");
        }
        if let Some(nl) = buf[..n].iter().position(|&b| b == b'\n') {
            let _ = ready.send(());
            break buf[nl + 1..n].to_vec();
        }
    };
    let mut got = run_bytes.len() as u64;
    loop {
        if got >= run.bytes {
            let at = Instant::now();
            if got > run.bytes || !run_bytes.ends_with(&run.last_line) {
                bail!(
                    "logs -f printed {got} bytes, not the run's {} ending {:?}",
                    run.bytes,
                    String::from_utf8_lossy(&run.last_line)
                );
            }
            return Ok(at);
        }
        let n = out.read(&mut buf).context("reading logs -f")?;
        if n == 0 {
            bail!("logs -f ended after {got} of the run's {} bytes", run.bytes);
        }
        got += n as u64;
        // Only the end is checked: keep a tail, not the run.
        run_bytes.extend_from_slice(&buf[..n]);
        let keep = run.last_line.len();
        if run_bytes.len() > keep {
            run_bytes.drain(..run_bytes.len() - keep);
        }
    }
}
