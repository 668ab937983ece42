//! Printing apps' output on the terminal, stdout to stdout and stderr to
//! stderr: each line prefixed by its app's name (`web | ...`) when the pod
//! has several apps, raw (as docker and podman print) when it has one.
//! Partial lines are held until their newline, so apps writing at once
//! never interleave inside a line.

use std::collections::HashMap;
use std::io::Write;

use super::Stream;

/// One app's prefix and unfinished lines (stdout, stderr).
struct AppLines {
    prefix: Vec<u8>,
    partial: [Vec<u8>; 2],
}

pub struct Printer {
    /// The widest app name; None when lines go unprefixed.
    width: Option<usize>,
    apps: HashMap<String, AppLines>,
}

fn index(stream: Stream) -> usize {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

impl Printer {
    pub fn new<'a>(apps: impl Iterator<Item = &'a str>) -> Self {
        let names: Vec<&str> = apps.collect();
        let width = (names.len() > 1).then(|| names.iter().map(|a| a.len()).max().unwrap_or(0));
        let mut p = Printer {
            width,
            apps: HashMap::new(),
        };
        for a in names {
            p.app(a);
        }
        p
    }

    fn app(&mut self, app: &str) -> &mut AppLines {
        let width = self.width;
        self.apps
            .entry(app.to_string())
            .or_insert_with(|| AppLines {
                prefix: width
                    .map(|width| format!("{app:width$} | ").into_bytes())
                    .unwrap_or_default(),
                partial: [Vec::new(), Vec::new()],
            })
    }

    /// The lines of `data` that are complete, formatted; with one app,
    /// `data` as it came (a prompt without a newline shows at once).
    pub fn format(&mut self, app: &str, stream: Stream, data: &[u8]) -> Vec<u8> {
        if self.width.is_none() {
            return data.to_vec();
        }
        let lines = self.app(app);
        let buf = &mut lines.partial[index(stream)];
        let mut out = Vec::with_capacity(data.len() + 64);
        let mut rest = data;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            out.extend_from_slice(&lines.prefix);
            out.append(buf);
            out.extend_from_slice(&rest[..=nl]);
            rest = &rest[nl + 1..];
        }
        buf.extend_from_slice(rest);
        out
    }

    /// The notice that `count` bytes of `app`'s output were dropped.
    pub fn format_dropped(&mut self, app: &str, count: u64) -> Vec<u8> {
        let mut out = self.app(app).prefix.clone();
        out.extend_from_slice(
            format!(
                "[host-ctl: {count} bytes of this app's output were dropped: the agent's log buffer was full]\n"
            )
            .as_bytes(),
        );
        out
    }

    pub fn print(&mut self, app: &str, stream: Stream, data: &[u8]) {
        let out = self.format(app, stream, data);
        write_to(stream, &out);
    }

    pub fn print_dropped(&mut self, app: &str, count: u64) {
        let out = self.format_dropped(app, count);
        write_to(Stream::Stderr, &out);
    }

    /// Prints what is left of one app's unfinished lines.
    pub fn flush_app(&mut self, app: &str) {
        let lines = self.app(app);
        for stream in [Stream::Stdout, Stream::Stderr] {
            let buf = &mut lines.partial[index(stream)];
            if buf.is_empty() {
                continue;
            }
            let mut out = lines.prefix.clone();
            out.append(buf);
            out.push(b'\n');
            write_to(stream, &out);
        }
    }
}

fn write_to(stream: Stream, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    // A closed terminal or pipe must not stop the pod: ignore write errors.
    if stream == Stream::Stderr {
        let mut e = std::io::stderr().lock();
        let _ = e.write_all(bytes);
        let _ = e.flush();
    } else {
        let mut o = std::io::stdout().lock();
        let _ = o.write_all(bytes);
        let _ = o.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(b: Vec<u8>) -> String {
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn lines_are_prefixed_and_partial_lines_held() {
        let mut p = Printer::new(["web", "db-main"].into_iter());
        let out = p.format("web", Stream::Stdout, b"hello\nwor");
        assert_eq!(text(out), "web     | hello\n");
        let out = p.format("web", Stream::Stdout, b"ld\nand\nmore\n");
        assert_eq!(
            text(out),
            "web     | world\nweb     | and\nweb     | more\n"
        );
        let out = p.format("db-main", Stream::Stderr, b"oops\n");
        assert_eq!(text(out), "db-main | oops\n");
        assert_eq!(text(p.format("web", Stream::Stderr, b"")), "");
    }

    #[test]
    fn one_app_prints_raw() {
        let mut p = Printer::new(["only"].into_iter());
        assert_eq!(
            text(p.format("only", Stream::Stdout, b"prompt> ")),
            "prompt> "
        );
        assert_eq!(text(p.format("only", Stream::Stdout, b"a\nb")), "a\nb");
    }

    #[test]
    fn dropped_output_is_announced() {
        let mut p = Printer::new(["a", "b"].into_iter());
        let s = text(p.format_dropped("a", 4096));
        assert!(s.starts_with("a | [host-ctl: 4096 bytes"), "{s}");
        assert!(s.ends_with("buffer was full]\n"), "{s}");
        let mut one = Printer::new(["a"].into_iter());
        let s = text(one.format_dropped("a", 1));
        assert!(s.starts_with("[host-ctl: 1 bytes"), "{s}");
    }
}
