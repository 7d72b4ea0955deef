//! The demo on async-std (discontinued upstream; prefer smol).
fn main() -> Result<(), carehare_async_std::Error> {
    let url = carehare_examples::url();
    async_std::task::block_on(carehare_examples::run(
        "async-std",
        carehare_async_std::connect(&url),
    ))
}
