//! The demo on tokio.
fn main() -> Result<(), carehare_tokio::Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let url = carehare_examples::url();
    runtime.block_on(carehare_examples::run(
        "tokio",
        carehare_tokio::connect(&url),
    ))
}
