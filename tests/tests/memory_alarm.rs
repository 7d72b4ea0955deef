//! The memory-alarm scenario, alone in its own test binary: an alarm blocks
//! every publisher on the broker, so it must not overlap other scenarios.
//! One test runs it on each runtime in turn.

use std::sync::Arc;
use std::time::Duration;

use carehare_tests::publish::memory_alarm_blocks_then_unblocks_publishes as scenario;
use carehare_tests::scenarios::within;

#[test]
fn memory_alarm_blocks_then_unblocks_publishes_on_every_runtime() {
    let limit = Duration::from_secs(90);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(async {
            let rt: Arc<dyn carehare_client::Runtime> = Arc::new(carehare_tokio::Tokio::current());
            within(&rt, limit, scenario(rt.clone())).await
        });
    smol::block_on(async {
        let rt: Arc<dyn carehare_client::Runtime> = Arc::new(carehare_smol::Smol);
        within(&rt, limit, scenario(rt.clone())).await
    });
    async_std::task::block_on(async {
        let rt: Arc<dyn carehare_client::Runtime> = Arc::new(carehare_async_std::AsyncStd);
        within(&rt, limit, scenario(rt.clone())).await
    });
}
