//! Runs one hostile-server case (`carehare_tests::hostile`) on one runtime,
//! alone in this process, and prints one line: the case, the runtime, the
//! time to its outcome, the process's peak RSS and the outcome.
//!
//! ```sh
//! cargo run -p carehare-tests --bin hostile -- <case> [tokio|smol|async-std]
//! ```
//!
//! `tests/hostile.rs` runs every case this way on every runtime.

use carehare_tests::hostile::{self, Report};
use carehare_tests::runtimes;

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(case) = args.next() else {
        eprintln!(
            "usage: hostile <case> [tokio|smol|async-std]; cases: {:?}",
            hostile::CASES
        );
        std::process::exit(2);
    };
    let runtime = args.next().unwrap_or_else(|| "tokio".into());
    let outcome = runtimes::block_on(&runtime, |rt| hostile::run(&case, rt));
    let report = Report {
        case,
        runtime,
        took: outcome.took,
        peak_rss_kib: hostile::peak_rss_kib(),
        what: outcome.what,
    };
    println!("{}", report.line());
}
