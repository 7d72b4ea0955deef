//! `carehare consume`: print deliveries as they come, settling each after
//! it is printed. It runs on a recovering connection, so a broker restart
//! or a dropped link costs a reconnect, not the command.

use std::time::Duration;

use carehare_tokio::{ConsumerOptions, Error, RecoveringConsumer, RecoveryEvent, RecoveryEvents};
use clap::Args;
use futures_util::StreamExt;

use crate::common::ConnArgs;
use crate::error::CliError;
use crate::fields::{self, Untyped};
use crate::output::{Format, write_message};

/// Consumes a queue and prints each message (body, or a JSON line with
/// `--format json`). Each message is acked after it is printed, unless
/// --requeue or --reject. Ctrl-C stops cleanly (unsettled messages are
/// requeued). A lost connection is replaced and consuming goes on (a
/// message whose ack was lost with it comes again, flagged redelivered).
#[derive(Args, Debug)]
pub(crate) struct ConsumeArgs {
    /// The queue.
    pub queue: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Raw)]
    pub format: Format,
    /// Stop after this many messages settled (acked, or nacked with
    /// --requeue / --reject).
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
pub(crate) async fn run(conn: &ConnArgs, args: ConsumeArgs) -> Result<(), CliError> {
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
    let connection = conn.connect_recovering("carehare consume").await?;
    let events = tokio::spawn(say_recovery(connection.events()));
    let queue = args.queue.clone();
    let consumer = connection.consumer(move |_| queue.clone(), options);
    let outcome = consume(&consumer, &args).await;
    consumer.close().await;
    events.abort();
    // A clean close, so RabbitMQ logs no "connection closed abruptly";
    // the command's own outcome wins over a failed close.
    let closed = connection.close().await;
    outcome?;
    closed.map_err(CliError::from)
}

/// Prints, settles and counts messages until done.
async fn consume(consumer: &RecoveringConsumer<()>, args: &ConsumeArgs) -> Result<(), CliError> {
    let deadline = args.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut seen = 0u64;
    let mut stdout = std::io::stdout().lock();
    loop {
        if args.count.is_some_and(|n| seen >= n) {
            return Ok(());
        }
        let next = async {
            match deadline {
                Some(d) => tokio::time::timeout_at(d, consumer.next()).await.ok(),
                None => Some(consumer.next().await),
            }
        };
        let message = tokio::select! {
            m = next => m,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let message = match message {
            Some(Ok(m)) => m,
            Some(Err(e)) => return Err(ended(e)),
            None => {
                return match (args.count, args.timeout) {
                    (Some(n), Some(timeout)) => Err(CliError::Timeout {
                        what: format!("only {seen} of {n} messages arrived"),
                        timeout,
                    }),
                    _ => Ok(()),
                };
            }
        };
        write_message(&mut stdout, args.format, &message, None)?;
        let settled = if args.requeue {
            consumer.nack(message.tag, true)
        } else if args.reject {
            consumer.nack(message.tag, false)
        } else {
            consumer.ack(message.tag)
        };
        // Not settled: its connection is gone, and RabbitMQ delivers it
        // again, when it counts.
        if settled {
            seen += 1;
        }
    }
}

/// The error that ended the consumer. A connection error here means
/// recovery gave up (a reconnect was refused: a password or a vhost that
/// is no longer valid), which is a failure to connect.
fn ended(e: Error) -> CliError {
    match e {
        Error::ConnectionClosed(_)
        | Error::AllAddressesFailed { .. }
        | Error::Connect { .. }
        | Error::ConnectTimeout { .. }
        | Error::Tls(_)
        | Error::Url(_) => CliError::Connect(e),
        other => CliError::Amqp(other),
    }
}

/// Says on stderr when the connection is lost and when it is back.
pub(crate) async fn say_recovery(mut events: RecoveryEvents) {
    let mut address = None;
    while let Some(event) = events.next().await {
        match event {
            RecoveryEvent::Disconnected { cause } => {
                eprintln!("carehare: connection lost ({cause}); reconnecting");
            }
            RecoveryEvent::Connected { address: a } => address = Some(a),
            RecoveryEvent::Recovered { downtime } => match address.take() {
                Some(a) => eprintln!("carehare: reconnected to {a} after {downtime:.1?}"),
                None => eprintln!("carehare: reconnected after {downtime:.1?}"),
            },
            _ => {}
        }
    }
}
