//! `carehare consume`: print deliveries as they come, settling each after
//! it is printed.

use std::time::Duration;

use carehare_tokio::{Connection, ConsumerOptions};
use clap::Args;

use crate::error::CliError;
use crate::fields::{self, Untyped};
use crate::output::{Format, write_message};

/// Consumes a queue and prints each message (body, or a JSON line with
/// `--format json`). Each message is acked after it is printed, unless
/// --requeue or --reject. Ctrl-C stops cleanly (unsettled messages are
/// requeued).
#[derive(Args, Debug)]
pub(crate) struct ConsumeArgs {
    /// The queue.
    pub queue: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Raw)]
    pub format: Format,
    /// Stop after this many messages.
    #[arg(long, short = 'n')]
    pub count: Option<u64>,
    /// Unacked messages RabbitMQ may send ahead (capped by --count).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..))]
    pub prefetch: u16,
    /// Nack with requeue instead of acking (the messages stay in the queue).
    #[arg(long, conflicts_with = "reject")]
    pub requeue: bool,
    /// Nack without requeue instead of acking (dropped or dead-lettered).
    #[arg(long)]
    pub reject: bool,
    /// Stop after this long; with --count, fewer messages by then is exit
    /// code 6.
    #[arg(long, value_name = "DURATION", value_parser = fields::duration)]
    pub timeout: Option<Duration>,
    /// Be the queue's only consumer.
    #[arg(long)]
    pub exclusive: bool,
    /// Consumer argument `key=value`, e.g. x-stream-offset=first
    /// (numbers and booleans are inferred; `key:str=value` forces a string).
    #[arg(long = "arg", value_name = "KEY=VALUE")]
    pub arguments: Vec<String>,
}

/// Runs `consume`.
pub(crate) async fn run(connection: &Connection, args: ConsumeArgs) -> Result<(), CliError> {
    let arguments = fields::table(&args.arguments, Untyped::Infer)?;
    let prefetch = match args.count {
        Some(n) => args
            .prefetch
            .min(u16::try_from(n).unwrap_or(u16::MAX).max(1)),
        None => args.prefetch,
    };
    let options = ConsumerOptions {
        prefetch_count: prefetch,
        exclusive: args.exclusive,
        arguments,
        ..Default::default()
    };
    let consumer = connection.consumer(&args.queue, options).await?;
    let deadline = args.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut seen = 0u64;
    let mut stdout = std::io::stdout().lock();
    let outcome = loop {
        if args.count.is_some_and(|n| seen >= n) {
            break Ok(());
        }
        let next = async {
            match deadline {
                Some(d) => tokio::time::timeout_at(d, consumer.next()).await.ok(),
                None => Some(consumer.next().await),
            }
        };
        let message = tokio::select! {
            m = next => m,
            _ = tokio::signal::ctrl_c() => break Ok(()),
        };
        let message = match message {
            Some(Ok(m)) => m,
            Some(Err(e)) => break Err(e.into()),
            None => {
                break match (args.count, args.timeout) {
                    (Some(n), Some(timeout)) => Err(CliError::Timeout {
                        what: format!("only {seen} of {n} messages arrived"),
                        timeout,
                    }),
                    _ => Ok(()),
                };
            }
        };
        if let Err(e) = write_message(&mut stdout, args.format, &message, None) {
            break Err(e);
        }
        if args.requeue {
            consumer.nack(message.delivery_tag, true);
        } else if args.reject {
            consumer.nack(message.delivery_tag, false);
        } else {
            consumer.ack(message.delivery_tag);
        }
        seen += 1;
    };
    consumer.close().await;
    outcome
}
