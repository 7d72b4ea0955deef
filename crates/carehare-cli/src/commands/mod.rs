//! One module per command (perf has its own, `crate::perf`).

pub(crate) mod admin;
pub(crate) mod consume;
pub(crate) mod exec;
pub(crate) mod get;
pub(crate) mod list;
pub(crate) mod publish;
pub(crate) mod rpc;
pub(crate) mod shell;
