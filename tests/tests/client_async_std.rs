//! The client scenarios on async-std.

carehare_tests::scenarios!(
    async_std::task::block_on,
    std::sync::Arc::new(carehare_async_std::AsyncStd)
);
