//! Draws every figure file the bench programs wrote
//! (`target/bench/fig-<figure>.json`) into `docs/bench-<figure>.svg`.
//!
//! ```text
//! cargo run --release --bin plots -- [--dir target/bench] [--out ../docs]
//! ```
//!
//! A figure that cannot be drawn is reported and the others are still
//! drawn; the exit status is 1 if any failed.

use std::path::{Path, PathBuf};

use carehare_benches::figure::default_dir;
use carehare_benches::plot::plot_dir;

fn main() {
    let mut dir = default_dir();
    let mut out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--dir" => dir = PathBuf::from(value),
            "--out" => out = PathBuf::from(value),
            other => panic!("unknown flag {other}"),
        }
    }
    let results = match plot_dir(&dir, &out) {
        Ok(results) => results,
        Err(e) => {
            eprintln!("plots: {e}");
            std::process::exit(1);
        }
    };
    if results.is_empty() {
        eprintln!("plots: no fig-*.json in {}", dir.display());
    }
    let mut failed = false;
    for (file, result) in results {
        match result {
            Ok(svg) => println!("{} -> {}", file.display(), svg.display()),
            Err(e) => {
                eprintln!("plots: {}: {e}", file.display());
                failed = true;
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
}
