//! carehare-core (contract to be written)
pub mod error;
pub mod frame;
pub mod method;
pub mod properties;
pub mod table;
pub mod types;
mod wire;
