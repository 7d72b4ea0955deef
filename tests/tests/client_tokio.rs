//! The client scenarios on tokio.

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

carehare_tests::scenarios!(
    block_on,
    std::sync::Arc::new(carehare_tokio::Tokio::current())
);
