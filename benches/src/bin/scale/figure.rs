//! The figure files: `fig-<name>.json` in the shape the `plots` binary
//! draws (kind, title, axis labels, series of points).

use std::path::Path;

use serde_json::json;

pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A line chart: one line with markers per series.
pub struct Lines<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub log_x: bool,
    pub series: Vec<Series>,
}

impl Lines<'_> {
    /// Writes `DIR/fig-<name>.json`.
    pub fn write(&self, dir: &Path, name: &str) -> Result<(), String> {
        let series: Vec<_> = self
            .series
            .iter()
            .map(|s| {
                let points: Vec<[f64; 2]> = s.points.iter().map(|&(x, y)| [x, y]).collect();
                json!({"name": s.name, "points": points})
            })
            .collect();
        let figure = json!({
            "kind": "lines",
            "title": self.title,
            "x_label": self.x_label,
            "y_label": self.y_label,
            "log_x": self.log_x,
            "log_y": false,
            "series": series,
        });
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = dir.join(format!("fig-{name}.json"));
        let text = serde_json::to_string_pretty(&figure).map_err(|e| e.to_string())?;
        std::fs::write(&path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("scale: wrote {}", path.display());
        Ok(())
    }
}
