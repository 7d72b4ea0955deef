//! The three runtimes the suite runs on, picked by name at run time (the
//! `hostile` binary, the tests that run one scenario on each in turn).

use std::future::Future;
use std::sync::Arc;

use carehare_client::Runtime;

/// Every runtime, by the name [`block_on`] takes.
pub const RUNTIMES: [&str; 3] = ["tokio", "smol", "async-std"];

/// Runs `scenario` to completion on a fresh instance of the runtime called
/// `name` (one of [`RUNTIMES`]). Panics on any other name.
pub fn block_on<T, F>(name: &str, scenario: impl FnOnce(Arc<dyn Runtime>) -> F) -> T
where
    F: Future<Output = T>,
{
    match name {
        "tokio" => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime")
            .block_on(async { scenario(Arc::new(carehare_tokio::Tokio::current())).await }),
        // The driver runs on smol's global executor (its own thread), so it
        // progresses while `block_on` waits.
        "smol" => smol::block_on(scenario(Arc::new(carehare_smol::Smol))),
        "async-std" => async_std::task::block_on(scenario(Arc::new(carehare_async_std::AsyncStd))),
        other => panic!("no runtime {other:?}; the runtimes are {RUNTIMES:?}"),
    }
}
