//! A PNG chart: grouped bars of delivered kpps per frame size, one colour per device.
//!
//! Text needs a TrueType font: plotters' `ab_glyph` backend is fed DejaVu Sans (Debian
//! `fonts-dejavu-core`). Without the font the bars are drawn unlabelled.

use std::path::Path;

use plotters::prelude::*;

use crate::runner::Results;

const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];
const SIZES: &[(&str, &str)] = &[
    ("rate64", "64 B"),
    ("rate128", "128 B"),
    ("rate512", "512 B"),
    ("rate1518", "1518 B"),
];
const COLOURS: &[RGBColor] = &[
    RGBColor(0x4c, 0x72, 0xb0),
    RGBColor(0xdd, 0x84, 0x52),
    RGBColor(0x55, 0xa8, 0x68),
];

fn load_font() -> bool {
    static LOADED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *LOADED.get_or_init(|| {
        for p in FONT_PATHS {
            if let Ok(bytes) = std::fs::read(p) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

/// Draws the chart into `path`.
pub fn draw(r: &Results, path: &Path) -> anyhow::Result<()> {
    let text = load_font();
    let duts: Vec<&String> = r.duts.iter().collect();
    let vals: Vec<Vec<f64>> = SIZES
        .iter()
        .map(|(k, _)| duts.iter().map(|d| r.median(d, k).unwrap_or(0.0)).collect())
        .collect();
    let max = vals.iter().flatten().copied().fold(1.0_f64, f64::max) * 1.15;
    let root = BitMapBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let n = duts.len().max(1);
    #[allow(clippy::cast_precision_loss, reason = "a handful of bars")]
    let x_max = (SIZES.len() * (n + 1)) as f64;
    let mut b = ChartBuilder::on(&root);
    b.margin(20);
    if text {
        b.caption(
            format!("delivered kpps by frame size ({})", r.started),
            ("sans-serif", 20),
        )
        .x_label_area_size(40)
        .y_label_area_size(60);
    }
    let mut chart = b.build_cartesian_2d(0.0..x_max, 0.0..max)?;
    if text {
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_desc("kpps")
            .draw()?;
    }
    for (di, d) in duts.iter().enumerate() {
        let colour = COLOURS[di % COLOURS.len()];
        #[allow(clippy::cast_precision_loss, reason = "a handful of bars")]
        let series = vals.iter().enumerate().map(move |(si, v)| {
            let x = (si * (n + 1) + di) as f64;
            Rectangle::new([(x + 0.1, 0.0), (x + 0.9, v[di])], colour.filled())
        });
        let s = chart.draw_series(series)?;
        if text {
            s.label(d.as_str()).legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled())
            });
        }
    }
    if text {
        // Group labels under the axis, in pixel space (the axis itself is continuous).
        for (si, (_, label)) in SIZES.iter().enumerate() {
            #[allow(clippy::cast_precision_loss, reason = "a handful of bars")]
            let mid = (si * (n + 1)) as f64 + n as f64 / 2.0;
            let (px, py) = chart.backend_coord(&(mid, 0.0));
            root.draw(&Text::new(
                (*label).to_owned(),
                (px - 18, py + 10),
                ("sans-serif", 15).into_font(),
            ))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}
