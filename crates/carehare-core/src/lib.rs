//! carehare-core (contract to be written)
mod channel;
mod connection;
pub mod error;
pub mod event;
pub mod frame;
mod heartbeat;
pub mod method;
pub mod properties;
pub mod table;
pub mod types;
mod wire;

pub use connection::{Auth, Connection, ConnectionConfig};
pub use event::{ContentMethod, Delivery, Event, Reply, Tuning};
