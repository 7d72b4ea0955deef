//! The demo on smol.
fn main() -> Result<(), carehare_smol::Error> {
    let url = carehare_examples::url();
    smol::block_on(carehare_examples::run("smol", carehare_smol::connect(&url)))
}
