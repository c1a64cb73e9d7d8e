//! Charts of results.json, each as SVG and PNG: registration latency
//! versus pool size (log-log, one line per source and method) and IOPS
//! bars per path.
//!
//! Text is laid out with ab_glyph from a TrueType font read at run time
//! (`RINGVISOR_CHART_FONT`, else the first of [`FONT_CANDIDATES`]): the
//! project ships no font, and plotters' fontconfig route would need C
//! libraries. `scripts/test-all.sh` installs Debian's fonts-dejavu-core.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use serde_json::Value;

use super::BenchError;

/// Environment variable naming the TrueType font for chart text.
pub const FONT_ENV: &str = "RINGVISOR_CHART_FONT";

/// Fonts looked for when `RINGVISOR_CHART_FONT` is unset (Debian paths).
pub const FONT_CANDIDATES: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
];

/// Chart size in pixels (SVG user units and PNG pixels alike).
const SIZE: (u32, u32) = (960, 600);

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

/// The fonts to try: `RINGVISOR_CHART_FONT` alone when set.
fn font_candidates() -> Vec<PathBuf> {
    match std::env::var_os(FONT_ENV) {
        Some(p) => vec![PathBuf::from(p)],
        None => FONT_CANDIDATES.iter().map(PathBuf::from).collect(),
    }
}

/// Reads the first readable font of `candidates`; the error names them all.
fn read_font(candidates: &[PathBuf]) -> Result<(PathBuf, Vec<u8>), String> {
    candidates
        .iter()
        .find_map(|p| std::fs::read(p).ok().map(|b| (p.clone(), b)))
        .ok_or_else(|| {
            let looked: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
            format!(
                "no TrueType font for chart text (looked at {}): install Debian's fonts-dejavu-core or set {FONT_ENV}",
                looked.join(", ")
            )
        })
}

/// Loads and registers the chart font once per process.
fn register_font() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let (path, bytes) = read_font(&font_candidates())?;
            // Registered fonts live as long as the process: leaking the
            // one file read here is what plotters' 'static API asks for.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| format!("{}: not a TrueType/OpenType font", path.display()))
        })
        .clone()
}

/// `16 MiB`, `1 GiB`, `1.5 GiB` for an axis in MiB.
fn bytes_label(mib: f64) -> String {
    if mib >= 1024.0 {
        format!("{} GiB", trim(mib / 1024.0))
    } else {
        format!("{} MiB", trim(mib))
    }
}

/// `500 µs`, `2 ms`, `30 s` for an axis in microseconds.
fn time_label(us: f64) -> String {
    if us >= 1e6 {
        format!("{} s", trim(us / 1e6))
    } else if us >= 1e3 {
        format!("{} ms", trim(us / 1e3))
    } else {
        format!("{} µs", trim(us))
    }
}

/// At most 3 significant digits, no trailing zeros.
fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// One chart of the results, drawable on any plotters backend.
#[derive(Clone, Copy)]
enum Chart<'a> {
    /// Registration latency versus pool size.
    Latency(&'a [Value]),
    /// IOPS per path and queue depth.
    Iops(&'a [Value]),
}

impl Chart<'_> {
    fn draw_on<DB: DrawingBackend>(self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        match self {
            Chart::Latency(pts) => latency_chart(root, pts),
            Chart::Iops(pts) => iops_chart(root, pts),
        }
    }

    /// Writes `<dir>/<stem>.svg` and `<dir>/<stem>.png`.
    fn write(self, dir: &Path, stem: &str, out: &mut Vec<PathBuf>) -> Result<(), BenchError> {
        let svg = dir.join(format!("{stem}.svg"));
        self.draw_on(&SVGBackend::new(&svg, SIZE).into_drawing_area())
            .map_err(err(&svg))?;
        out.push(svg);
        let png = dir.join(format!("{stem}.png"));
        self.draw_on(&BitMapBackend::new(&png, SIZE).into_drawing_area())
            .map_err(err(&png))?;
        out.push(png);
        Ok(())
    }
}

/// Draws the charts the results allow, as SVG and PNG; returns their paths.
pub fn draw(dir: &Path, results: &Value) -> Result<Vec<PathBuf>, BenchError> {
    register_font().map_err(err(dir))?;
    let mut out = Vec::new();
    if let Some(pts) = results["suites"]["registration"]["points"].as_array() {
        Chart::Latency(pts).write(dir, "registration", &mut out)?;
    }
    if let Some(pts) = results["suites"]["io"]["points"].as_array() {
        Chart::Iops(pts).write(dir, "io", &mut out)?;
    }
    Ok(out)
}

fn latency_chart<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    pts: &[Value],
) -> Result<(), String> {
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
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(root)
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
        .x_desc("pool size")
        .y_desc("median latency")
        .x_label_formatter(&|mib| bytes_label(*mib))
        .y_label_formatter(&|us| time_label(*us))
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

fn iops_chart<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    pts: &[Value],
) -> Result<(), String> {
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
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let n = bars.len();
    let labels = bars.iter().map(|b| b.0.clone()).collect::<Vec<_>>();
    let mut chart = ChartBuilder::on(root)
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
        .y_label_formatter(&|v| format!("{v:.0}"))
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn results() -> Value {
        let reg = |source: &str, method: &str, mib: u64, us: f64| {
            json!({"source": source, "method": method, "page": "2M",
                   "pool_bytes": mib << 20, "median": {"value": us, "unit": "us"}})
        };
        json!({"suites": {
            "registration": {"points": [
                reg("host", "register", 64, 9000.0),
                reg("host", "register", 128, 18000.0),
                reg("host", "clone", 64, 12.0),
                reg("host", "clone", 128, 13.0),
            ]},
            "io": {"points": [
                {"path": "host", "qd": 1, "iops": {"value": 11000.0, "unit": "IOPS"}},
                {"path": "guest-pv-ring", "qd": 1, "iops": {"value": 9000.0, "unit": "IOPS"}},
            ]},
        }})
    }

    /// Width and height from a PNG's IHDR chunk.
    fn png_size(bytes: &[u8]) -> (u32, u32) {
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
        assert_eq!(&bytes[12..16], b"IHDR");
        let be = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap());
        (be(16), be(20))
    }

    #[test]
    fn draws_svg_and_png_of_each_suite() {
        let dir = std::env::temp_dir().join(format!("rv-charts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let paths = draw(&dir, &results()).expect("charts (needs fonts-dejavu-core)");
        let names: Vec<String> = paths
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["registration.svg", "registration.png", "io.svg", "io.png"]
        );
        for p in &paths {
            let bytes = std::fs::read(p).unwrap();
            if p.extension().unwrap() == "png" {
                assert_eq!(png_size(&bytes), SIZE, "{}", p.display());
                // Not a blank canvas: the plot has more than one colour.
                assert!(
                    bytes.len() > 4096,
                    "{} is {} bytes",
                    p.display(),
                    bytes.len()
                );
            } else {
                let text = String::from_utf8(bytes).unwrap();
                assert!(text.starts_with("<svg"), "{}", p.display());
                assert!(text.contains("median latency") || text.contains("IOPS"));
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn no_points_is_an_error_naming_the_file() {
        let dir = std::env::temp_dir().join(format!("rv-charts-empty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let r = json!({"suites": {"registration": {"points": []}}});
        let e = draw(&dir, &r).unwrap_err().to_string();
        assert!(
            e.contains("registration.svg") && e.contains("no registration points"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn axis_labels() {
        assert_eq!(bytes_label(16.0), "16 MiB");
        assert_eq!(bytes_label(1536.0), "1.5 GiB");
        assert_eq!(time_label(0.95), "0.95 µs");
        assert_eq!(time_label(2500.0), "2.5 ms");
        assert_eq!(time_label(3e7), "30 s");
    }

    #[test]
    fn missing_font_names_every_place_looked() {
        let c = [
            PathBuf::from("/nonexistent/a.ttf"),
            PathBuf::from("/nonexistent/b.ttf"),
        ];
        let e = read_font(&c).unwrap_err();
        assert!(e.contains("/nonexistent/a.ttf, /nonexistent/b.ttf"), "{e}");
        assert!(
            e.contains("fonts-dejavu-core") && e.contains(FONT_ENV),
            "{e}"
        );
    }
}
