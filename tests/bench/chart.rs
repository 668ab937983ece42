//! The boot timeline as a PNG: one bar per phase of the demo pod's boot,
//! from the guest kernel's start to power-off (median of the runs).

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

/// Registers a font for the chart's text: plotters draws none of its own.
fn register_font() -> Result<()> {
    let candidates = [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    ];
    let path = candidates
        .iter()
        .find(|p| Path::new(p).is_file())
        .ok_or_else(|| anyhow!("no font for the chart (install fonts-dejavu-core: `make deps`)"))?;
    let bytes: &'static [u8] = Box::leak(std::fs::read(path)?.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow!("{path} is not a usable font"))?;
    Ok(())
}

/// Draws `phases` (name, start s, end s) to `out`.
pub fn timeline(out: &Path, title: &str, phases: &[(String, f64, f64)]) -> Result<()> {
    register_font()?;
    let end = phases.iter().map(|p| p.2).fold(0.0, f64::max).max(0.1);
    let root = BitMapBackend::new(out, (1100, 60 + 34 * phases.len() as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(190)
        .build_cartesian_2d(0.0..end * 1.05, 0..phases.len())
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc("seconds after the guest kernel started (median)")
        .y_labels(phases.len())
        .y_label_formatter(&|i| {
            phases
                .get(phases.len().saturating_sub(1 + *i))
                .map(|p| p.0.clone())
                .unwrap_or_default()
        })
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    let colors = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
    for (i, (name, start, stop)) in phases.iter().enumerate() {
        let row = phases.len() - 1 - i;
        let color = colors[i % colors.len()];
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(*start, row), (stop.max(start + end / 400.0), row + 1)],
                color.mix(0.6).filled(),
            )))
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .draw_series(std::iter::once(Text::new(
                format!("{:.0} ms", (stop - start) * 1000.0),
                (stop + end / 200.0, row),
                ("sans-serif", 13),
            )))
            .map_err(|e| anyhow!("{e} ({name})"))?;
    }
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}
