//! `carehare get`: fetch one message.

use carehare_tokio::Connection;
use clap::Args;

use crate::error::CliError;
use crate::output::{Format, write_message};

/// Fetches one message (`basic.get`) and prints it; acks it unless
/// --requeue or --reject. An empty queue is exit code 7. With
/// `--format json` the line also has `message_count`, the messages left.
#[derive(Args, Debug)]
pub(crate) struct GetArgs {
    /// The queue.
    pub queue: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Raw)]
    pub format: Format,
    /// Put the message back (nack with requeue) instead of acking it.
    #[arg(long, conflicts_with = "reject")]
    pub requeue: bool,
    /// Nack without requeue (dropped or dead-lettered) instead of acking.
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
    if printed.is_err() || args.requeue {
        // Not shown, or not wanted: it goes back.
        message.nack(true);
    } else if args.reject {
        message.nack(false);
    } else {
        message.ack();
    }
    printed
}
