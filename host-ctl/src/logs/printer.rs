//! Printing apps' output on the terminal, each line prefixed by its app's
//! name (`web | ...`), stdout to stdout and stderr to stderr. Partial lines
//! are held until their newline, so apps writing at once never interleave
//! inside a line.

use std::collections::HashMap;
use std::io::Write;

use kvmpod_api::protocol::{LogChunk, LogStream};

pub struct Printer {
    width: usize,
    partial: HashMap<(String, bool), Vec<u8>>,
}

impl Printer {
    pub fn new<'a>(apps: impl Iterator<Item = &'a str>) -> Self {
        Printer {
            width: apps.map(str::len).max().unwrap_or(0),
            partial: HashMap::new(),
        }
    }

    /// The lines of `chunk` that are complete, formatted.
    pub fn format(&mut self, chunk: &LogChunk) -> (bool, Vec<u8>) {
        let is_err = chunk.stream.enum_value_or_default() == LogStream::LOG_STREAM_STDERR;
        let mut out = Vec::new();
        if chunk.dropped > 0 {
            out.extend_from_slice(
                format!(
                    "{:w$} | [host-ctl: {} bytes of this app's output were dropped: the agent's log buffer was full]\n",
                    chunk.app,
                    chunk.dropped,
                    w = self.width
                )
                .as_bytes(),
            );
        }
        let buf = self.partial.entry((chunk.app.clone(), is_err)).or_default();
        buf.extend_from_slice(&chunk.data);
        let mut start = 0;
        while let Some(nl) = buf[start..].iter().position(|&b| b == b'\n') {
            out.extend_from_slice(format!("{:w$} | ", chunk.app, w = self.width).as_bytes());
            out.extend_from_slice(&buf[start..start + nl + 1]);
            start += nl + 1;
        }
        buf.drain(..start);
        (is_err, out)
    }

    pub fn print(&mut self, chunk: &LogChunk) {
        let (is_err, out) = self.format(chunk);
        write_to(is_err, &out);
    }

    /// Prints what is left of one app's unfinished lines.
    pub fn flush_app(&mut self, app: &str) {
        let mut rest: Vec<_> = self
            .partial
            .iter_mut()
            .filter(|((a, _), b)| a == app && !b.is_empty())
            .map(|(k, b)| (k.clone(), std::mem::take(b)))
            .collect();
        rest.sort();
        self.write_partials(rest);
    }

    fn write_partials(&self, rest: Vec<((String, bool), Vec<u8>)>) {
        for ((app, is_err), data) in rest {
            let mut out = format!("{app:w$} | ", w = self.width).into_bytes();
            out.extend_from_slice(&data);
            out.push(b'\n');
            write_to(is_err, &out);
        }
    }
}

fn write_to(is_err: bool, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    // A closed terminal or pipe must not stop the pod: ignore write errors.
    if is_err {
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

    fn chunk(app: &str, err: bool, data: &[u8]) -> LogChunk {
        let mut c = LogChunk::new();
        c.app = app.into();
        c.stream = if err {
            LogStream::LOG_STREAM_STDERR
        } else {
            LogStream::LOG_STREAM_STDOUT
        }
        .into();
        c.data = data.to_vec();
        c
    }

    #[test]
    fn lines_are_prefixed_and_partial_lines_held() {
        let mut p = Printer::new(["web", "db-main"].into_iter());
        let (err, out) = p.format(&chunk("web", false, b"hello\nwor"));
        assert!(!err);
        assert_eq!(String::from_utf8(out).unwrap(), "web     | hello\n");
        let (_, out) = p.format(&chunk("web", false, b"ld\n"));
        assert_eq!(String::from_utf8(out).unwrap(), "web     | world\n");
        let (err, out) = p.format(&chunk("db-main", true, b"oops\n"));
        assert!(err);
        assert_eq!(String::from_utf8(out).unwrap(), "db-main | oops\n");
    }

    #[test]
    fn dropped_output_is_announced() {
        let mut p = Printer::new(["a"].into_iter());
        let mut c = chunk("a", false, b"x\n");
        c.dropped = 4096;
        let (_, out) = p.format(&c);
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("a | [host-ctl: 4096 bytes"), "{s}");
        assert!(s.ends_with("a | x\n"));
    }
}
