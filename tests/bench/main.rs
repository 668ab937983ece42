//! `kvmpod-bench` (`make bench`): kvmpod's speed and size, measured.
//!
//! Every figure is a median of several runs with min and max; comparisons
//! are ratios of figures measured in the same run. The table is printed,
//! the figures written to `target/bench/results.json`, and the demo pod's
//! boot timeline drawn to `target/bench/boot-timeline.png`.
//!
//! One module per section, run in the order below; `ctx` runs the pods and
//! `report` collects the figures.

mod baseline;
mod chart;
mod ctx;
mod exec;
mod images;
mod limit;
mod logs;
mod memory;
mod nested;
mod network;
mod pool;
mod report;
mod rpc;
mod scale;
mod service;
mod shim;
mod sizes;
mod stats;
mod timeline;

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use ctx::Ctx;
use report::Report;

fn main() -> ExitCode {
    // Inside the nested test host, for the `nested` section.
    let result = if std::env::args().any(|a| a == "--nested-inner") {
        nested::inner()
    } else {
        bench()
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kvmpod-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn bench() -> Result<()> {
    let started = Instant::now();
    let ctx = Ctx::new()?;
    let mut report = Report::new(report::machine_line());
    eprintln!("bench: {}", report.machine());

    // KVMPOD_BENCH_ONLY=baseline,logs,... runs some sections, for work on
    // one figure; the results are then partial and no chart is drawn.
    let only = std::env::var("KVMPOD_BENCH_ONLY").ok();
    let wanted = |s: &str| only.as_deref().is_none_or(|o| o.split(',').any(|w| w == s));
    if wanted("sizes") {
        sizes::run(&ctx, &mut report)?;
    }
    let phases = if wanted("timeline") {
        timeline::run(&ctx, &mut report)?
    } else {
        Vec::new()
    };
    if wanted("baseline") {
        baseline::run(&ctx, &mut report)?;
    }
    // rpc, exec, the agent's idle memory and logs, on one running pod.
    if wanted("service") {
        service::run(&ctx, &mut report)?;
    }
    if wanted("memory") {
        memory::many_apps(&ctx, &mut report)?;
    }
    if wanted("scale") {
        scale::run(&ctx, &mut report)?;
    }
    if wanted("limit") {
        limit::run(&ctx, &mut report)?;
    }
    if wanted("images") {
        images::run(&ctx, &mut report)?;
    }
    if wanted("pool") {
        pool::run(&ctx, &mut report)?;
    }
    if wanted("network") {
        network::run(&ctx, &mut report)?;
    }
    if wanted("containerd") {
        shim::run(&ctx, &mut report)?;
    }
    if wanted("nested") {
        nested::run(&ctx, &mut report)?;
    }

    let took = started.elapsed().as_secs_f64();
    report
        .notes
        .push(format!("bench took {took:.0} s; {}", report.machine()));
    report.print();
    let results = ctx.out.join("results.json");
    report.write_json(&results, &phases)?;
    let png = ctx.out.join("boot-timeline.png");
    if !phases.is_empty() {
        chart::timeline(&png, "kvmpod demo pod: guest boot timeline", &phases)?;
    }
    println!("figures: {}\nchart:   {}", results.display(), png.display());
    Ok(())
}
