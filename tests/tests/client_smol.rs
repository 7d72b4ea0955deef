//! The client scenarios on smol. The driver runs on smol's global executor
//! (its own thread), so it progresses while `smol::block_on` waits.

carehare_tests::scenarios!(smol::block_on, std::sync::Arc::new(carehare_smol::Smol));
