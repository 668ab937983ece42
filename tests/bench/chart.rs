//! The boot timeline as a PNG: one bar per phase of the demo pod's boot,
//! from the guest kernel's start to power-off (median of the runs).

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

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
    let n = phases.len();
    let root = BitMapBackend::new(out, (1200, 80 + 36 * n as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    // One unit-high row per phase, the first at the top. The phase names are
    // drawn beside the rows' centres by hand: plotters' own y labels sit on
    // tick marks, not on rows.
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(300)
        .build_cartesian_2d(0.0..end * 1.08, 0.0..n as f64)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc("seconds after the guest kernel started (median of the runs)")
        .y_labels(0)
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    for (i, (name, start, stop)) in phases.iter().enumerate() {
        let row = n - 1 - i;
        let color = Palette99::pick(i);
        let (x0, y) = chart.backend_coord(&(0.0, row as f64 + 0.5));
        root.draw(&Text::new(
            name.clone(),
            (x0 - 10, y),
            TextStyle::from(("sans-serif", 15).into_font())
                .pos(Pos::new(HPos::Right, VPos::Center)),
        ))
        .map_err(|e| anyhow!("{e}"))?;
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [
                    (*start, row as f64 + 0.15),
                    (stop.max(start + end / 400.0), row as f64 + 0.85),
                ],
                color.mix(0.8).filled(),
            )))
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .draw_series(std::iter::once(Text::new(
                format!("{:.0} ms", (stop - start) * 1000.0),
                (stop + end / 150.0, row as f64 + 0.5),
                TextStyle::from(("sans-serif", 14).into_font())
                    .pos(Pos::new(HPos::Left, VPos::Center)),
            )))
            .map_err(|e| anyhow!("{e} ({name})"))?;
    }
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_png() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("t.png");
        let phases = vec![
            ("kernel start → /init".to_string(), 0.0, 1.4),
            ("→ agent ready".to_string(), 1.4, 1.45),
            ("→ power-off".to_string(), 1.45, 2.0),
        ];
        timeline(&out, "test", &phases).unwrap();
        let png = std::fs::read(&out).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        if let Some(keep) = std::env::var_os("KVMPOD_KEEP_CHART") {
            std::fs::copy(&out, keep).unwrap();
        }
    }
}
