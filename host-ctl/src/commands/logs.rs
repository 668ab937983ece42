//! `host-ctl logs <pod> [app]`: the apps' output as the pod's monitor kept
//! it, while the pod runs and after it exited; stdout to stdout, stderr to
//! stderr. `-f` follows until the pod ends.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Result};
use kvmpod_api::manifest::PodManifest;

use crate::logs::{self, LogRecord, Stream};
use crate::pod::record::State;
use crate::pod::{store, StoredPod};

#[derive(Debug, Clone)]
pub struct Options {
    pub app: Option<String>,
    pub follow: bool,
    pub tail: Option<usize>,
    pub timestamps: bool,
    pub stream: Option<Stream>,
}

/// One line of output (the last may lack its newline).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    time: String,
    app: String,
    stream: Stream,
    bytes: Vec<u8>,
}

/// Cuts records into lines, keeping unfinished lines per app and stream.
#[derive(Default)]
struct Liner {
    partial: HashMap<(String, Stream), Line>,
}

impl Liner {
    fn push(&mut self, app: &str, r: &LogRecord, out: &mut Vec<Line>) {
        if r.dropped > 0 {
            out.push(Line {
                time: r.time.clone(),
                app: app.to_string(),
                stream: Stream::Stderr,
                bytes: format!("[host-ctl: {} bytes of output were dropped here: the agent's buffer was full]\n", r.dropped)
                    .into_bytes(),
            });
        }
        let key = (app.to_string(), r.stream);
        for piece in r.bytes().split_inclusive(|&b| b == b'\n') {
            let line = self.partial.entry(key.clone()).or_insert_with(|| Line {
                time: r.time.clone(),
                app: app.to_string(),
                stream: r.stream,
                bytes: Vec::new(),
            });
            line.bytes.extend_from_slice(piece);
            if piece.ends_with(b"\n") {
                if let Some(done) = self.partial.remove(&key) {
                    out.push(done);
                }
            }
        }
    }

    /// The unfinished lines, oldest first.
    fn drain(&mut self) -> Vec<Line> {
        let mut rest: Vec<Line> = self.partial.drain().map(|(_, l)| l).collect();
        rest.sort_by(|a, b| a.time.cmp(&b.time));
        rest
    }
}

fn print(lines: &[Line], prefix_width: Option<usize>, timestamps: bool) {
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    for l in lines {
        let w: &mut dyn Write = match l.stream {
            Stream::Stdout => &mut out,
            Stream::Stderr => &mut err,
        };
        if timestamps {
            let _ = write!(w, "{} ", l.time);
        }
        if let Some(width) = prefix_width {
            let _ = write!(w, "{:width$} | ", l.app);
        }
        let _ = w.write_all(&l.bytes);
        if prefix_width.is_some() && !l.bytes.ends_with(b"\n") {
            let _ = w.write_all(b"\n");
        }
    }
    let _ = out.flush();
    let _ = err.flush();
}

pub async fn run(state_dir: &Path, id: &str, o: Options) -> Result<i32> {
    let pod = StoredPod::open(state_dir, id)?;
    let manifest: PodManifest = serde_json::from_slice(&std::fs::read(pod.dir.manifest())?)?;
    let apps: Vec<String> = match &o.app {
        Some(a) if manifest.apps.iter().any(|m| &m.name == a) => vec![a.clone()],
        Some(a) => bail!(
            "pod {} has no app named {a:?} (apps: {})",
            pod.record.id,
            manifest
                .apps
                .iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => manifest.apps.iter().map(|m| m.name.clone()).collect(),
    };
    let prefix = (apps.len() > 1).then(|| apps.iter().map(String::len).max().unwrap_or(0));
    let wanted = |l: &Line| o.stream.is_none_or(|s| s == l.stream);

    let mut liner = Liner::default();
    let mut positions: Vec<u64> = vec![0; apps.len()];
    let read_new = |liner: &mut Liner, positions: &mut Vec<u64>| -> Result<Vec<Line>> {
        let mut lines = Vec::new();
        for (app, pos) in apps.iter().zip(positions.iter_mut()) {
            let (records, next) = logs::read_from(&pod.dir.app_log(app), *pos)?;
            *pos = next;
            for r in &records {
                liner.push(app, r, &mut lines);
            }
        }
        lines.sort_by(|a, b| a.time.cmp(&b.time));
        lines.retain(|l| wanted(l));
        Ok(lines)
    };

    let mut lines = read_new(&mut liner, &mut positions)?;
    if !o.follow {
        lines.extend(liner.drain().into_iter().filter(|l| wanted(l)));
    }
    if let Some(n) = o.tail {
        let cut = lines.len().saturating_sub(n);
        lines.drain(..cut);
    }
    print(&lines, prefix, o.timestamps);
    if !o.follow {
        return Ok(0);
    }
    loop {
        // Seen exited before reading: whatever the monitor wrote is on disk.
        let ended = store::reconcile(&pod.dir)?.state == State::Exited;
        let lines = read_new(&mut liner, &mut positions)?;
        print(&lines, prefix, o.timestamps);
        if ended {
            let rest: Vec<Line> = liner.drain().into_iter().filter(|l| wanted(l)).collect();
            print(&rest, prefix, o.timestamps);
            return Ok(0);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    #[test]
    fn records_become_lines_per_stream() {
        let t = SystemTime::now();
        let mut liner = Liner::default();
        let mut out = Vec::new();
        liner.push(
            "a",
            &LogRecord::new(t, Stream::Stdout, 0, b"one\ntw", 0),
            &mut out,
        );
        liner.push(
            "a",
            &LogRecord::new(t, Stream::Stderr, 6, b"err\n", 0),
            &mut out,
        );
        liner.push(
            "a",
            &LogRecord::new(t, Stream::Stdout, 10, b"o\nthree", 0),
            &mut out,
        );
        let texts: Vec<(Stream, &[u8])> = out.iter().map(|l| (l.stream, &l.bytes[..])).collect();
        assert_eq!(
            texts,
            [
                (Stream::Stdout, &b"one\n"[..]),
                (Stream::Stderr, &b"err\n"[..]),
                (Stream::Stdout, &b"two\n"[..])
            ]
        );
        let rest = liner.drain();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].bytes, b"three");
    }
}
