//! `carehare get`: fetch one message, and by default put it back.

use carehare_tokio::Connection;
use clap::Args;

use crate::error::CliError;
use crate::output::{Format, write_message};

/// Fetches one message (`basic.get`) and prints it. By default the
/// message goes back to the queue (rejected with requeue), so looking does
/// not consume, as `rabbitmqadmin get` and the management UI do: it comes
/// back flagged `redelivered`. --ack consumes it; --reject drops it (or
/// dead-letters it). An empty queue is exit code 7. With `--format json`
/// the line also has `message_count`, the messages left besides this one.
#[derive(Args, Debug)]
pub(crate) struct GetArgs {
    /// The queue.
    pub queue: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Raw)]
    pub format: Format,
    /// Ack the message: it leaves the queue.
    #[arg(long, conflicts_with_all = ["requeue", "reject"])]
    pub ack: bool,
    /// Put the message back (the default; kept for scripts that say it).
    #[arg(long, conflicts_with = "reject")]
    pub requeue: bool,
    /// Reject without requeue: dropped, or dead-lettered if the queue has
    /// a dead-letter exchange.
    #[arg(long)]
    pub reject: bool,
}

/// Runs `get`.
pub(crate) async fn run(connection: &Connection, args: GetArgs) -> Result<(), CliError> {
    let Some(message) = connection.get(&args.queue).await? else {
        return Err(CliError::Empty);
    };
    let printed = write_message(
        &mut std::io::stdout().lock(),
        args.format,
        message.message(),
        Some(message.message_count()),
    );
    if printed.is_err() || !(args.ack || args.reject) {
        // Only looked at, or not shown: it goes back.
        message.reject(true);
    } else if args.reject {
        message.reject(false);
    } else {
        message.ack();
    }
    printed
}
