//! The figure files of this program: line charts, written through the
//! shared figure module (`carehare_benches::figure`) that `plots` reads.

use std::path::Path;

use carehare_benches::figure::{Figure, Kind};

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
    pub log_y: bool,
    pub series: Vec<Series>,
}

impl Lines<'_> {
    /// Writes `DIR/fig-<name>.json`.
    pub fn write(&self, dir: &Path, name: &str) -> Result<(), String> {
        let mut figure = Figure::new(Kind::Lines, self.title, self.x_label, self.y_label);
        figure.log_x = self.log_x;
        figure.log_y = self.log_y;
        for s in &self.series {
            // A log axis has no place for 0 (an RSS that did not grow by a
            // page, say): such a point is left to the table.
            let drawable =
                |&(x, y): &(f64, f64)| (!self.log_x || x > 0.0) && (!self.log_y || y > 0.0);
            figure.push(&s.name, s.points.iter().copied().filter(drawable));
        }
        let path = figure.write(dir, name).map_err(|e| e.to_string())?;
        eprintln!("scale: wrote {}", path.display());
        Ok(())
    }
}
