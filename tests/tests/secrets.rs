//! Passwords never reach a log line (at any level, TRACE included), a
//! `Debug` or `Display` text or an error, across a whole session on each
//! runtime (`carehare_tests::secrets::a_session_with_a_password`); and the
//! EXTERNAL mechanism never sends one. A binary of its own: its log
//! capture is the process's global subscriber, which sees every thread
//! (the runtimes' drivers run on their own).

use std::sync::OnceLock;

use carehare_tests::log_capture::Captured;
use carehare_tests::runtimes::{RUNTIMES, block_on};
use carehare_tests::secrets::{self, PASSWORD, WRONG_PASSWORD};

/// Installs the capture of every thread's logs, at every level, once, as
/// the global subscriber.
fn capture() -> &'static Captured {
    static CAPTURED: OnceLock<Captured> = OnceLock::new();
    CAPTURED.get_or_init(|| {
        let captured = Captured::default();
        let subscriber = captured.subscriber(tracing::Level::TRACE);
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
        captured
    })
}

#[test]
fn passwords_never_reach_logs_debug_display_or_errors() {
    capture();
    let mut seen = Vec::new();
    for runtime in RUNTIMES {
        seen.extend(block_on(runtime, secrets::a_session_with_a_password));
    }
    let logs = capture().text();
    // The capture saw the session: the refusal, the reset and the recovery,
    // down to DEBUG (nothing logs at TRACE, which the capture takes too).
    for expected in [
        "ACCESS_REFUSED",
        "name=\"secrets\"",
        "connection lost; recovering",
        "recovered",
        "DEBUG",
    ] {
        assert!(logs.contains(expected), "no {expected:?} in the logs");
    }
    for text in seen.iter().chain([&logs]) {
        for secret in [PASSWORD, WRONG_PASSWORD] {
            assert!(!text.contains(secret), "a password in: {text}");
        }
        assert!(!text.contains("carehare:"), "credentials in: {text}");
    }
    println!(
        "{} lines logged, {} texts checked: no password",
        logs.lines().count(),
        seen.len()
    );
}

#[test]
fn the_external_mechanism_never_sends_a_password() {
    capture();
    for runtime in RUNTIMES {
        block_on(runtime, secrets::external_never_sends_the_password);
    }
}
