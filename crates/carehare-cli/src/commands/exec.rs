//! `consume --exec`: one command per message, the body on its standard
//! input, settled by its exit status.

use std::process::{ExitStatus, Stdio};

use carehare_tokio::Message;
use clap::ValueEnum;
use tokio::io::AsyncWriteExt;

use crate::error::CliError;
use crate::output::properties_json;

/// What happens to a message whose command fails (exits non-zero or is
/// killed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OnFailure {
    /// Put the message back (nack with requeue) and stop, with exit code
    /// 8: nothing is lost and nothing loops.
    Stop,
    /// Put the message back and go on: RabbitMQ delivers it again, at
    /// once (a command that always fails on it loops).
    Requeue,
    /// Reject it without requeue and go on: it is dropped, or
    /// dead-lettered if the queue has a dead-letter exchange.
    Reject,
}

/// Runs `sh -c command` with the message's body on its standard input
/// and its envelope in the environment (`CAREHARE_EXCHANGE`,
/// `CAREHARE_ROUTING_KEY`, `CAREHARE_REDELIVERED`, and
/// `CAREHARE_PROPERTIES`, the properties as a JSON object). Its standard
/// output and error are carehare's. Returns how it ended.
pub(crate) async fn run(command: &str, message: &Message) -> Result<ExitStatus, CliError> {
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .env("CAREHARE_EXCHANGE", message.exchange.as_str())
        .env("CAREHARE_ROUTING_KEY", message.routing_key.as_str())
        .env("CAREHARE_REDELIVERED", message.redelivered.to_string())
        .env(
            "CAREHARE_PROPERTIES",
            properties_json(&message.properties).to_string(),
        )
        .stdin(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(CliError::io(format!("starting `sh -c {command}`")))?;
    let stdin = child.stdin.take();
    let body = message.body.clone();
    // Written while the command runs, so a large body can't block both; a
    // command that exits without reading it is not an error.
    let write = async move {
        if let Some(mut stdin) = stdin {
            let _ = stdin.write_all(&body).await;
        }
    };
    let (status, ()) = tokio::join!(child.wait(), write);
    status.map_err(CliError::io(format!("waiting for `{command}`")))
}

/// How a failed command's status reads: `exit status 3`, `signal 9`.
pub(crate) fn describe(status: ExitStatus) -> String {
    match status.code() {
        Some(code) => format!("exited with status {code}"),
        None => {
            use std::os::unix::process::ExitStatusExt;
            match status.signal() {
                Some(signal) => format!("was killed by signal {signal}"),
                None => "failed".into(),
            }
        }
    }
}
