//! `host-ctl logs <pod> [app]`: the apps' output as the pod's monitor kept
//! it, while the pod runs and after it exited, read across the rotated
//! files; stdout to stdout, stderr to stderr. `-f` follows until the pod
//! ends. Where output was dropped by the agent, or rotated away, a line
//! says so (on stderr).
//!
//! Lines are written as records are read, never gathered whole: a pod's
//! logs may be hundreds of MiB. Only `--tail` keeps lines, and only N.

use std::collections::{HashMap, VecDeque};
use std::io::{BufWriter, Stderr, Stdout, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use kvmpod_api::manifest::PodManifest;
use kvmpod_api::protocol::{AppState, StatusRequest};

use crate::agent::{self, AgentClient};
use crate::logs::{Follower, Item, LogRecord, Stream};
use crate::pod::record::State;
use crate::pod::{store, StoredPod, VmLaunch};

#[derive(Debug, Clone)]
pub struct Options {
    pub app: Option<String>,
    pub follow: bool,
    pub tail: Option<usize>,
    pub timestamps: bool,
    pub stream: Option<Stream>,
}

/// One line of output (the last may lack its newline).
#[derive(Debug, Clone, Copy)]
struct Line<'a> {
    time: &'a str,
    app: &'a str,
    stream: Stream,
    bytes: &'a [u8],
    /// host-ctl's own note, shown whatever `--stream` asks for.
    notice: bool,
}

/// Where finished lines go.
trait Sink {
    fn line(&mut self, l: Line<'_>);
}

/// Cuts records into lines, keeping unfinished lines (and the time each
/// started) per app and stream; or, `raw`, passes the bytes on as they
/// come, for one app's output shown undecorated (a shell's prompt shows
/// before its newline, as `docker logs -f` of a terminal shows it).
#[derive(Default)]
struct Liner {
    partial: HashMap<(String, Stream), (String, Vec<u8>)>,
    raw: bool,
}

impl Liner {
    fn push(&mut self, app: &str, r: &LogRecord, sink: &mut dyn Sink) {
        if r.dropped > 0 {
            let text = format!(
                "[host-ctl: {} bytes of output were dropped here (at offset {}): the agent's buffer was full]\n",
                r.dropped,
                r.start()
            );
            sink.line(Line {
                time: &r.time,
                app,
                stream: Stream::Stderr,
                bytes: text.as_bytes(),
                notice: false,
            });
        }
        let data = r.bytes();
        let key = (app.to_string(), r.stream);
        let mut rest = &data[..];
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            let (piece, after) = rest.split_at(nl + 1);
            let line = |time: &str, bytes: &[u8], sink: &mut dyn Sink| {
                sink.line(Line {
                    time,
                    app,
                    stream: r.stream,
                    bytes,
                    notice: false,
                })
            };
            match self.partial.remove(&key) {
                Some((time, mut start)) => {
                    start.extend_from_slice(piece);
                    line(&time, &start, sink);
                }
                None => line(&r.time, piece, sink),
            }
            rest = after;
        }
        if !rest.is_empty() && self.raw && !self.partial.contains_key(&key) {
            sink.line(Line {
                time: &r.time,
                app,
                stream: r.stream,
                bytes: rest,
                notice: false,
            });
        } else if !rest.is_empty() {
            let (_, buf) = self
                .partial
                .entry(key)
                .or_insert_with(|| (r.time.clone(), Vec::new()));
            buf.extend_from_slice(rest);
        }
    }

    /// One item of an app's log.
    fn take(&mut self, app: &str, item: Item, sink: &mut dyn Sink) {
        match item {
            Item::Record(r) => self.push(app, &r, sink),
            Item::RotatedAway { offset, time } => {
                let text = format!("[host-ctl: output before offset {offset} was rotated away]\n");
                sink.line(Line {
                    time: &time,
                    app,
                    stream: Stream::Stderr,
                    bytes: text.as_bytes(),
                    notice: true,
                });
            }
        }
    }

    /// The unfinished lines, oldest first, when no more will come.
    fn drain(&mut self, sink: &mut dyn Sink) {
        let mut rest: Vec<_> = self.partial.drain().collect();
        rest.sort_by(|a, b| a.1 .0.cmp(&b.1 .0));
        for ((app, stream), (time, bytes)) in rest {
            sink.line(Line {
                time: &time,
                app: &app,
                stream,
                bytes: &bytes,
                notice: false,
            });
        }
    }
}

/// Writes lines as `logs` shows them (filtered by `--stream`, with the
/// timestamps and app prefixes asked for), or keeps the last N for
/// `--tail`.
struct Printer {
    out: BufWriter<Stdout>,
    err: BufWriter<Stderr>,
    /// The stream written last: the other is flushed before a switch, so
    /// that both keep their order on one terminal.
    last: Stream,
    prefix_width: Option<usize>,
    timestamps: bool,
    stream: Option<Stream>,
    tail: Option<Tail>,
}

/// The last `n` formatted lines, for `--tail`.
struct Tail {
    n: usize,
    kept: VecDeque<(Stream, Vec<u8>)>,
}

impl Printer {
    fn format(&self, l: &Line<'_>, buf: &mut Vec<u8>) {
        if self.timestamps {
            buf.extend_from_slice(l.time.as_bytes());
            buf.push(b' ');
        }
        if let Some(width) = self.prefix_width {
            buf.extend_from_slice(format!("{:width$} | ", l.app).as_bytes());
        }
        buf.extend_from_slice(l.bytes);
        if self.prefix_width.is_some() && !l.bytes.ends_with(b"\n") {
            buf.push(b'\n');
        }
    }

    /// Writes formatted bytes to a stream. A closed pipe is not an error
    /// worth reporting here.
    fn write(&mut self, stream: Stream, bytes: &[u8]) {
        if stream != self.last {
            self.flush();
            self.last = stream;
        }
        let _ = match stream {
            Stream::Stdout => self.out.write_all(bytes),
            Stream::Stderr => self.err.write_all(bytes),
        };
    }

    fn flush(&mut self) {
        let _ = self.out.flush();
        let _ = self.err.flush();
    }

    /// Prints the lines kept for `--tail`; lines from now on are printed
    /// as they come.
    fn end_tail(&mut self) {
        if let Some(tail) = self.tail.take() {
            for (stream, bytes) in tail.kept {
                self.write(stream, &bytes);
            }
        }
        self.flush();
    }
}

impl Sink for Printer {
    fn line(&mut self, l: Line<'_>) {
        if !(l.notice || self.stream.is_none_or(|s| s == l.stream)) {
            return;
        }
        let mut buf = Vec::with_capacity(l.bytes.len() + 48);
        self.format(&l, &mut buf);
        match &mut self.tail {
            Some(tail) => {
                if tail.kept.len() == tail.n {
                    tail.kept.pop_front();
                }
                if tail.n > 0 {
                    tail.kept.push_back((l.stream, buf));
                }
            }
            None => self.write(l.stream, &buf),
        }
    }
}

/// Whether every app of `apps` is over as far as its output goes: it has
/// exited (or never started, or was removed from the pod), its output is
/// closed (no pipe of it is open any more) and the host has persisted all
/// it wrote.
async fn outputs_over(client: &AgentClient, apps: &[String]) -> bool {
    let Ok(st) = client
        .status(
            agent::deadline(Duration::from_secs(5)),
            &StatusRequest::new(),
        )
        .await
    else {
        return false;
    };
    apps.iter().all(|name| {
        st.apps.iter().find(|a| &a.name == name).is_none_or(|a| {
            matches!(
                a.state.enum_value_or_default(),
                AppState::APP_STATE_EXITED | AppState::APP_STATE_FAILED
            ) && a.output_closed
                && a.output_acked == a.output_end
        })
    })
}

/// The apps to show: `app`, or all of them.
fn chosen_apps(pod: &StoredPod, app: Option<&str>) -> Result<Vec<String>> {
    let path = pod.dir.manifest();
    let text = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let manifest: PodManifest = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not what host-ctl wrote", path.display()))?;
    let names = || manifest.apps.iter().map(|m| m.name.clone());
    match app {
        Some(a) if manifest.apps.iter().any(|m| m.name == a) => Ok(vec![a.to_string()]),
        Some(a) => bail!(
            "pod {} has no app named {a:?} (apps: {})",
            pod.record.id,
            names().collect::<Vec<_>>().join(", ")
        ),
        None => Ok(names().collect()),
    }
}

fn item_time(i: &Item) -> &str {
    match i {
        Item::Record(r) => &r.time,
        Item::RotatedAway { time, .. } => time,
    }
}

/// Each app's log reader, and the lines they make.
struct Readers {
    apps: Vec<(String, Follower)>,
    liner: Liner,
}

impl Readers {
    /// Hands `sink` the lines written since the last call. One app's are
    /// streamed; several apps' records are put in time order first.
    fn poll(&mut self, sink: &mut dyn Sink) -> Result<()> {
        let liner = &mut self.liner;
        if let [(app, follower)] = &mut self.apps[..] {
            return follower
                .poll(&mut |item| liner.take(app, item, sink))
                .with_context(|| format!("reading the output of app {app}"));
        }
        let mut items: Vec<(usize, Item)> = Vec::new();
        for (i, (app, follower)) in self.apps.iter_mut().enumerate() {
            follower
                .poll(&mut |item| items.push((i, item)))
                .with_context(|| format!("reading the output of app {app}"))?;
        }
        items.sort_by(|a, b| item_time(&a.1).cmp(item_time(&b.1)));
        for (i, item) in items {
            liner.take(&self.apps[i].0, item, sink);
        }
        Ok(())
    }
}

pub async fn run(state_dir: &Path, id: &str, o: Options) -> Result<i32> {
    let pod = StoredPod::open(state_dir, id)?;
    let apps = chosen_apps(&pod, o.app.as_deref())?;
    let max_files = VmLaunch::read(&pod.dir)
        .map(|l| l.log_rotation)
        .unwrap_or_default()
        .max_files;
    let mut readers = Readers {
        apps: apps
            .iter()
            .map(|a| (a.clone(), Follower::new(pod.dir.app_logs(a, max_files))))
            .collect(),
        liner: Liner {
            raw: apps.len() == 1 && !o.timestamps && o.tail.is_none(),
            ..Liner::default()
        },
    };
    let mut printer = Printer {
        out: BufWriter::with_capacity(256 << 10, std::io::stdout()),
        err: BufWriter::new(std::io::stderr()),
        last: Stream::Stdout,
        prefix_width: (apps.len() > 1).then(|| apps.iter().map(String::len).max().unwrap_or(0)),
        timestamps: o.timestamps,
        stream: o.stream,
        tail: o.tail.map(|n| Tail {
            n,
            kept: VecDeque::new(),
        }),
    };
    readers.poll(&mut printer)?;
    if !o.follow {
        readers.liner.drain(&mut printer);
        printer.end_tail();
        return Ok(0);
    }
    printer.end_tail();
    // One app's output ends with that app, as `docker logs -f` ends with
    // its container: in a sandbox pod the pod lives on.
    let client = match o.app {
        Some(_) => pod.client().await.ok(),
        None => None,
    };
    loop {
        // Seen over before reading: whatever the monitor wrote is on disk.
        let ended = store::reconcile(&pod.dir)?.state == State::Exited
            || match &client {
                Some(c) => outputs_over(c, &apps).await,
                None => false,
            };
        readers.poll(&mut printer)?;
        if ended {
            readers.liner.drain(&mut printer);
            printer.flush();
            return Ok(0);
        }
        printer.flush();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::{LogFiles, Rotation, Writer};
    use std::time::SystemTime;

    /// Lines as (stream, text, notice).
    #[derive(Default)]
    struct Lines(Vec<(Stream, String, bool)>);

    impl Sink for Lines {
        fn line(&mut self, l: Line<'_>) {
            let text = String::from_utf8_lossy(l.bytes).into_owned();
            self.0.push((l.stream, text, l.notice));
        }
    }

    impl Lines {
        fn texts(&self) -> Vec<&str> {
            self.0.iter().map(|l| l.1.as_str()).collect()
        }
    }

    #[test]
    fn records_become_lines_per_stream() {
        let t = SystemTime::now();
        let mut liner = Liner::default();
        let mut out = Lines::default();
        for r in [
            LogRecord::new(t, Stream::Stdout, 0, b"one\ntw", 0),
            LogRecord::new(t, Stream::Stderr, 6, b"err\n", 0),
            LogRecord::new(t, Stream::Stdout, 10, b"o\nthree", 0),
        ] {
            liner.push("a", &r, &mut out);
        }
        let lines: Vec<(Stream, &str)> = out.0.iter().map(|l| (l.0, l.1.as_str())).collect();
        assert_eq!(
            lines,
            [
                (Stream::Stdout, "one\n"),
                (Stream::Stderr, "err\n"),
                (Stream::Stdout, "two\n")
            ]
        );
        let mut rest = Lines::default();
        liner.drain(&mut rest);
        assert_eq!(rest.texts(), ["three"]);
    }

    /// Raw, an unfinished line (a prompt) is passed on at once; its
    /// newline, when it comes, is its own piece.
    #[test]
    fn raw_output_passes_unfinished_lines_at_once() {
        let t = SystemTime::now();
        let mut liner = Liner {
            raw: true,
            ..Liner::default()
        };
        let mut out = Lines::default();
        for r in [
            LogRecord::new(t, Stream::Stdout, 0, b"one\n/ $ ", 0),
            LogRecord::new(t, Stream::Stdout, 8, b"ls\ntwo\n", 0),
        ] {
            liner.push("a", &r, &mut out);
        }
        assert_eq!(out.texts(), ["one\n", "/ $ ", "ls\n", "two\n"]);
        let mut rest = Lines::default();
        liner.drain(&mut rest);
        assert!(rest.0.is_empty());
    }

    fn readers(apps: Vec<(&str, LogFiles)>) -> Readers {
        Readers {
            apps: apps
                .into_iter()
                .map(|(a, f)| (a.to_string(), Follower::new(f)))
                .collect(),
            liner: Liner::default(),
        }
    }

    #[test]
    fn dropped_output_is_a_line_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let files = crate::pod::PodDir::of(dir.path(), "p").app_logs("a", 2);
        let mut w = Writer::open(&files, Rotation::default()).unwrap();
        let t = SystemTime::now();
        w.push_data(t, Stream::Stdout, b"before\n").unwrap();
        w.push_dropped(t, Stream::Stdout, 4096).unwrap();
        w.push_data(t, Stream::Stdout, b"after\n").unwrap();
        w.flush().unwrap();
        let mut out = Lines::default();
        readers(vec![("a", files)]).poll(&mut out).unwrap();
        assert_eq!(
            out.texts(),
            [
                "before\n",
                "[host-ctl: 4096 bytes of output were dropped here (at offset 7): the agent's buffer was full]\n",
                "after\n"
            ]
        );
        assert_eq!(out.0[1].0, Stream::Stderr);
    }

    #[test]
    fn logs_read_across_rotated_files_and_say_what_was_rotated_away() {
        let dir = tempfile::tempdir().unwrap();
        let files = crate::pod::PodDir::of(dir.path(), "p").app_logs("a", 2);
        let rot = Rotation {
            max_size: 250,
            max_files: 2,
        };
        let mut w = Writer::open(&files, rot).unwrap();
        for i in 0..5 {
            let line = format!("line {i} {}\n", "x".repeat(40));
            w.push_data(SystemTime::now(), Stream::Stdout, line.as_bytes())
                .unwrap();
            w.flush().unwrap();
        }
        // ~135 bytes a record: one per file, three files kept of five.
        let mut r = readers(vec![("a", files.clone())]);
        let mut out = Lines::default();
        r.poll(&mut out).unwrap();
        let t = out.texts();
        assert_eq!(
            t[0],
            "[host-ctl: output before offset 96 was rotated away]\n"
        );
        assert_eq!((out.0[0].0, out.0[0].2), (Stream::Stderr, true));
        assert!(t[1].starts_with("line 2 "), "{t:?}");
        assert!(t[3].starts_with("line 4 "), "{t:?}");
        assert_eq!(t.len(), 4);
        // Following: a record more, and a rotation, show the new line only.
        w.push_data(SystemTime::now(), Stream::Stdout, b"line 5\n")
            .unwrap();
        w.flush().unwrap();
        let mut more = Lines::default();
        r.poll(&mut more).unwrap();
        assert_eq!(more.texts(), ["line 5\n"]);
        let mut none = Lines::default();
        r.poll(&mut none).unwrap();
        assert!(none.0.is_empty());
    }

    #[test]
    fn several_apps_are_merged_by_time() {
        let dir = tempfile::tempdir().unwrap();
        let pod = crate::pod::PodDir::of(dir.path(), "p");
        let (fa, fb) = (pod.app_logs("a", 1), pod.app_logs("b", 1));
        let mut wa = Writer::open(&fa, Rotation::default()).unwrap();
        let mut wb = Writer::open(&fb, Rotation::default()).unwrap();
        let t = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        wa.push_data(t(1), Stream::Stdout, b"a1\n").unwrap();
        wb.push_data(t(2), Stream::Stdout, b"b2\n").unwrap();
        wa.push_data(t(3), Stream::Stdout, b"a3\n").unwrap();
        wa.flush().unwrap();
        wb.flush().unwrap();
        let mut out = Lines::default();
        readers(vec![("a", fa), ("b", fb)]).poll(&mut out).unwrap();
        assert_eq!(out.texts(), ["a1\n", "b2\n", "a3\n"]);
    }
}
