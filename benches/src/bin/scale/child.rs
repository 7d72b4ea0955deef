//! Each measured point runs in a child process of its own (this binary,
//! a `*-child` subcommand), so its RSS and CPU time are its own; the
//! child prints one JSON line.

use std::process::{Command, Stdio};

use serde_json::Value;

/// Runs `scale ARGS...` and returns its JSON line.
pub fn run(args: &[String]) -> Result<Value, String> {
    let exe = std::env::current_exe().map_err(|e| format!("this binary's path: {e}"))?;
    let out = Command::new(exe)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("scale {}: {e}", args.join(" ")))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("scale {} failed ({})", args.join(" "), out.status));
    }
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .ok_or_else(|| format!("scale {}: no JSON line", args.join(" ")))?;
    serde_json::from_str(line).map_err(|e| format!("scale {}: {e}: {line}", args.join(" ")))
}

/// The run whose `key` is the median of `runs` (by value; the lower
/// middle one for an even count).
pub fn median_by(mut runs: Vec<Value>, key: &str) -> Option<Value> {
    runs.sort_by(|a, b| {
        let f = |v: &Value| v[key].as_f64().unwrap_or(f64::NAN);
        f(a).total_cmp(&f(b))
    });
    let mid = runs.len().saturating_sub(1) / 2;
    runs.into_iter().nth(mid)
}

/// A number of a child's JSON line.
pub fn num(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or(f64::NAN)
}

/// 52300 → "52.3k"; below 10,000 as is.
pub fn rate(x: f64) -> String {
    if x >= 10_000.0 {
        format!("{:.1}k", x / 1000.0)
    } else {
        format!("{x:.0}")
    }
}
