//! Draws the figure files ([`crate::figure`]) into SVG with plotters: a
//! title, labelled axes (logarithmic where the figure asks), and the
//! legend in a column of its own right of the chart, so it never hides a
//! point. Text is written as SVG `<text>`; no font is loaded.

use std::ops::Range;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::coord::combinators::{BindKeyPoints, LogCoord, WithKeyPoints};
use plotters::coord::ranged1d::{
    AsRangedCoord, DefaultFormatting, KeyPointHint, Ranged, ValueFormatter,
};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::figure::{Figure, FigureError, Kind, figure_name};

/// The chart's size without the legend, in pixels.
const CHART: (u32, u32) = (640, 450);
/// Tableau's ten colours: distinct, and readable on white.
const COLOURS: [RGBColor; 10] = [
    RGBColor(0x4e, 0x79, 0xa7),
    RGBColor(0xf2, 0x8e, 0x2b),
    RGBColor(0xe1, 0x57, 0x59),
    RGBColor(0x76, 0xb7, 0xb2),
    RGBColor(0x59, 0xa1, 0x4f),
    RGBColor(0xed, 0xc9, 0x48),
    RGBColor(0xb0, 0x7a, 0xa1),
    RGBColor(0xff, 0x9d, 0xa7),
    RGBColor(0x9c, 0x75, 0x5f),
    RGBColor(0x79, 0x70, 0x6e),
];
const FONT: &str = "sans-serif";

/// A figure that could not be drawn.
#[derive(Debug)]
pub enum PlotError {
    /// The figure file is unreadable or invalid.
    Figure(FigureError),
    /// Listing the figure directory failed.
    Io(PathBuf, std::io::Error),
    /// plotters failed (writing the SVG file, mostly).
    Draw(String),
}

impl std::fmt::Display for PlotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlotError::Figure(e) => write!(f, "{e}"),
            PlotError::Io(path, e) => write!(f, "{}: {e}", path.display()),
            PlotError::Draw(e) => write!(f, "drawing failed: {e}"),
        }
    }
}

impl std::error::Error for PlotError {}

impl From<FigureError> for PlotError {
    fn from(e: FigureError) -> Self {
        PlotError::Figure(e)
    }
}

impl<E: std::error::Error + Send + Sync> From<DrawingAreaErrorKind<E>> for PlotError {
    fn from(e: DrawingAreaErrorKind<E>) -> Self {
        PlotError::Draw(e.to_string())
    }
}

/// One figure file and the SVG drawn from it, or why not.
pub type Plotted = (PathBuf, Result<PathBuf, PlotError>);

/// Draws every `fig-*.json` in `dir` into `out/bench-<figure>.svg`.
/// Returns each figure's outcome (a bad file does not stop the others),
/// in file name order.
pub fn plot_dir(dir: &Path, out: &Path) -> Result<Vec<Plotted>, PlotError> {
    let entries = std::fs::read_dir(dir).map_err(|e| PlotError::Io(dir.into(), e))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| figure_name(p).is_some())
        .collect();
    files.sort();
    std::fs::create_dir_all(out).map_err(|e| PlotError::Io(out.into(), e))?;
    Ok(files
        .into_iter()
        .map(|file| {
            let name = figure_name(&file).expect("filtered").to_string();
            let svg = out.join(format!("bench-{name}.svg"));
            let result = Figure::read(&file)
                .map_err(PlotError::from)
                .and_then(|figure| render(&figure, &svg))
                .map(|()| svg);
            (file, result)
        })
        .collect())
}

/// Draws one figure into the SVG file `path`.
pub fn render(figure: &Figure, path: &Path) -> Result<(), PlotError> {
    figure.check()?;
    let legend_width = legend_width(figure);
    let width = CHART.0 + legend_width;
    let root = SVGBackend::new(path, (width, CHART.1)).into_drawing_area();
    root.fill(&WHITE)?;
    // plotters writes a font size of n as n / 1.24 px: these are ~19, 14.5, 13.
    let body = root.titled(&figure.title, (FONT, title_size(&figure.title, width)))?;
    let (chart, legend) = body.split_horizontally(CHART.0);
    let x = axis(figure, |(x, _)| x, figure.log_x);
    let y = axis(figure, |(_, y)| y, figure.log_y);
    // plotters types each axis by its scale.
    match x {
        Axis::Linear(x) => with_y(&chart, figure, x, y)?,
        Axis::Log(x) => with_y(&chart, figure, log_axis(x), y)?,
        Axis::Categories(n) => with_y(&chart, figure, CategoryAxis(n), y)?,
    }
    draw_legend(&legend, figure)?;
    root.present()?;
    Ok(())
}

enum Axis {
    Linear(Range<f64>),
    Log(Range<f64>),
    /// Bars' categories: so many.
    Categories(usize),
}

/// The bars' x axis: the categories at 0, 1, 2..., a tick on each.
#[derive(Clone)]
struct CategoryAxis(usize);

impl Ranged for CategoryAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let fraction = (v + 0.5) / self.0 as f64;
        limit.0 + (f64::from(limit.1 - limit.0) * fraction).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, _: H) -> Vec<f64> {
        (0..self.0).map(|i| i as f64).collect()
    }

    fn range(&self) -> Range<f64> {
        -0.5..self.0 as f64 - 0.5
    }
}

/// [`draw`] with the y axis typed by its scale.
fn with_y<X>(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    figure: &Figure,
    x: X,
    y: Axis,
) -> Result<(), PlotError>
where
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
{
    match y {
        // Bars stand on the bottom of the y axis.
        Axis::Linear(y) => draw(area, figure, x, y.start, y),
        Axis::Log(y) => draw(area, figure, x, y.start, log_axis(y)),
        Axis::Categories(_) => unreachable!("categories are on x"),
    }
}

/// A log axis over `range`, its ticks at 1, 2 and 5 × 10ⁿ (only the powers
/// of ten when those would crowd it), its light lines at every multiple.
/// plotters' own log ticks skip the range's start up to the first power of
/// ten, and list each power of ten twice.
fn log_axis(range: Range<f64>) -> WithKeyPoints<LogCoord<f64>> {
    let (bold, light) = log_ticks(&range);
    range
        .log_scale()
        .with_key_points(bold)
        .with_light_points(light)
}

/// The bold and the light ticks of a log axis over `range` (> 0).
fn log_ticks(range: &Range<f64>) -> (Vec<f64>, Vec<f64>) {
    let inside = |v: f64| v >= range.start * (1.0 - 1e-9) && v <= range.end * (1.0 + 1e-9);
    let (mut nice, mut tens, mut light) = (Vec::new(), Vec::new(), Vec::new());
    let mut decade = 10f64.powf(range.start.log10().floor());
    while decade <= range.end * (1.0 + 1e-9) {
        for m in 1..=9 {
            let v = decade * f64::from(m);
            if !inside(v) {
                continue;
            }
            light.push(v);
            if [1, 2, 5].contains(&m) {
                nice.push(v);
            }
            if m == 1 {
                tens.push(v);
            }
        }
        decade *= 10.0;
    }
    let bold = if nice.len() <= 12 { nice } else { tens };
    (bold, light)
}

/// The title's font size: 24 (~19 px), smaller for a title that would not
/// fit the width (sans-serif glyphs average about 0.55 em).
fn title_size(title: &str, width: u32) -> f64 {
    let chars = title.chars().count().max(1) as f64;
    let fits = f64::from(width) * 0.95 / (chars * 0.55) * 1.24;
    fits.clamp(12.0, 24.0)
}

/// The range of one axis, with room so no point sits on the frame.
fn axis(figure: &Figure, pick: impl Fn((f64, f64)) -> f64, log: bool) -> Axis {
    let is_x = pick((1.0, 0.0)) == 1.0;
    if is_x && figure.kind == Kind::Bars {
        return Axis::Categories(figure.categories.as_ref().map_or(1, Vec::len));
    }
    if !is_x && figure.kind == Kind::Cdf && !log {
        return Axis::Linear(0.0..1.0);
    }
    let values = figure.points().map(pick).filter(|v| !log || *v > 0.0);
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if log {
        return Axis::Log(nice_below(lo * 0.9)..nice_above(hi * 1.1));
    }
    // Bars and every y axis of non-negative values start at zero.
    let from_zero = lo >= 0.0 && (!is_x || figure.kind == Kind::Bars);
    let (lo, hi) = if from_zero { (0.0, hi) } else { (lo, hi) };
    let pad = if hi > lo {
        (hi - lo) * 0.06
    } else {
        hi.abs().max(1.0) * 0.1
    };
    let lo = if from_zero { 0.0 } else { lo - pad };
    Axis::Linear(lo..hi + pad)
}

/// The largest of 1, 2, 5 × 10ⁿ at or below `v` (> 0).
fn nice_below(v: f64) -> f64 {
    let decade = 10f64.powf(v.log10().floor());
    [5.0, 2.0, 1.0]
        .into_iter()
        .map(|m| m * decade)
        .find(|&n| n <= v * (1.0 + 1e-9))
        .unwrap_or(decade)
}

/// The smallest of 1, 2, 5 × 10ⁿ at or above `v` (> 0).
fn nice_above(v: f64) -> f64 {
    let decade = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * decade)
        .find(|&n| n >= v * (1.0 - 1e-9))
        .unwrap_or(10.0 * decade)
}

/// A tick's label: `52k`, `1.5M`, `0.25`, `120`.
pub fn tick(v: f64) -> String {
    let trim = |s: String| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    let a = v.abs();
    if a >= 1e6 {
        trim(format!("{:.1}", v / 1e6)) + "M"
    } else if a >= 1e4 {
        trim(format!("{:.0}", v / 1e3)) + "k"
    } else if a >= 1e3 {
        trim(format!("{:.1}", v / 1e3)) + "k"
    } else if a >= 1.0 || a == 0.0 {
        trim(format!("{v:.1}"))
    } else {
        trim(format!("{v:.3}"))
    }
}

fn colour(i: usize) -> RGBColor {
    COLOURS[i % COLOURS.len()]
}

fn draw<X, Y>(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    figure: &Figure,
    x: X,
    floor: f64,
    y: Y,
) -> Result<(), PlotError>
where
    X: AsRangedCoord<Value = f64>,
    Y: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(area)
        .margin_top(10)
        .margin_right(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(x, y)?;

    let categories = figure.categories.clone().unwrap_or_default();
    let x_fmt = |v: &f64| match figure.kind {
        Kind::Bars => category(&categories, *v),
        _ => tick(*v),
    };
    let y_fmt = |v: &f64| tick(*v);
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(figure.x_label.as_str())
        .y_desc(figure.y_label.as_str())
        .axis_desc_style((FONT, 18))
        .label_style((FONT, 16))
        .x_max_light_lines(1)
        .y_max_light_lines(1)
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .light_line_style(RGBColor(0, 0, 0).mix(0.05))
        .bold_line_style(RGBColor(0, 0, 0).mix(0.15));
    // Log and category axes bring their own ticks (`log_axis`, `render`).
    if figure.kind == Kind::Bars {
        mesh.disable_x_mesh();
    }
    mesh.x_labels(12).y_labels(10).draw()?;

    let n = figure.series.len().max(1) as f64;
    for (i, s) in figure.series.iter().enumerate() {
        let c = colour(i);
        match figure.kind {
            Kind::Lines => {
                chart.draw_series(LineSeries::new(s.points.iter().copied(), c.stroke_width(2)))?;
                chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 4, c.filled())))?;
            }
            Kind::Cdf => {
                chart.draw_series(LineSeries::new(s.points.iter().copied(), c.stroke_width(2)))?;
            }
            Kind::Bars => {
                // Each group is 0.8 wide, split among the series.
                let w = 0.8 / n;
                chart.draw_series(s.points.iter().map(|&(x, v)| {
                    let left = x - 0.4 + w * i as f64;
                    Rectangle::new([(left, floor), (left + w * 0.92, v)], c.filled())
                }))?;
            }
        }
    }
    Ok(())
}

/// The category at a tick, if the tick is on one.
fn category(categories: &[String], v: f64) -> String {
    let i = v.round();
    if (v - i).abs() < 1e-6 && i >= 0.0 {
        categories.get(i as usize).cloned().unwrap_or_default()
    } else {
        String::new()
    }
}

/// Room for the longest series name beside its swatch.
fn legend_width(figure: &Figure) -> u32 {
    let longest = figure
        .series
        .iter()
        .map(|s| s.name.chars().count())
        .max()
        .unwrap_or(0) as u32;
    (longest * 8 + 44).clamp(120, 360)
}

fn draw_legend(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    figure: &Figure,
) -> Result<(), PlotError> {
    // Rows of 22 px; a long list gets smaller rows to fit the height.
    let rows = figure.series.len().max(1) as i32;
    let step = (22).min((CHART.1 as i32 - 80) / rows).max(10);
    let font = (FONT, (step - 5).clamp(10, 16)).into_font();
    let text = TextStyle::from(font).pos(Pos::new(HPos::Left, VPos::Center));
    for (i, s) in figure.series.iter().enumerate() {
        let c = colour(i);
        let y = 24 + i as i32 * step;
        match figure.kind {
            Kind::Bars => {
                area.draw(&Rectangle::new([(4, y - 6), (22, y + 6)], c.filled()))?;
            }
            Kind::Lines | Kind::Cdf => {
                area.draw(&PathElement::new(vec![(2, y), (24, y)], c.stroke_width(2)))?;
                if figure.kind == Kind::Lines {
                    area.draw(&Circle::new((13, y), 4, c.filled()))?;
                }
            }
        }
        area.draw(&Text::new(s.name.as_str(), (30, y), text.clone()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("carehare-plot-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    fn figures() -> Vec<(&'static str, Figure)> {
        let mut bars = Figure::bars(
            "Throughput",
            "body and phase",
            "msg/s",
            [
                "12 B publish",
                "12 B consume",
                "1 KiB publish",
                "1 KiB consume",
            ]
            .map(String::from)
            .to_vec(),
        );
        bars.push(
            "carehare-plain",
            [
                (0.0, 52_000.0),
                (1.0, 61_000.0),
                (2.0, 40_000.0),
                (3.0, 38_000.0),
            ],
        );
        bars.push(
            "amqprs",
            [(0.0, 45_000.0), (1.0, 50_000.0), (3.0, 30_000.0)],
        );
        let mut lines = Figure::new(Kind::Lines, "Window", "window (messages)", "msg/s");
        lines.log_x = true;
        lines.push(
            "publish",
            [
                (1.0, 3_000.0),
                (10.0, 20_000.0),
                (100.0, 45_000.0),
                (1000.0, 52_000.0),
            ],
        );
        lines.push(
            "consume",
            [
                (1.0, 2_900.0),
                (10.0, 19_000.0),
                (100.0, 44_000.0),
                (1000.0, 50_000.0),
            ],
        );
        let mut cdf = Figure::new(Kind::Cdf, "Latency", "round trip (µs)", "fraction");
        cdf.log_x = true;
        cdf.push(
            "lapin",
            (1..=200).map(|i| (60.0 + i as f64 * i as f64 / 10.0, i as f64 / 200.0)),
        );
        let mut log_log = Figure::new(Kind::Lines, "Body size", "body (bytes)", "msg/s");
        (log_log.log_x, log_log.log_y) = (true, true);
        log_log.push(
            "consume",
            [
                (12.0, 50_000.0),
                (1024.0, 30_000.0),
                (16.0 * 1048576.0, 20.0),
            ],
        );
        vec![
            ("throughput", bars),
            ("growth-window", lines),
            ("latency-cdf", cdf),
            ("growth-body", log_log),
        ]
    }

    #[test]
    fn writes_an_svg_per_figure_file_with_its_text() {
        let dir = temp("in");
        let out = temp("out");
        for (name, f) in figures() {
            f.write(&dir, name).expect("write");
        }
        std::fs::write(dir.join("fig-broken.json"), "{").expect("write");
        std::fs::write(dir.join("other.json"), "{}").expect("write");
        let results = plot_dir(&dir, &out).expect("plot");
        assert_eq!(results.len(), 5, "only fig-*.json files");
        for (file, result) in &results {
            if file.ends_with("fig-broken.json") {
                assert!(matches!(
                    result,
                    Err(PlotError::Figure(FigureError::Json(..)))
                ));
                continue;
            }
            let svg = result.as_ref().expect("drawn");
            let text = std::fs::read_to_string(svg).expect("svg");
            let figure = Figure::read(file).expect("figure");
            assert!(text.contains("<text"), "text is SVG text");
            for needle in [&figure.title, &figure.x_label, &figure.y_label] {
                assert!(
                    text.contains(needle.as_str()),
                    "{} lacks {needle}",
                    svg.display()
                );
            }
            for s in &figure.series {
                // plotters puts a <text>'s content on a line of its own.
                let named = text.lines().any(|l| l == s.name);
                assert!(named, "{} lacks {}", svg.display(), s.name);
            }
        }
        let bars = std::fs::read_to_string(out.join("bench-throughput.svg")).expect("svg");
        for c in ["12 B publish", "1 KiB consume"] {
            assert!(bars.contains(c), "category {c} labelled");
        }
        std::fs::remove_dir_all(dir).expect("clean up");
        std::fs::remove_dir_all(out).expect("clean up");
    }

    #[test]
    fn ticks_read_well() {
        assert_eq!(tick(52_000.0), "52k");
        assert_eq!(tick(1_500.0), "1.5k");
        assert_eq!(tick(2_500_000.0), "2.5M");
        assert_eq!(tick(120.0), "120");
        assert_eq!(tick(0.25), "0.25");
        assert_eq!(tick(0.0), "0");
        let (bold, light) = log_ticks(&(50.0..10_000.0));
        assert_eq!(
            bold,
            [50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10_000.0]
        );
        assert_eq!(
            light.len(),
            5 + 9 + 9 + 1,
            "50...90, 100...900, 1k...9k, 10k"
        );
        let (bold, _) = log_ticks(&(1.0..1e9));
        assert_eq!(bold.len(), 10, "the powers of ten only");
        assert_eq!(nice_below(63.0), 50.0);
        assert_eq!(nice_above(5_500.0), 10_000.0);
        assert_eq!(nice_above(100.0), 100.0);
        assert_eq!(title_size("Throughput", 800), 24.0);
        assert!(
            title_size(&"x".repeat(100), 800) < 20.0,
            "a long title shrinks"
        );
    }
}
