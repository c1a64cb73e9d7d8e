//! SVG charts of results.json: registration latency versus pool size
//! (log-log, one line per source and method) and IOPS bars per path.
//! Only SVG: text in a bitmap needs a font, and plotters' font loading
//! needs system libraries (fontconfig/freetype) the build machines lack.

use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde_json::Value;

use super::BenchError;

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

fn err(path: &Path) -> impl Fn(String) -> BenchError + '_ {
    move |msg| BenchError::Chart {
        path: path.to_path_buf(),
        msg,
    }
}

/// Draws the charts the results allow; returns their paths.
pub fn draw(dir: &Path, results: &Value) -> Result<Vec<PathBuf>, BenchError> {
    let mut out = Vec::new();
    if let Some(pts) = results["suites"]["registration"]["points"].as_array() {
        let path = dir.join("registration.svg");
        latency_chart(&path, pts).map_err(err(&path))?;
        out.push(path);
    }
    if let Some(pts) = results["suites"]["io"]["points"].as_array() {
        let path = dir.join("io.svg");
        iops_chart(&path, pts).map_err(err(&path))?;
        out.push(path);
    }
    Ok(out)
}

fn latency_chart(path: &Path, pts: &[Value]) -> Result<(), String> {
    // One series per (source, method, page): (pool MiB, median µs).
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for p in pts {
        let name = format!(
            "{} {} ({} pages)",
            p["source"].as_str().unwrap_or("?"),
            p["method"].as_str().unwrap_or("?"),
            p["page"].as_str().unwrap_or("?")
        );
        let x = p["pool_bytes"].as_f64().unwrap_or(0.0) / 1048576.0;
        let y = p["median"]["value"].as_f64().unwrap_or(0.0);
        if x <= 0.0 || y <= 0.0 {
            continue;
        }
        match series.iter_mut().find(|s| s.0 == name) {
            Some(s) => s.1.push((x, y)),
            None => series.push((name, vec![(x, y)])),
        }
    }
    for s in &mut series {
        s.1.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    let all = series.iter().flat_map(|s| s.1.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if series.is_empty() {
        return Err("no registration points".into());
    }
    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Buffer registration: median latency per ring",
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(70)
        .build_cartesian_2d(
            ((x0 / 2.0)..(x1 * 2.0)).log_scale(),
            ((y0 / 2.0)..(y1 * 2.0)).log_scale(),
        )
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("pool size (MiB)")
        .y_desc("median latency (µs)")
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, (name, pts)) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 4, c.filled())))
            .map_err(|e| e.to_string())?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

fn iops_chart(path: &Path, pts: &[Value]) -> Result<(), String> {
    let bars: Vec<(String, f64)> = pts
        .iter()
        .map(|p| {
            (
                format!("{} QD{}", p["path"].as_str().unwrap_or("?"), p["qd"]),
                p["iops"]["value"].as_f64().unwrap_or(0.0),
            )
        })
        .filter(|b| b.1 > 0.0)
        .collect();
    if bars.is_empty() {
        return Err("no io points".into());
    }
    let ymax = bars.iter().map(|b| b.1).fold(1.0, f64::max);
    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let n = bars.len();
    let labels = bars.iter().map(|b| b.0.clone()).collect::<Vec<_>>();
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "4 KiB random O_DIRECT reads (log scale)",
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(60)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..n as f64, (1f64..ymax * 3.0).log_scale())
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - x.floor() - 0.5).abs() < 0.01 && i < labels.len() {
                labels[i].clone()
            } else {
                String::new()
            }
        })
        .y_desc("IOPS")
        .draw()
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| {
            let c = COLORS[i % COLORS.len()];
            Rectangle::new([(i as f64 + 0.15, 1.0), (i as f64 + 0.85, b.1)], c.filled())
        }))
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| {
            Text::new(
                format!("{:.0}", b.1),
                (i as f64 + 0.2, b.1 * 1.15),
                ("sans-serif", 14),
            )
        }))
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}
