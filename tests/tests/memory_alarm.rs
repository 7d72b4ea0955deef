//! The memory-alarm scenario, alone in its own test binary: an alarm blocks
//! every publisher on the broker, so it must not overlap other scenarios.
//! One test runs it on each runtime in turn.

use std::time::Duration;

use carehare_tests::publish::memory_alarm_blocks_then_unblocks_publishes as scenario;
use carehare_tests::runtimes::{RUNTIMES, block_on};
use carehare_tests::scenarios::within;

#[test]
fn memory_alarm_blocks_then_unblocks_publishes_on_every_runtime() {
    let limit = Duration::from_secs(90);
    for runtime in RUNTIMES {
        block_on(runtime, |rt| async move {
            within(&rt, limit, scenario(rt.clone())).await
        });
    }
}
