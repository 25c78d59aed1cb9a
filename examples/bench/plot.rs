//! The seed-workload plot (`--png`): throughput and p99 latency against P.

use crate::Cfg;
use crate::cases::seed::{SeedStats, SeedTable};
use std::path::Path;

pub(crate) fn plot(png: &Path, seed: &SeedTable, cfg: &Cfg) -> Result<(), String> {
    use plotters::prelude::*;
    let font = [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    ]
    .iter()
    .find_map(|p| std::fs::read(p).ok())
    .ok_or("no TrueType font found (install fonts-dejavu-core)")?;
    let font: &'static [u8] = Box::leak(font.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, font)
        .map_err(|_| "the font could not be loaded")?;
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let root = BitMapBackend::new(png, (1100, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let title = format!(
        "Seed workload: P processes × N cycles of lock, counter += 1, unlock (N = {}; flock {}; median-throughput run of {})",
        cfg.cycles,
        cfg.cycles / 10,
        cfg.seed_reps
    );
    let root = root.titled(&title, ("sans-serif", 17)).map_err(|x| e(&x))?;
    let panels = root.split_evenly((1, 2));
    let series = [
        ("ours", "SharedMutex<u64>", RGBColor(0xd6, 0x27, 0x28)),
        ("raw", "raw glibc robust mutex", RGBColor(0x1f, 0x77, 0xb4)),
        ("flock", "flock", RGBColor(0x7f, 0x7f, 0x7f)),
    ];
    for (panel, (ylabel, pick, legend_at)) in panels.iter().zip([
        (
            "cycles per second (all processes)",
            0usize,
            SeriesLabelPosition::LowerRight,
        ),
        (
            "p99 per-cycle latency (ns)",
            1,
            SeriesLabelPosition::UpperRight,
        ),
    ]) {
        let val = |s: &SeedStats| if pick == 0 { s.rate } else { s.p99 as f64 };
        let ys: Vec<f64> = seed.iter().map(|(_, _, s)| val(s).max(1.0)).collect();
        // Whole decades, plus a spare one where the legend goes.
        let lo = ys.iter().cloned().fold(f64::MAX, f64::min).log10().floor();
        let hi = ys.iter().cloned().fold(0.0, f64::max).log10().ceil();
        let (lo, hi) = if pick == 0 {
            (lo - 1.0, hi)
        } else {
            (lo, hi + 1.0)
        };
        let mut chart = ChartBuilder::on(panel)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0.8f64..8.5f64, (10f64.powf(lo)..10f64.powf(hi)).log_scale())
            .map_err(|x| e(&x))?;
        chart
            .configure_mesh()
            .light_line_style(WHITE)
            .x_desc("P (processes)")
            .y_desc(ylabel)
            .x_labels(9)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| {
                if *y >= 1e6 {
                    format!("{:.0}M", y / 1e6)
                } else if *y >= 1e3 {
                    format!("{:.0}k", y / 1e3)
                } else {
                    format!("{y:.0}")
                }
            })
            .draw()
            .map_err(|x| e(&x))?;
        for (kind, name, color) in series {
            let pts: Vec<(f64, f64)> = seed
                .iter()
                .filter(|(k, _, _)| *k == kind)
                .map(|(_, p, s)| (*p as f64, val(s)))
                .collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(|x| e(&x))?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))
                .map_err(|x| e(&x))?;
        }
        chart
            .configure_series_labels()
            .position(legend_at)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|x| e(&x))?;
    }
    root.present().map_err(|x| e(&x))?;
    Ok(())
}
