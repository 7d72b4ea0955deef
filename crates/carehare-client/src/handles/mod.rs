//! What users hold. Each handle reaches the shared state only through
//! [`Inner`](crate::state::Inner)'s methods, under one short lock per call,
//! and wakes the driver when it queued bytes.

pub(crate) mod blocking;
pub(crate) mod confirmation;
pub(crate) mod connection;
pub(crate) mod consumer;
pub(crate) mod get;
pub(crate) mod publisher;
pub(crate) mod rpc;
pub(crate) mod unconfirmed;
mod wait;
