//! The hostile server (`carehare_tests::hostile`): every case on every
//! runtime, each in a process of its own (the `hostile` binary), so that
//! the peak RSS it reports is that case's alone. Each case asserts its
//! typed outcome and time bound itself; here the peak RSS is held to a
//! generous bound (the body that must be buffered is 128 MiB; anything
//! else stays small), so the test is not flaky on a busy machine.
//!
//! `cargo test -p carehare-tests --test hostile -- --nocapture --test-threads 1`
//! prints the table `docs/reliability.md` quotes.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use carehare_tests::hostile::Report;
use carehare_tests::runtimes::RUNTIMES;

/// A child that takes longer than this is killed and the test fails.
const CHILD_LIMIT: Duration = Duration::from_secs(180);

/// Runs `case` on `runtime` in a child process and returns its report.
fn run_child(case: &str, runtime: &str) -> Report {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hostile"))
        .args([case, runtime])
        .stdout(Stdio::piped())
        .spawn()
        .expect("the hostile binary starts");
    let deadline = Instant::now() + CHILD_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{case} on {runtime}: still running after {CHILD_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        stdout.read_to_string(&mut out).expect("the child's output");
    }
    assert!(
        status.success(),
        "{case} on {runtime} failed ({status}): {out}"
    );
    Report::parse(&out).unwrap_or_else(|| panic!("no report from {case} on {runtime}: {out}"))
}

/// Runs `case` on every runtime; each peak RSS must stay under `max_mib`.
fn check(case: &str, max_mib: u64) {
    for runtime in RUNTIMES {
        let r = run_child(case, runtime);
        let mib = r.peak_rss_kib as f64 / 1024.0;
        println!(
            "| `{}` | {} | {} | {:.0} ms | {mib:.1} MiB |",
            r.case,
            r.runtime,
            r.what,
            r.took.as_secs_f64() * 1000.0
        );
        assert!(
            r.peak_rss_kib < max_mib * 1024,
            "{case} on {runtime}: peak RSS {mib:.1} MiB, bound {max_mib} MiB"
        );
    }
}

/// One test per case, with its peak RSS bound in MiB.
macro_rules! cases {
    ($($case:ident: $max_mib:expr),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                check(stringify!($case), $max_mib);
            }
        )*
        #[test]
        fn every_case_has_a_test() {
            let tested = [$(stringify!($case)),*];
            assert_eq!(tested, carehare_tests::hostile::CASES);
        }
    };
}

cases! {
    unknown_channel_frames: 64,
    body_size_2_pow_63: 64,
    // The one body that must be buffered, 128 MiB.
    body_of_max_body_size: 400,
    // The same 128 MiB streamed after a refused header: never buffered.
    body_one_byte_over_max_body_size: 64,
    channel_close_storm: 64,
    deliver_without_consume: 64,
    blocked_never_lifted: 64,
    handshake_without_tune: 64,
}
