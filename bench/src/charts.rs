//! Charts of results.json, each as SVG and PNG: registration latency
//! versus pool size (log-log, one line per source and method), the rings
//! sweep's time until every ring holds the pool versus the number of
//! rings, and IOPS bars grouped by operation and queue depth, one bar per
//! path.
//!
//! Text is laid out with ab_glyph from a TrueType font read at run time
//! (`RINGVISOR_CHART_FONT`, else the first of [`FONT_CANDIDATES`]): the
//! project ships no font, and plotters' fontconfig route would need C
//! libraries. `scripts/test-all.sh` installs Debian's fonts-dejavu-core.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::combinators::{LogCoord, WithKeyPoints};
use plotters::coord::ranged1d::{AsRangedCoord, DefaultFormatting, KeyPointHint, Ranged};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
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

/// `950`, `7.2k`, `116k`, `1.5M` for a count such as IOPS.
fn count_label(v: f64) -> String {
    let (x, unit) = if v >= 1e6 {
        (v / 1e6, "M")
    } else if v >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    if x >= 10.0 {
        format!("{x:.0}{unit}")
    } else {
        let s = format!("{x:.1}");
        format!("{}{unit}", s.trim_end_matches('0').trim_end_matches('.'))
    }
}

/// Marks of a log axis over `lo..hi`: the labelled ones (powers of ten,
/// and 2 and 5 times them when the range spans under two decades) and
/// the light mesh lines (the other 2 to 9 times a power of ten).
fn log_ticks(lo: f64, hi: f64) -> (Vec<f64>, Vec<f64>) {
    let few = hi / lo < 100.0;
    let (mut bold, mut light) = (Vec::new(), Vec::new());
    let mut decade = 10f64.powi(lo.log10().floor() as i32);
    while decade <= hi {
        for m in 1..10 {
            let v = decade * f64::from(m);
            if v < lo || v > hi {
                continue;
            }
            if m == 1 || (few && (m == 2 || m == 5)) {
                bold.push(v);
            } else {
                light.push(v);
            }
        }
        decade *= 10.0;
    }
    (bold, light)
}

/// Index of `v` in `list`, appended when new: series keep the order in
/// which results.json first names them.
fn index_of<T: PartialEq>(list: &mut Vec<T>, v: T) -> usize {
    match list.iter().position(|x| *x == v) {
        Some(i) => i,
        None => {
            list.push(v);
            list.len() - 1
        }
    }
}

fn msg<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// Legend text size and the height of one legend row.
const LEGEND_FONT: u32 = 14;
const LEGEND_ROW: u32 = 22;

/// A point marker of a line series.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Marker {
    Circle,
    Triangle,
    Square,
    Cross,
    /// A hollow circle.
    Ring,
}

impl Marker {
    /// Draws the marker at `at` on any area, data or pixel coordinates.
    fn draw<DB: DrawingBackend, C: CoordTranslate>(
        self,
        area: &DrawingArea<DB, C>,
        at: C::From,
        c: RGBColor,
    ) -> Result<(), String> {
        match self {
            Marker::Circle => area.draw(&Circle::new(at, 4, c.filled())),
            Marker::Ring => area.draw(&Circle::new(at, 4, c.stroke_width(2))),
            Marker::Triangle => area.draw(&TriangleMarker::new(at, 6, c.filled())),
            Marker::Square => {
                area.draw(&(EmptyElement::at(at) + Rectangle::new([(-4, -4), (4, 4)], c.filled())))
            }
            Marker::Cross => area.draw(&Cross::new(at, 5, c.stroke_width(2))),
        }
        .map_err(msg)
    }
}

/// What a legend entry shows beside its name.
#[derive(Clone, Copy)]
enum Swatch {
    /// A bar's colour.
    Bar,
    /// A line with its marker; `dashed` as its series is drawn.
    Line { marker: Marker, dashed: bool },
}

impl Swatch {
    fn width(self) -> i32 {
        match self {
            Swatch::Bar => 14,
            Swatch::Line { .. } => 28,
        }
    }
}

#[derive(Clone)]
struct Entry {
    name: String,
    color: RGBColor,
    swatch: Swatch,
}

fn legend_style() -> TextStyle<'static> {
    TextStyle::from(("sans-serif", LEGEND_FONT).into_font()).pos(Pos::new(HPos::Left, VPos::Center))
}

/// Pixel width of `e`'s swatch, gap and name.
fn entry_width<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    e: &Entry,
) -> Result<i32, String> {
    let (w, _) = area
        .estimate_text_size(&e.name, &legend_style())
        .map_err(msg)?;
    Ok(e.swatch.width() + 6 + w as i32)
}

/// Top-left corners of the entries laid out in centred rows that wrap at
/// `width` pixels, and the rows' height.
fn legend_rows<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[Entry],
    width: i32,
) -> Result<(Vec<(i32, i32)>, u32), String> {
    const GAP: i32 = 28;
    // Each row: (entry, x, width) of its entries.
    let mut rows: Vec<Vec<(usize, i32, i32)>> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let w = entry_width(area, e)?;
        let next = rows
            .last()
            .and_then(|row| row.last())
            .map(|&(_, x, w)| x + w + GAP);
        match next {
            Some(x) if x + w <= width => rows.last_mut().expect("a row").push((i, x, w)),
            _ => rows.push(vec![(i, 0, w)]),
        }
    }
    let mut at = vec![(0, 0); entries.len()];
    for (r, row) in rows.iter().enumerate() {
        let end = row.last().map_or(0, |&(_, x, w)| x + w);
        let left = (width - end).max(0) / 2;
        for &(i, x, _) in row {
            at[i] = (left + x, r as i32 * LEGEND_ROW as i32);
        }
    }
    Ok((at, rows.len() as u32 * LEGEND_ROW))
}

/// Draws each entry with its top-left corner at `at` (pixels in `area`).
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[Entry],
    at: &[(i32, i32)],
) -> Result<(), String> {
    for (e, &(x, y)) in entries.iter().zip(at) {
        let mid = y + LEGEND_ROW as i32 / 2;
        match e.swatch {
            Swatch::Bar => area
                .draw(&Rectangle::new(
                    [(x, mid - 6), (x + 14, mid + 6)],
                    e.color.filled(),
                ))
                .map_err(msg)?,
            Swatch::Line { marker, dashed } => {
                let line = |a: i32, b: i32| {
                    PathElement::new(vec![(a, mid), (b, mid)], e.color.stroke_width(2))
                };
                if dashed {
                    area.draw(&line(x, x + 8)).map_err(msg)?;
                    area.draw(&line(x + 20, x + 28)).map_err(msg)?;
                } else {
                    area.draw(&line(x, x + 28)).map_err(msg)?;
                }
                marker.draw(area, (x + 14, mid), e.color)?;
            }
        }
        area.draw_text(&e.name, &legend_style(), (x + e.swatch.width() + 6, mid))
            .map_err(msg)?;
    }
    Ok(())
}

/// One chart of the results, drawable on any plotters backend.
#[derive(Clone, Copy)]
enum Chart<'a> {
    /// Registration latency versus pool size.
    Latency(&'a [Value]),
    /// Time until every ring holds the pool versus the number of rings.
    Rings(&'a [Value]),
    /// IOPS per path, grouped by operation and queue depth.
    Iops(&'a [Value]),
}

impl Chart<'_> {
    fn draw_on<DB: DrawingBackend>(self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        match self {
            Chart::Latency(pts) => latency_chart(root, pts),
            Chart::Rings(pts) => rings_chart(root, pts),
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
    // The sweep is optional: no points, no chart.
    if let Some(pts) = results["suites"]["registration"]["rings_sweep"].as_array() {
        if !pts.is_empty() {
            Chart::Rings(pts).write(dir, "registration-rings", &mut out)?;
        }
    }
    if let Some(pts) = results["suites"]["io"]["points"].as_array() {
        Chart::Iops(pts).write(dir, "io", &mut out)?;
    }
    Ok(out)
}

/// One line of a registration chart: its legend entry and its points.
type Line = (Entry, Vec<(f64, f64)>);

/// Lines of registration points, one per (source, method, page), through
/// (`x`, `y`) of each point where both are positive. Colour per source
/// and page, marker per method; a ring's first registration alone (the
/// floor every ring count starts from) dashed. In the order of their
/// right ends, top down, as the legend lists them.
fn registration_lines(
    pts: &[Value],
    x: impl Fn(&Value) -> f64,
    y: impl Fn(&Value) -> f64,
) -> Vec<Line> {
    const MARKERS: [Marker; 4] = [
        Marker::Circle,
        Marker::Triangle,
        Marker::Square,
        Marker::Cross,
    ];
    let mut sources: Vec<(&str, &str)> = Vec::new();
    let mut methods: Vec<&str> = Vec::new();
    let mut lines: Vec<Line> = Vec::new();
    for p in pts {
        let (x, y) = (x(p), y(p));
        if x.is_nan() || y.is_nan() || x <= 0.0 || y <= 0.0 {
            continue;
        }
        let source = p["source"].as_str().unwrap_or("?");
        let method = p["method"].as_str().unwrap_or("?");
        let page = p["page"].as_str().unwrap_or("?");
        let name = format!("{source} {method}, {page} pages");
        if let Some(l) = lines.iter_mut().find(|l| l.0.name == name) {
            l.1.push((x, y));
            continue;
        }
        let color = COLORS[index_of(&mut sources, (source, page)) % COLORS.len()];
        let swatch = if method == "first-register" {
            Swatch::Line {
                marker: Marker::Ring,
                dashed: true,
            }
        } else {
            Swatch::Line {
                marker: MARKERS[index_of(&mut methods, method) % MARKERS.len()],
                dashed: false,
            }
        };
        lines.push((
            Entry {
                name,
                color,
                swatch,
            },
            vec![(x, y)],
        ));
    }
    for l in &mut lines {
        l.1.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    let last = |l: &Line| l.1.last().map_or(0.0, |p| p.1);
    lines.sort_by(|a, b| last(b).total_cmp(&last(a)));
    lines
}

/// The white, titled area of a chart inside `root`'s margins.
fn frame<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
) -> Result<DrawingArea<DB, Shift>, String> {
    root.fill(&WHITE).map_err(msg)?;
    let body = root.margin(12, 12, 16, 16);
    body.titled(title, ("sans-serif", 22)).map_err(msg)
}

/// The y axis of every chart: log scale over `lo..hi`, marked as
/// [`log_ticks`] says.
type LogY = WithKeyPoints<LogCoord<f64>>;

/// A chart on `plot` with the x axis `x` (its labels `x_label_area`
/// pixels high) and the log y axis over `lo..hi`.
fn log_y_chart<'a, DB: DrawingBackend, X: AsRangedCoord>(
    plot: &'a DrawingArea<DB, Shift>,
    x_label_area: u32,
    x: X,
    (lo, hi): (f64, f64),
) -> Result<ChartContext<'a, DB, Cartesian2d<X::CoordDescType, LogY>>, String> {
    let (bold, light) = log_ticks(lo, hi);
    ChartBuilder::on(plot)
        .margin(12)
        .x_label_area_size(x_label_area)
        .y_label_area_size(76)
        .build_cartesian_2d(
            x,
            (lo..hi)
                .log_scale()
                .with_key_points(bold)
                .with_light_points(light),
        )
        .map_err(msg)
}

/// A log-log chart of `lines` (not empty) under `title`, x marked at its
/// powers of two, the legend in a column on the right.
fn line_chart<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    (x_desc, y_desc): (&str, &str),
    x_label: &dyn Fn(&f64) -> String,
    lines: &[Line],
) -> Result<(), String> {
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in lines.iter().flat_map(|l| l.1.iter()) {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    let body = frame(root, title)?;
    let entries: Vec<Entry> = lines.iter().map(|l| l.0.clone()).collect();
    let mut legend_w = 0;
    for e in &entries {
        legend_w = legend_w.max(entry_width(&body, e)?);
    }
    let (w, _) = body.dim_in_pixel();
    let (plot, legend) = body.split_horizontally(w as i32 - legend_w - 8);
    let at: Vec<(i32, i32)> = (0..entries.len())
        .map(|i| (8, 12 + i as i32 * LEGEND_ROW as i32))
        .collect();
    draw_legend(&legend, &entries, &at)?;

    // Powers of two from the smallest x to the largest; every other one
    // when there would be more than 8.
    let mut ticks = Vec::new();
    let mut t = 2f64.powi(x0.log2().ceil() as i32);
    while t <= x1 * 1.0001 {
        ticks.push(t);
        t *= 2.0;
    }
    while ticks.len() > 8 {
        ticks = ticks.into_iter().step_by(2).collect();
    }
    let x = ((x0 / 1.4)..(x1 * 1.4)).log_scale().with_key_points(ticks);
    let mut chart = log_y_chart(&plot, 48, x, (y0 / 2.0, y1 * 2.0))?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
        .x_label_formatter(x_label)
        .y_label_formatter(&|us| time_label(*us))
        .draw()
        .map_err(msg)?;
    for (e, pts) in lines {
        let Swatch::Line { marker, dashed } = e.swatch else {
            continue;
        };
        let style = e.color.stroke_width(2);
        if dashed {
            chart
                .draw_series(DashedLineSeries::new(pts.iter().copied(), 8, 5, style))
                .map_err(msg)?;
        } else {
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), style))
                .map_err(msg)?;
        }
        for &p in pts {
            marker.draw(chart.plotting_area(), p, e.color)?;
        }
    }
    root.present().map_err(msg)
}

fn latency_chart<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    pts: &[Value],
) -> Result<(), String> {
    let lines = registration_lines(
        pts,
        |p| p["pool_bytes"].as_f64().unwrap_or(0.0) / 1048576.0,
        |p| p["median"]["value"].as_f64().unwrap_or(0.0),
    );
    if lines.is_empty() {
        return Err("no registration points".into());
    }
    line_chart(
        root,
        "Buffer registration: median latency per ring",
        ("pool size", "median latency"),
        &|mib| bytes_label(*mib),
        &lines,
    )
}

fn rings_chart<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    pts: &[Value],
) -> Result<(), String> {
    let lines = registration_lines(
        pts,
        |p| p["rings"].as_f64().unwrap_or(0.0),
        |p| p["total"]["value"].as_f64().unwrap_or(0.0),
    );
    if lines.is_empty() {
        return Err("no rings sweep points".into());
    }
    let mut sizes: Vec<u64> = Vec::new();
    for p in pts {
        if let Some(b) = p["pool_bytes"].as_u64() {
            index_of(&mut sizes, b);
        }
    }
    let pool: Vec<String> = sizes
        .iter()
        .map(|&b| bytes_label(b as f64 / 1048576.0))
        .collect();
    let title = if pool.is_empty() {
        "Rings sweep: time until every ring holds the pool".to_string()
    } else {
        format!(
            "Rings sweep, {} pool: time until every ring holds it",
            pool.join(" / ")
        )
    };
    line_chart(
        root,
        &title,
        ("rings holding the pool", "time until all rings hold it"),
        &|x| format!("{x:.0}"),
        &lines,
    )
}

/// The x axis of `n` groups of bars: linear over `0..n`, marked at the
/// groups' centres only (plotters' `with_key_points` on an f64 axis loses
/// the label formatter).
struct Groups(usize);

impl Ranged for Groups {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let f = v / self.0 as f64;
        limit.0 + (f * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            return Vec::new();
        }
        (0..self.0).map(|i| i as f64 + 0.5).collect()
    }

    fn range(&self) -> std::ops::Range<f64> {
        0.0..self.0 as f64
    }
}

/// The IOPS points as bars: a group per (op, QD), ops in the order
/// results.json names them, QDs ascending within one; a bar per path, in
/// the same place in every group (a path without that point leaves a gap).
struct Bars {
    /// Operation names without `rand`.
    ops: Vec<String>,
    paths: Vec<String>,
    /// (op index, QD), sorted.
    groups: Vec<(usize, u64)>,
    /// (group, path index, IOPS).
    bars: Vec<((usize, u64), usize, f64)>,
}

impl Bars {
    fn of(pts: &[Value]) -> Result<Bars, String> {
        let mut b = Bars {
            ops: Vec::new(),
            paths: Vec::new(),
            groups: Vec::new(),
            bars: Vec::new(),
        };
        for p in pts {
            let v = p["iops"]["value"].as_f64().unwrap_or(0.0);
            if v.is_nan() || v <= 0.0 {
                continue;
            }
            let op = p["op"].as_str().unwrap_or("");
            let op = op.strip_prefix("rand").unwrap_or(op).to_string();
            let key = (index_of(&mut b.ops, op), p["qd"].as_u64().unwrap_or(0));
            index_of(&mut b.groups, key);
            let path = p["path"].as_str().unwrap_or("?").to_string();
            let path = index_of(&mut b.paths, path);
            b.bars.push((key, path, v));
        }
        if b.bars.is_empty() {
            return Err("no io points".into());
        }
        b.groups.sort();
        Ok(b)
    }

    fn group_label(&self, &(op, qd): &(usize, u64)) -> String {
        if self.ops[op].is_empty() {
            format!("QD{qd}")
        } else {
            format!("{} QD{qd}", self.ops[op])
        }
    }

    fn title(&self) -> String {
        let kinds: Vec<String> = self
            .ops
            .iter()
            .filter(|o| !o.is_empty())
            .map(|o| format!("{o}s"))
            .collect();
        if kinds.is_empty() {
            "4 KiB random I/O, O_DIRECT: IOPS per path".to_string()
        } else {
            format!(
                "4 KiB random {}, O_DIRECT: IOPS per path",
                kinds.join(" and ")
            )
        }
    }

    /// Each group spans 80% of its unit; each path a slot of that.
    fn slot(&self) -> f64 {
        0.8 / self.paths.len() as f64
    }

    /// Where the bar of `path` in group `key` starts.
    fn left(&self, key: &(usize, u64), path: usize) -> f64 {
        let g = self.groups.iter().position(|g| g == key).unwrap_or(0);
        g as f64 + 0.1 + path as f64 * self.slot()
    }

    /// The largest font whose widest figure fits a slot of `slot_px`
    /// pixels on `plot`; none when even the smallest would overlap.
    fn figure_style<DB: DrawingBackend>(
        &self,
        plot: &DrawingArea<DB, Shift>,
        slot_px: f64,
    ) -> Result<Option<TextStyle<'static>>, String> {
        for size in [13, 12, 11, 10] {
            let style = TextStyle::from(("sans-serif", size).into_font());
            let mut widest = 0;
            for b in &self.bars {
                let (w, _) = plot
                    .estimate_text_size(&count_label(b.2), &style)
                    .map_err(msg)?;
                widest = widest.max(w);
            }
            if f64::from(widest) + 2.0 <= slot_px {
                return Ok(Some(style.pos(Pos::new(HPos::Center, VPos::Bottom))));
            }
        }
        Ok(None)
    }
}

fn iops_chart<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    pts: &[Value],
) -> Result<(), String> {
    let b = Bars::of(pts)?;
    let body = frame(root, &b.title())?;
    let entries: Vec<Entry> = b
        .paths
        .iter()
        .enumerate()
        .map(|(i, p)| Entry {
            name: p.clone(),
            color: COLORS[i % COLORS.len()],
            swatch: Swatch::Bar,
        })
        .collect();
    let (w, _) = body.dim_in_pixel();
    let (at, legend_h) = legend_rows(&body, &entries, w as i32)?;
    let (legend, plot) = body.split_vertically(legend_h + 6);
    draw_legend(&legend, &entries, &at)?;

    let ymin = b.bars.iter().map(|b| b.2).fold(f64::MAX, f64::min);
    let ymax = b.bars.iter().map(|b| b.2).fold(f64::MIN, f64::max);
    // Bars rise from a power of ten at least twice below the smallest,
    // and there is room above the tallest for its figure.
    let lo = 10f64.powi((ymin / 2.0).log10().floor() as i32);
    let n = b.groups.len();
    let mut chart = log_y_chart(&plot, 40, Groups(n), (lo, ymax * 2.5))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_label_style(("sans-serif", 16))
        .y_label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
        .x_label_formatter(&|x| {
            b.groups
                .get(x.floor() as usize)
                .map(|g| b.group_label(g))
                .unwrap_or_default()
        })
        .y_desc("IOPS (log scale)")
        .y_label_formatter(&|v| count_label(*v))
        .draw()
        .map_err(msg)?;
    let slot = b.slot();
    chart
        .draw_series(b.bars.iter().map(|(key, path, v)| {
            let x = b.left(key, *path);
            let c = COLORS[path % COLORS.len()];
            Rectangle::new([(x + slot * 0.08, lo), (x + slot * 0.92, *v)], c.filled())
        }))
        .map_err(msg)?;
    // Figures above the bars.
    let slot_px = plot.dim_in_pixel().0 as f64 / n as f64 * slot;
    if let Some(style) = b.figure_style(&plot, slot_px)? {
        chart
            .draw_series(b.bars.iter().map(|(key, path, v)| {
                let x = b.left(key, *path) + slot / 2.0;
                EmptyElement::at((x, *v)) + Text::new(count_label(*v), (0, -3), style.clone())
            }))
            .map_err(msg)?;
    }
    root.present().map_err(msg)
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
        let sweep = |method: &str, page: &str, rings: u32, us: f64| {
            json!({"source": "host", "method": method, "page": page, "rings": rings,
                   "pool_bytes": 16u64 << 20, "median": {"value": us, "unit": "us"},
                   "total": {"value": us * f64::from(rings), "unit": "us"}})
        };
        let io = |path: &str, op: &str, qd: u32, iops: f64| json!({"path": path, "op": op, "qd": qd, "iops": {"value": iops, "unit": "IOPS"}});
        json!({"suites": {
            "registration": {
                "points": [
                    reg("host", "register", 64, 9000.0),
                    reg("host", "register", 128, 18000.0),
                    reg("host", "clone", 64, 12.0),
                    reg("host", "clone", 128, 13.0),
                ],
                "rings_sweep": [
                    sweep("first-register", "4K", 1, 300.0),
                    sweep("first-register", "4K", 2, 310.0),
                    sweep("register", "4K", 2, 250.0),
                    sweep("clone", "4K", 2, 160.0),
                    sweep("first-register", "4K", 4, 305.0),
                    sweep("register", "4K", 4, 260.0),
                    sweep("clone", "4K", 4, 80.0),
                    sweep("register", "2M", 4, 6.0),
                ],
            },
            // Written per path as io.rs does; virtio-blk has no write at
            // QD32: a gap in that group.
            "io": {"points": [
                io("host", "randread", 1, 11000.0),
                io("host", "randread", 32, 110000.0),
                io("host", "randwrite", 1, 9500.0),
                io("host", "randwrite", 32, 71000.0),
                io("guest-virtio-blk", "randread", 1, 150.0),
                io("guest-virtio-blk", "randread", 32, 400.0),
                io("guest-virtio-blk", "randwrite", 1, 140.0),
                io("guest-pv-ring", "randread", 1, 7200.0),
                io("guest-pv-ring", "randread", 32, 63000.0),
                io("guest-pv-ring", "randwrite", 1, 7700.0),
                io("guest-pv-ring", "randwrite", 32, 62000.0),
                io("guest-pv-ring-sqpoll", "randread", 1, 19600.0),
                io("guest-pv-ring-sqpoll", "randread", 32, 98000.0),
                io("guest-pv-ring-sqpoll", "randwrite", 1, 11800.0),
                io("guest-pv-ring-sqpoll", "randwrite", 32, 52000.0),
            ]},
        }})
    }

    /// Each `<text>` of an SVG as (x, its text).
    fn svg_texts(svg: &str) -> Vec<(i32, String)> {
        svg.split("<text ")
            .skip(1)
            .map(|t| {
                let x = t
                    .split("x=\"")
                    .nth(1)
                    .and_then(|s| s.split('"').next())
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(-1);
                let body = t.split_once('>').map_or("", |b| b.1);
                let body = body.split("</text>").next().unwrap_or("");
                (x, body.trim().replace("&amp;", "&"))
            })
            .collect()
    }

    /// The x of the one text that reads `s`; fails on none or several.
    fn once(texts: &[(i32, String)], s: &str) -> i32 {
        let hits: Vec<i32> = texts.iter().filter(|t| t.1 == s).map(|t| t.0).collect();
        assert_eq!(hits.len(), 1, "{s:?} in {texts:?}");
        hits[0]
    }

    /// A fresh directory of the system's temp dir for one test.
    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rv-charts-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
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
        let dir = tmp("all");
        let paths = draw(&dir, &results()).expect("charts (needs fonts-dejavu-core)");
        let names: Vec<String> = paths
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "registration.svg",
                "registration.png",
                "registration-rings.svg",
                "registration-rings.png",
                "io.svg",
                "io.png"
            ]
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
                let axis = match names[paths.iter().position(|q| q == p).unwrap()].as_str() {
                    "registration.svg" => "median latency",
                    "registration-rings.svg" => "time until all rings hold it",
                    _ => "IOPS (log scale)",
                };
                assert!(text.contains(axis), "{}: no {axis:?}", p.display());
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn io_chart_groups_bars_by_op_and_qd_with_a_legend_of_paths() {
        let dir = tmp("io");
        let r = json!({"suites": {"io": results()["suites"]["io"].clone()}});
        draw(&dir, &r).unwrap();
        let texts = svg_texts(&std::fs::read_to_string(dir.join("io.svg")).unwrap());
        once(
            &texts,
            "4 KiB random reads and writes, O_DIRECT: IOPS per path",
        );
        // One label per group, left to right: reads then writes, QD
        // ascending.
        let xs: Vec<i32> = ["read QD1", "read QD32", "write QD1", "write QD32"]
            .iter()
            .map(|g| once(&texts, g))
            .collect();
        assert!(xs.windows(2).all(|w| w[0] < w[1]), "{xs:?}");
        // Each path named once (the legend), in the order of the data.
        let legend: Vec<i32> = [
            "host",
            "guest-virtio-blk",
            "guest-pv-ring",
            "guest-pv-ring-sqpoll",
        ]
        .iter()
        .map(|p| once(&texts, p))
        .collect();
        assert!(legend.windows(2).all(|w| w[0] < w[1]), "{legend:?}");
        // Human figures on the axis and above each of the 15 bars (they
        // fit at SIZE).
        for tick in ["100", "1k", "10k", "100k"] {
            once(&texts, tick);
        }
        for figure in ["150", "400", "140", "7.2k", "63k", "110k", "52k"] {
            once(&texts, figure);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rings_chart_lines_per_source_method_and_page() {
        let dir = tmp("rings");
        let mut r = results();
        r["suites"]["io"] = json!(null);
        let paths = draw(&dir, &r).unwrap();
        assert!(paths.contains(&dir.join("registration-rings.png")));
        let png = std::fs::read(dir.join("registration-rings.png")).unwrap();
        assert_eq!(png_size(&png), SIZE);
        let texts =
            svg_texts(&std::fs::read_to_string(dir.join("registration-rings.svg")).unwrap());
        once(
            &texts,
            "Rings sweep, 16 MiB pool: time until every ring holds it",
        );
        for line in [
            "host first-register, 4K pages",
            "host register, 4K pages",
            "host clone, 4K pages",
            "host register, 2M pages",
        ] {
            once(&texts, line);
        }
        // Powers of two on the x axis, only as far as the sweep goes.
        let xs: Vec<i32> = ["1", "2", "4"].iter().map(|t| once(&texts, t)).collect();
        assert!(xs.windows(2).all(|w| w[0] < w[1]), "{xs:?}");
        assert!(!texts.iter().any(|t| t.1 == "8"), "{texts:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn no_rings_sweep_is_no_rings_chart() {
        for sweep in [None, Some(json!([]))] {
            let dir = tmp("nosweep");
            let mut r = results();
            match &sweep {
                None => {
                    r["suites"]["registration"]
                        .as_object_mut()
                        .unwrap()
                        .remove("rings_sweep");
                }
                Some(s) => r["suites"]["registration"]["rings_sweep"] = s.clone(),
            }
            let paths = draw(&dir, &r).unwrap();
            assert_eq!(paths.len(), 4, "{sweep:?}: {paths:?}");
            assert!(!dir.join("registration-rings.svg").exists());
            assert!(!dir.join("registration-rings.png").exists());
            std::fs::remove_dir_all(&dir).unwrap();
        }
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
        assert_eq!(count_label(147.0), "147");
        assert_eq!(count_label(1000.0), "1k");
        assert_eq!(count_label(7182.0), "7.2k");
        assert_eq!(count_label(116514.0), "117k");
        assert_eq!(count_label(2.5e6), "2.5M");
    }

    #[test]
    fn log_ticks_label_decades_and_mesh_the_rest() {
        let (bold, light) = log_ticks(10.0, 250e3);
        assert_eq!(bold, [10.0, 100.0, 1e3, 1e4, 1e5]);
        assert_eq!(light.len(), 8 * 4 + 1, "{light:?}");
        assert_eq!(light.last(), Some(&2e5));
        // Under two decades: 2 and 5 times them labelled too.
        let (bold, _) = log_ticks(3.0, 120.0);
        assert_eq!(bold, [5.0, 10.0, 20.0, 50.0, 100.0]);
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
