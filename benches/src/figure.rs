//! The figure files: what a bench program writes beside its markdown table
//! (`target/bench/fig-<figure>.json`) and the `plots` binary draws into
//! `docs/bench-<figure>.svg`. One schema for writer and reader:
//!
//! ```json
//! {"kind": "lines", "title": "...", "x_label": "...", "y_label": "...",
//!  "log_x": false, "log_y": false,
//!  "series": [{"name": "carehare", "points": [[1, 52000.0], [4, 61000.0]]}]}
//! ```
//!
//! `bars` add `"categories": [...]` and their points are
//! `[category_index, value]`; `cdf` points are `[latency_us, fraction]`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// How a figure is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A line with markers through each series' (x, y) points.
    Lines,
    /// Grouped bars: one group per category, one bar per series.
    Bars,
    /// Cumulative distributions: (latency, fraction) points, fraction 0 to 1.
    Cdf,
}

/// One named series of (x, y) points.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// The legend's name for it.
    pub name: String,
    /// The points, `[x, y]` each.
    pub points: Vec<(f64, f64)>,
}

/// One figure file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    /// How it is drawn.
    pub kind: Kind,
    /// The title above the chart.
    pub title: String,
    /// The x axis' label (for bars: the categories' axis).
    pub x_label: String,
    /// The y axis' label.
    pub y_label: String,
    /// A logarithmic x axis (lines and cdf).
    #[serde(default)]
    pub log_x: bool,
    /// A logarithmic y axis.
    #[serde(default)]
    pub log_y: bool,
    /// The bars' categories, by index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub categories: Option<Vec<String>>,
    /// The series, in legend order.
    pub series: Vec<Series>,
}

/// A figure file that could not be read or written.
#[derive(Debug)]
pub enum FigureError {
    /// Reading or writing the file failed.
    Io(PathBuf, std::io::Error),
    /// The file is not a figure.
    Json(PathBuf, serde_json::Error),
    /// It parses but cannot be drawn (e.g. bars without categories).
    Invalid(String),
}

impl std::fmt::Display for FigureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FigureError::Io(path, e) => write!(f, "{}: {e}", path.display()),
            FigureError::Json(path, e) => write!(f, "{}: {e}", path.display()),
            FigureError::Invalid(why) => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for FigureError {}

impl Figure {
    /// An empty figure of `kind`.
    pub fn new(kind: Kind, title: &str, x_label: &str, y_label: &str) -> Self {
        Figure {
            kind,
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            log_x: false,
            log_y: false,
            categories: None,
            series: Vec::new(),
        }
    }

    /// Grouped bars over `categories`.
    pub fn bars(title: &str, x_label: &str, y_label: &str, categories: Vec<String>) -> Self {
        Figure {
            categories: Some(categories),
            ..Figure::new(Kind::Bars, title, x_label, y_label)
        }
    }

    /// Adds a series. Points that are not finite (a run that failed has no
    /// figure) are left out: JSON has no NaN.
    pub fn push(&mut self, name: &str, points: impl IntoIterator<Item = (f64, f64)>) {
        self.series.push(Series {
            name: name.into(),
            points: points
                .into_iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect(),
        });
    }

    /// Parses a figure and checks it can be drawn.
    pub fn parse(text: &str, path: &Path) -> Result<Self, FigureError> {
        let figure: Figure =
            serde_json::from_str(text).map_err(|e| FigureError::Json(path.into(), e))?;
        figure.check()?;
        Ok(figure)
    }

    /// Reads a figure file.
    pub fn read(path: &Path) -> Result<Self, FigureError> {
        let text = std::fs::read_to_string(path).map_err(|e| FigureError::Io(path.into(), e))?;
        Self::parse(&text, path)
    }

    /// Writes `fig-<name>.json` into `dir` (made if missing); returns its path.
    pub fn write(&self, dir: &Path, name: &str) -> Result<PathBuf, FigureError> {
        std::fs::create_dir_all(dir).map_err(|e| FigureError::Io(dir.into(), e))?;
        let path = dir.join(format!("fig-{name}.json"));
        let text = serde_json::to_string_pretty(self).expect("a figure serialises");
        std::fs::write(&path, text + "\n").map_err(|e| FigureError::Io(path.clone(), e))?;
        Ok(path)
    }

    /// What drawing needs: bars name their categories and point at them
    /// by index; log axes have positive values to show.
    pub fn check(&self) -> Result<(), FigureError> {
        let invalid = |why: String| Err(FigureError::Invalid(format!("{}: {why}", self.title)));
        if self.kind == Kind::Bars {
            let Some(categories) = &self.categories else {
                return invalid("bars need categories".into());
            };
            for s in &self.series {
                for &(x, _) in &s.points {
                    if x.fract() != 0.0 || x < 0.0 || x as usize >= categories.len() {
                        return invalid(format!("{}: no category {x}", s.name));
                    }
                }
            }
        }
        if self.points().next().is_none() {
            return invalid("no points".into());
        }
        if self.log_x && !self.points().any(|(x, _)| x > 0.0) {
            return invalid("a log x axis and no positive x".into());
        }
        if self.log_y && !self.points().any(|(_, y)| y > 0.0) {
            return invalid("a log y axis and no positive y".into());
        }
        Ok(())
    }

    /// Every point of every series.
    pub fn points(&self) -> impl Iterator<Item = (f64, f64)> + '_ {
        self.series.iter().flat_map(|s| s.points.iter().copied())
    }
}

/// The figure's name in a `fig-<name>.json` file name.
pub fn figure_name(path: &Path) -> Option<&str> {
    path.file_name()?
        .to_str()?
        .strip_prefix("fig-")?
        .strip_suffix(".json")
}

/// Where bench programs put their figure files unless told otherwise:
/// `benches/target/bench`, wherever they run from.
pub fn default_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_contracts_example() {
        let text = r#"{
          "kind": "lines",
          "title": "Throughput against queues",
          "x_label": "queues (N)",
          "y_label": "msg/s",
          "log_x": false,
          "series": [
            {"name": "carehare, 1 connection", "points": [[1, 52000.0], [4, 61000.0]]}
          ]
        }"#;
        let f = Figure::parse(text, Path::new("fig-queues.json")).expect("valid");
        assert_eq!(f.kind, Kind::Lines);
        assert!(!f.log_y, "log_y defaults to false");
        assert_eq!(f.series[0].name, "carehare, 1 connection");
        assert_eq!(f.series[0].points, vec![(1.0, 52000.0), (4.0, 61000.0)]);
    }

    #[test]
    fn bars_need_categories_that_their_points_name() {
        let bars = |categories: &str, x: u32| {
            format!(
                r#"{{"kind":"bars","title":"t","x_label":"","y_label":"msg/s","log_x":false,
                {categories} "series":[{{"name":"a","points":[[{x},1.5]]}}]}}"#
            )
        };
        let p = Path::new("fig-t.json");
        let ok = Figure::parse(&bars(r#""categories":["a","b"],"#, 1), p).expect("valid");
        assert_eq!(
            ok.categories.as_deref(),
            Some(&["a".into(), "b".into()][..])
        );
        for bad in [bars("", 0), bars(r#""categories":["a"],"#, 1)] {
            assert!(matches!(
                Figure::parse(&bad, p),
                Err(FigureError::Invalid(_))
            ));
        }
    }

    #[test]
    fn refuses_what_is_not_a_figure() {
        let p = Path::new("fig-x.json");
        for text in [
            "{}",
            r#"{"kind":"pie","title":"","x_label":"","y_label":"","series":[]}"#,
            r#"{"kind":"cdf","title":"","x_label":"","y_label":"","series":[{"name":"a","points":[[1]]}]}"#,
        ] {
            assert!(
                matches!(Figure::parse(text, p), Err(FigureError::Json(..))),
                "{text}"
            );
        }
        let empty = r#"{"kind":"cdf","title":"","x_label":"","y_label":"","series":[]}"#;
        assert!(matches!(
            Figure::parse(empty, p),
            Err(FigureError::Invalid(_))
        ));
    }

    #[test]
    fn writes_what_it_reads_without_non_finite_points() {
        let dir = std::env::temp_dir().join(format!("carehare-fig-{}", std::process::id()));
        let mut f = Figure::bars("T", "body", "msg/s", vec!["12 B".into(), "1 KiB".into()]);
        f.push("carehare", [(0.0, 50_000.0), (1.0, f64::NAN)]);
        let path = f.write(&dir, "throughput").expect("write");
        assert_eq!(figure_name(&path), Some("throughput"));
        let back = Figure::read(&path).expect("read");
        assert_eq!(back.series[0].points, vec![(0.0, 50_000.0)]);
        assert_eq!(back, f);
        std::fs::remove_dir_all(dir).expect("clean up");
    }
}
