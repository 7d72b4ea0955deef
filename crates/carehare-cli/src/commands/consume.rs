//! `carehare consume`: print deliveries as they come (or hand each to a
//! command), settling each after. It runs on a recovering connection, so a
//! broker restart or a dropped link costs a reconnect, not the command.

use std::time::Duration;

use carehare_tokio::{
    Connection, ConsumerOptions, Error, QueueOptions, RecoveringConsumer, RecoveryEvent,
    RecoveryEvents,
};
use clap::Args;
use futures_util::StreamExt;

use crate::commands::exec::{self, OnFailure};
use crate::common::ConnArgs;
use crate::error::CliError;
use crate::fields::{self, Untyped};
use crate::output::{Format, write_message};

/// Consumes a queue and prints each message (body, or a JSON line with
/// `--format json`). Each message is acked after it is printed, unless
/// --requeue or --reject. With --exchange, it consumes what that exchange
/// routes to a temporary queue of its own, as amqp-consume does. With
/// --exec, each message goes to a command instead of being printed.
/// Ctrl-C stops cleanly (unsettled messages are requeued). A lost
/// connection is replaced and consuming goes on (a message whose ack was
/// lost with it comes again, flagged redelivered).
#[derive(Args, Debug)]
pub(crate) struct ConsumeArgs {
    /// The queue (not with --exchange).
    #[arg(required_unless_present = "exchange", conflicts_with = "exchange")]
    pub queue: Option<String>,
    /// Consume from this exchange instead: through a queue declared for
    /// the run (server-named, exclusive: gone when carehare stops), bound
    /// with each --binding-key. After a reconnect the queue is a new one,
    /// bound again; what the exchange routed meanwhile is not in it.
    #[arg(long, short = 'e', value_name = "EXCHANGE")]
    pub exchange: Option<String>,
    /// Binding key for --exchange (repeatable; default: the empty key, all
    /// a fanout or headers exchange needs; `#` takes all of a topic
    /// exchange).
    #[arg(long, short = 'k', alias = "routing-key", value_name = "KEY")]
    pub binding_key: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Raw)]
    pub format: Format,
    /// Stop after this many messages settled (acked, or nacked with
    /// --requeue / --reject, or by --exec's outcome).
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
    /// Run CMD (with `sh -c`) for each message, one at a time, instead of
    /// printing it: the body on its standard input; CAREHARE_EXCHANGE,
    /// CAREHARE_ROUTING_KEY, CAREHARE_REDELIVERED and CAREHARE_PROPERTIES
    /// (JSON) in its environment. Exit status 0 acks the message; any
    /// other outcome is --on-failure's.
    #[arg(long, value_name = "CMD", conflicts_with_all = ["requeue", "reject", "format"])]
    pub exec: Option<String>,
    /// What a failed --exec command does to its message. amqp-consume
    /// leaves it unacked until it exits (so it comes back then, but a
    /// consumer with enough failures stalls); `stop` gives it back at once
    /// and ends with exit code 8.
    #[arg(long, value_enum, value_name = "WHAT", default_value_t = OnFailure::Stop)]
    pub on_failure: OnFailure,
}

/// Runs `consume`.
pub(crate) async fn run(conn: &ConnArgs, args: ConsumeArgs) -> Result<(), CliError> {
    // Checked here: clap lets `requires` go when the queue, which
    // conflicts with --exchange, is given.
    if !args.binding_key.is_empty() && args.exchange.is_none() {
        return Err(CliError::usage("--binding-key needs --exchange"));
    }
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
    // The queue's name is the topology `setup` returns: fixed, or the one
    // the server gave the temporary queue on this connection.
    let exchange = args.exchange.clone();
    let fixed = args.queue.clone().unwrap_or_default();
    let keys = if args.binding_key.is_empty() {
        vec![String::new()]
    } else {
        args.binding_key.clone()
    };
    let setup = move |c: Connection| -> carehare_tokio::BoxFuture<'static, Result<String, Error>> {
        let (exchange, fixed, keys) = (exchange.clone(), fixed.clone(), keys.clone());
        Box::pin(async move {
            match exchange {
                Some(exchange) => temporary_queue(&c, &exchange, &keys).await,
                None => Ok(fixed),
            }
        })
    };
    let connection = conn
        .connect_recovering_with("carehare consume", setup)
        .await?;
    let events = tokio::spawn(say_recovery(connection.events()));
    let consumer = connection.consumer(String::clone, options);
    let outcome = consume(&consumer, &args).await;
    consumer.close().await;
    events.abort();
    // A clean close, so RabbitMQ logs no "connection closed abruptly";
    // the command's own outcome wins over a failed close.
    let closed = connection.close().await;
    outcome?;
    closed.map_err(CliError::from)
}

/// Declares a server-named exclusive queue bound to `exchange` with each
/// of `keys`, says its name on stderr (as amqp-consume does), and returns
/// it.
async fn temporary_queue(
    connection: &Connection,
    exchange: &str,
    keys: &[String],
) -> Result<String, Error> {
    let ok = connection
        .queue_declare("", QueueOptions::exclusive())
        .await?;
    let queue = ok.queue.to_string();
    for key in keys {
        connection
            .queue_bind(&queue, exchange, key, Default::default())
            .await?;
    }
    eprintln!("carehare: consuming {queue}, bound to exchange {exchange} with keys {keys:?}");
    Ok(queue)
}

/// Prints (or runs --exec on), settles and counts messages until done.
async fn consume<T>(consumer: &RecoveringConsumer<T>, args: &ConsumeArgs) -> Result<(), CliError>
where
    T: Clone + Send + Sync + 'static,
{
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
        let settled = if let Some(command) = &args.exec {
            let status = exec::run(command, &message).await?;
            if status.success() {
                consumer.ack(message.tag)
            } else {
                let failed = format!("`{command}` {}", exec::describe(status));
                match args.on_failure {
                    OnFailure::Stop => {
                        consumer.nack(message.tag, true);
                        return Err(CliError::ExecFailed(format!(
                            "{failed}; the message went back to the queue"
                        )));
                    }
                    OnFailure::Requeue => {
                        eprintln!("carehare: {failed}; the message went back to the queue");
                        consumer.nack(message.tag, true)
                    }
                    OnFailure::Reject => {
                        eprintln!("carehare: {failed}; the message was rejected");
                        consumer.nack(message.tag, false)
                    }
                }
            }
        } else {
            write_message(&mut stdout, args.format, &message, None)?;
            if args.requeue {
                consumer.nack(message.tag, true)
            } else if args.reject {
                consumer.nack(message.tag, false)
            } else {
                consumer.ack(message.tag)
            }
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
        | Error::TlsVerification { .. }
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
