//! Progress of what a user waits on (booting, stopping, pulling): drawn in
//! place on stderr with indicatif when stdout and stderr are both
//! terminals; plain lines, one per finished item, when either is not (a
//! log or a pipe gets no redraws); nothing with `--quiet`.
//!
//! The mode is chosen once per process (`init`), and the bars shown share
//! one board, so a line said while a bar is drawn (a note, a warning)
//! goes above the bars through [`say`] instead of through them.

use std::io::IsTerminal;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressFinish, ProgressStyle};

use super::notes::Verbosity;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Redrawn in place: a terminal is watching.
    Drawn,
    /// A line per finished item (a pulled blob); a line per step too when
    /// `steps` (`--verbose`).
    Lines { steps: bool },
    /// Nothing (`--quiet`).
    Silent,
}

impl Mode {
    /// The mode for `verbosity` when stdout and stderr are (`terminals`)
    /// or are not both terminals.
    pub fn choose(verbosity: Verbosity, terminals: bool) -> Mode {
        match verbosity {
            Verbosity::Quiet => Mode::Silent,
            _ if terminals => Mode::Drawn,
            v => Mode::Lines {
                steps: v == Verbosity::Verbose,
            },
        }
    }
}

/// A step: spinner, what is going on, how long it has been.
const SPINNER: &str = "{spinner:.cyan} {msg} {elapsed:.dim}";
/// A transfer: what, bar, bytes of total, rate, time left.
const BAR: &str = "{msg:>10} [{bar:30.cyan/blue}] {bytes:>10}/{total_bytes:<10} \
                   {binary_bytes_per_sec:>12} {eta:>4}";

static MODE: OnceLock<Mode> = OnceLock::new();
static BOARD: Mutex<Option<MultiProgress>> = Mutex::new(None);

/// Chooses the mode from `verbosity` and this process's stdout and
/// stderr. The first call decides; without one, lines are printed.
pub fn init(verbosity: Verbosity) {
    let terminals = std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
    let dumb = std::env::var_os("TERM").is_some_and(|t| t == "dumb");
    let _ = MODE.set(Mode::choose(verbosity, terminals && !dumb));
}

fn mode() -> Mode {
    *MODE.get().unwrap_or(&Mode::Lines { steps: false })
}

/// The board bars are drawn on, made at first use.
fn board() -> MultiProgress {
    let mut b = BOARD.lock().unwrap_or_else(|p| p.into_inner());
    b.get_or_insert_with(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
        .clone()
}

/// Prints `line` on stderr, above any bar drawn (a bare `eprintln!` would
/// land inside the bar's line and be drawn over).
pub fn say(line: &str) {
    let shown = BOARD
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .cloned();
    match shown {
        Some(board) => board.suspend(|| eprintln!("{line}")),
        None => eprintln!("{line}"),
    }
}

/// A step the user waits on, shown as a spinner with its elapsed time
/// until dropped, which clears it.
pub struct Step {
    bar: Option<ProgressBar>,
    lines: bool,
}

/// Starts showing `message` (`booting pod 1a2b; waiting for its agent`).
pub fn step(message: impl Into<String>) -> Step {
    let message = message.into();
    match mode() {
        Mode::Drawn => {
            let bar = board().add(
                ProgressBar::new_spinner()
                    .with_style(style(SPINNER, ProgressStyle::default_spinner))
                    .with_message(message)
                    .with_finish(ProgressFinish::AndClear),
            );
            bar.enable_steady_tick(Duration::from_millis(100));
            Step {
                bar: Some(bar),
                lines: false,
            }
        }
        Mode::Lines { steps } => {
            if steps {
                eprintln!("host-ctl: {message}");
            }
            Step {
                bar: None,
                lines: steps,
            }
        }
        Mode::Silent => Step {
            bar: None,
            lines: false,
        },
    }
}

impl Step {
    /// The step goes on as `message`.
    pub fn set(&self, message: impl Into<String>) {
        match &self.bar {
            Some(bar) => bar.set_message(message.into()),
            None if self.lines => eprintln!("host-ctl: {}", message.into()),
            None => {}
        }
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            clear(bar);
        }
    }
}

/// Bytes on their way (a blob downloaded), shown as a bar with its size,
/// rate and time left.
pub struct Transfer {
    bar: Option<ProgressBar>,
    lines: bool,
}

/// Starts showing `label` (`layer 2`) with `total` bytes to come.
pub fn transfer(label: impl Into<String>, total: u64) -> Transfer {
    match mode() {
        Mode::Drawn => {
            let bar = board().add(
                ProgressBar::new(total)
                    .with_style(style(BAR, ProgressStyle::default_bar))
                    .with_message(label.into())
                    .with_finish(ProgressFinish::AndClear),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            Transfer {
                bar: Some(bar),
                lines: false,
            }
        }
        Mode::Lines { .. } => Transfer {
            bar: None,
            lines: true,
        },
        Mode::Silent => Transfer {
            bar: None,
            lines: false,
        },
    }
}

impl Transfer {
    /// `bytes` more arrived.
    pub fn advance(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }

    /// It is over: the bar goes and `line` stays (`pulled layer 2 ...`).
    pub fn done(mut self, line: &str) {
        if let Some(bar) = self.bar.take() {
            clear(bar);
            say(line);
        } else if self.lines {
            eprintln!("{line}");
        }
    }
}

impl Drop for Transfer {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            clear(bar);
        }
    }
}

/// Clears `bar` and takes it off the board.
fn clear(bar: ProgressBar) {
    bar.finish_and_clear();
    if let Some(board) = BOARD.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
        board.remove(&bar);
    }
}

/// The style of `template`, or `fallback`'s if the template does not
/// parse (they are constants: a test parses each).
fn style(template: &str, fallback: fn() -> ProgressStyle) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| fallback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminals_draw_pipes_get_lines_and_quiet_gets_nothing() {
        assert_eq!(Mode::choose(Verbosity::Normal, true), Mode::Drawn);
        assert_eq!(Mode::choose(Verbosity::Verbose, true), Mode::Drawn);
        assert_eq!(
            Mode::choose(Verbosity::Normal, false),
            Mode::Lines { steps: false }
        );
        assert_eq!(
            Mode::choose(Verbosity::Verbose, false),
            Mode::Lines { steps: true }
        );
        assert_eq!(Mode::choose(Verbosity::Quiet, true), Mode::Silent);
        assert_eq!(Mode::choose(Verbosity::Quiet, false), Mode::Silent);
    }

    #[test]
    fn the_templates_parse() {
        for t in [SPINNER, BAR] {
            assert!(ProgressStyle::with_template(t).is_ok(), "{t}");
        }
    }
}
