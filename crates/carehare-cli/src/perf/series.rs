//! The per-second series: once a second, what was sent, confirmed and
//! received in that second and its latency percentiles; kept for `--json`,
//! written to `--csv` as it comes, and shown as the progress line.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::stats::Counters;
use super::units::{millis, thousands};

/// One interval (a second, but for the last one and late ticks).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Sample {
    /// Seconds from the start of the run to the end of the interval.
    pub second: f64,
    /// Messages published in the interval.
    pub sent: u64,
    /// Publishes confirmed in the interval.
    pub confirmed: u64,
    /// Messages consumed in the interval.
    pub received: u64,
    /// The interval's median latency, µs, if any was measured.
    pub p50_us: Option<u64>,
    /// Its 99th percentile.
    pub p99_us: Option<u64>,
}

/// The CSV header; a row per [`Sample`].
const CSV_HEADER: &str = "second,sent,confirmed,received,latency_p50_ms,latency_p99_ms";

impl Sample {
    pub(super) fn json(&self) -> Value {
        let ms = |us: Option<u64>| us.map(|us| us as f64 / 1000.0);
        json!({
            "second": (self.second * 1000.0).round() / 1000.0,
            "sent": self.sent,
            "confirmed": self.confirmed,
            "received": self.received,
            "latency_p50_ms": ms(self.p50_us),
            "latency_p99_ms": ms(self.p99_us),
        })
    }

    fn csv(&self) -> String {
        let ms =
            |us: Option<u64>| us.map_or(String::new(), |us| format!("{:.3}", us as f64 / 1000.0));
        format!(
            "{:.3},{},{},{},{},{}",
            self.second,
            self.sent,
            self.confirmed,
            self.received,
            ms(self.p50_us),
            ms(self.p99_us)
        )
    }
}

/// What the sampler keeps between ticks.
struct State {
    /// When sampling started: the series' time origin.
    start: Instant,
    samples: Vec<Sample>,
    last_at: Instant,
    /// Totals at `last_at`: sent, confirmed, received.
    last: (u64, u64, u64),
    /// What the progress line calls the phase.
    label: &'static str,
    csv: Option<BufWriter<File>>,
    /// A failed CSV write, said once at the end.
    csv_error: Option<std::io::Error>,
}

/// The series of a run, sampled by a task of its own.
pub(super) struct Series {
    counters: Arc<Counters>,
    state: Mutex<State>,
    progress: bool,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Series {
    /// A series, to start with [`spawn`](Self::spawn); `csv`, if given,
    /// is created at once (an error here ends the run before it starts).
    pub(super) fn new(
        counters: Arc<Counters>,
        csv: Option<&Path>,
        progress: bool,
    ) -> std::io::Result<Arc<Self>> {
        let csv = match csv {
            Some(path) => {
                let mut file = BufWriter::new(File::create(path)?);
                writeln!(file, "{CSV_HEADER}")?;
                file.flush()?;
                Some(file)
            }
            None => None,
        };
        let now = Instant::now();
        Ok(Arc::new(Self {
            state: Mutex::new(State {
                start: now,
                samples: Vec::new(),
                last_at: now,
                last: totals(&counters),
                label: "perf",
                csv,
                csv_error: None,
            }),
            counters,
            progress,
        }))
    }

    /// Names the phase on the progress line from now on.
    pub(super) fn set_label(&self, label: &'static str) {
        lock(&self.state).label = label;
    }

    /// Starts sampling: once a second from now, the series' time origin.
    pub(super) fn spawn(self: &Arc<Self>) -> Sampler {
        let start = Instant::now();
        {
            let mut state = lock(&self.state);
            state.start = start;
            state.last_at = start;
            state.last = totals(&self.counters);
        }
        let series = self.clone();
        let task = tokio::spawn(async move {
            let mut ticks =
                tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
            // A late tick makes one longer interval, not a burst of empty ones.
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                let now = ticks.tick().await;
                series.sample(now, series.progress);
            }
        });
        Sampler {
            series: self.clone(),
            task,
        }
    }

    /// Takes the sample of the interval ending `now`, and shows it on
    /// the progress line if `show`.
    fn sample(&self, now: Instant, show: bool) {
        let current = totals(&self.counters);
        let (p50_us, p99_us) = {
            let mut l = self.counters.latency();
            let p = if l.interval.is_empty() {
                (None, None)
            } else {
                (
                    Some(l.interval.value_at_quantile(0.5)),
                    Some(l.interval.value_at_quantile(0.99)),
                )
            };
            l.interval.reset();
            p
        };
        let mut state = lock(&self.state);
        let sample = Sample {
            second: now.duration_since(state.start).as_secs_f64(),
            sent: current.0.saturating_sub(state.last.0),
            confirmed: current.1.saturating_sub(state.last.1),
            received: current.2.saturating_sub(state.last.2),
            p50_us,
            p99_us,
        };
        let seconds = now.duration_since(state.last_at).as_secs_f64().max(1e-3);
        state.last = current;
        state.last_at = now;
        state.samples.push(sample);
        if let Some(csv) = &mut state.csv {
            let written = writeln!(csv, "{}", sample.csv()).and_then(|()| csv.flush());
            if let Err(e) = written {
                state.csv = None;
                state.csv_error = Some(e);
            }
        }
        if show {
            progress_line(state.label, &sample, seconds, current);
        }
    }
}

/// The running sampler of a [`Series`].
pub(super) struct Sampler {
    series: Arc<Series>,
    task: JoinHandle<()>,
}

impl Sampler {
    /// Stops sampling, takes the last (part-second) sample, and returns
    /// the series. A failed CSV write is said here, on stderr.
    pub(super) async fn finish(self) -> Vec<Sample> {
        self.task.abort();
        // Wait until it is really gone, so no tick lands after the last
        // sample.
        let _ = self.task.await;
        let now = Instant::now();
        // Not on the progress line: a part-second's rate would be a guess,
        // and the report follows.
        // Whatever came since the last tick is sampled, however short the
        // part-second, so that the series adds up to the totals.
        let moved = {
            let state = lock(&self.series.state);
            totals(&self.series.counters) != state.last
                || now.duration_since(state.last_at) >= Duration::from_millis(10)
        };
        if moved {
            self.series.sample(now, false);
        }
        if self.series.progress && std::io::stderr().is_terminal() {
            // End the rewritten progress line.
            eprintln!();
        }
        let mut state = lock(&self.series.state);
        if let Some(e) = state.csv_error.take() {
            eprintln!("carehare: writing the CSV file failed: {e}");
        }
        state.samples.clone()
    }
}

fn totals(counters: &Counters) -> (u64, u64, u64) {
    (
        Counters::get(&counters.sent),
        Counters::get(&counters.confirmed),
        Counters::get(&counters.consumed),
    )
}

/// The progress line on stderr: rewritten in place on a terminal, a line
/// per second otherwise. Best effort: a closed stderr must not end the
/// run.
fn progress_line(label: &str, s: &Sample, seconds: f64, totals: (u64, u64, u64)) {
    let rate = |n: u64| thousands((n as f64 / seconds).round() as u64);
    let latency = match (s.p50_us, s.p99_us) {
        (Some(p50), Some(p99)) => format!("  latency p50 {} p99 {}", millis(p50), millis(p99)),
        _ => String::new(),
    };
    let line = format!(
        "[{label} {:>4.0}s] sent {}/s  confirmed {}/s  received {}/s  (total: {} confirmed, {} received){latency}",
        s.second,
        rate(s.sent),
        rate(s.confirmed),
        rate(s.received),
        thousands(totals.1),
        thousands(totals.2),
    );
    let mut err = std::io::stderr().lock();
    let _ = if err.is_terminal() {
        write!(err, "\r\x1b[K{line}")
    } else {
        writeln!(err, "{line}")
    };
    let _ = err.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_as_json_and_csv() {
        let s = Sample {
            second: 2.0,
            sent: 1000,
            confirmed: 990,
            received: 985,
            p50_us: Some(28_543),
            p99_us: Some(640),
        };
        assert_eq!(
            s.json(),
            json!({"second": 2.0, "sent": 1000, "confirmed": 990, "received": 985,
                   "latency_p50_ms": 28.543, "latency_p99_ms": 0.64})
        );
        assert_eq!(s.csv(), "2.000,1000,990,985,28.543,0.640");
        let none = Sample {
            p50_us: None,
            p99_us: None,
            ..s
        };
        assert_eq!(none.csv(), "2.000,1000,990,985,,");
        assert!(none.json()["latency_p50_ms"].is_null());
    }

    #[tokio::test(start_paused = true)]
    async fn counts_per_interval_add_up() {
        let counters = Arc::new(Counters::new());
        let series = Series::new(counters.clone(), None, false).unwrap();
        let sampler = series.spawn();
        for _ in 0..3 {
            counters
                .sent
                .fetch_add(10, std::sync::atomic::Ordering::Relaxed);
            counters.latency().record(1500);
            tokio::time::sleep(Duration::from_millis(1000)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let samples = sampler.finish().await;
        let sent: u64 = samples.iter().map(|s| s.sent).sum();
        assert_eq!(sent, 30);
        assert_eq!(samples.len(), 4, "{samples:?}");
        assert_eq!(samples[0].second, 1.0);
        assert_eq!(samples[0].p50_us, Some(1500));
        assert!((samples[3].second - 3.3).abs() < 0.01, "{samples:?}");
    }
}
