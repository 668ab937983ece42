//! The report: every figure as it is measured (one stderr line each, so a
//! long run shows progress), the table printed at the end, and
//! `results.json`, which the README's table and later comparisons read.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use serde_json::json;

use crate::stats::{fmt, Figure};
use crate::timeline::Phase;

pub struct Report {
    /// Figures by section, sections in the order they were first reported.
    sections: Vec<(String, Vec<Figure>)>,
    pub notes: Vec<String>,
    /// The machine the figures were measured on: they mean nothing without.
    machine: String,
}

impl Report {
    pub fn new(machine: String) -> Report {
        Report {
            sections: Vec::new(),
            notes: Vec::new(),
            machine,
        }
    }

    pub fn machine(&self) -> &str {
        &self.machine
    }

    pub fn add(&mut self, section: &str, f: Figure) {
        eprintln!(
            "bench: {section}: {} = {} {} (min {}, max {})",
            f.name,
            fmt(f.median),
            f.unit,
            fmt(f.min),
            fmt(f.max)
        );
        match self.sections.iter_mut().find(|s| s.0 == section) {
            Some(s) => s.1.push(f),
            None => self.sections.push((section.to_string(), vec![f])),
        }
    }

    pub fn print(&self) {
        println!(
            "{:<58} {:>10} {:>10} {:>10} {:>8} {:>5}  target",
            "figure", "median", "min", "max", "unit", "runs"
        );
        for (section, figures) in &self.sections {
            println!("-- {section}");
            for f in figures {
                let target = match (&f.target, f.met) {
                    (Some(t), Some(true)) => format!("{t} met"),
                    (Some(t), Some(false)) => format!("{t} MISSED"),
                    _ => String::new(),
                };
                let p99 = f
                    .p99
                    .map(|p| format!(" (p99 {})", fmt(p)))
                    .unwrap_or_default();
                println!(
                    "{:<58} {:>10} {:>10} {:>10} {:>8} {:>5}  {target}{p99}",
                    f.name,
                    fmt(f.median),
                    fmt(f.min),
                    fmt(f.max),
                    f.unit,
                    f.runs
                );
            }
        }
        for n in &self.notes {
            println!("note: {n}");
        }
    }

    /// Writes the figures, the boot timeline's phases and the notes to `path`.
    pub fn write_json(&self, path: &Path, phases: &[Phase]) -> Result<()> {
        let json = json!({
            "machine": self.machine,
            "date": humantime_now(),
            "sections": self.sections.iter().map(|(s, f)| json!({"section": s, "figures": f})).collect::<Vec<_>>(),
            "timeline": phases.iter().map(|(n, a, b)| json!({"phase": n, "start": a, "end": b})).collect::<Vec<_>>(),
            "notes": self.notes,
        });
        fs::write(path, serde_json::to_vec_pretty(&json)?)
            .with_context(|| format!("writing {}", path.display()))
    }
}

/// The UTC date and time, from date(1): no clock crate for one stamp.
fn humantime_now() -> String {
    let out = Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%dT%H:%M:%SZ")
        .output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// CPU model, cores, memory and the accelerator host-ctl picks.
pub fn machine_line() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mem = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<u64>().ok())
        })
        .map(|kb| kb / 1024 / 1024)
        .unwrap_or(0);
    let accel = host_ctl::vmm::accel::choose(host_ctl::vmm::accel::AccelRequest::Auto)
        .map(|c| format!("{} ({})", c.accel.name(), c.reason))
        .unwrap_or_default();
    format!("{cpu}, {cores} cores, {mem} GiB; accelerator {accel}")
}
