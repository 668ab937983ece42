//! Small text helpers for messages.

/// Indents every line of `text` by two spaces (a console or log tail
/// quoted in an error message).
pub fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// An error and every cause under it, "outer: inner: root", as anyhow's
/// `{:#}` prints them: for messages kept in records and logs.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        // A transparent wrapper repeats its cause's text.
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}
