//! The guest console. The kernel gives PID 1 `/dev/console` as stdin, stdout
//! and stderr; QEMU writes the serial console to the pod directory on the
//! host. Lines the host looks for start with `kvmpod-agent: `.

use std::fmt;
use std::io::Write;

use kvmpod_api::console;
use kvmpod_api::timeline::Stage;
use log::{Level, LevelFilter, Metadata, Record};

/// Writes one line to the console. Console errors are ignored: there is
/// nowhere else to report them.
pub fn line(args: fmt::Arguments<'_>) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{}", console::message_line(args));
}

/// Marks a boot stage reached, so a host whose agent never answers can say
/// how far the guest got.
pub fn stage(stage: Stage) {
    let ns = crate::timeline::boottime_ns();
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{}", console::stage_line(stage, ns));
}

/// The one clearly marked line for a failure before the host can be told
/// over vsock.
pub fn fatal(stage: &str, error: &dyn fmt::Display) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{}", console::fatal_line(stage, error));
}

struct ConsoleLogger;

impl log::Log for ConsoleLogger {
    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        meta.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            let level = match record.level() {
                Level::Error => "error",
                Level::Warn => "warning",
                Level::Info => "info",
                Level::Debug | Level::Trace => "debug",
            };
            line(format_args!("{level}: {}", record.args()));
        }
    }

    fn flush(&self) {}
}

static LOGGER: ConsoleLogger = ConsoleLogger;

/// Routes `log` records to the console: warnings and errors always, debug
/// lines when the host asked for them (each console line costs boot time
/// under emulation).
pub fn init_logger(debug: bool) {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(if debug {
        LevelFilter::Debug
    } else {
        LevelFilter::Warn
    });
}
