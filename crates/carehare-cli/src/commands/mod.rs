//! One module per command (perf has its own, `crate::perf`).

pub(crate) mod admin;
pub(crate) mod consume;
pub(crate) mod get;
pub(crate) mod publish;
pub(crate) mod rpc;
