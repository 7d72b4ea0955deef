//! One module per command (perf has its own, `crate::perf`).

pub mod admin;
pub mod consume;
pub mod get;
pub mod publish;
pub mod rpc;
