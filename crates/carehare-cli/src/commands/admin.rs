//! `declare`, `delete`, `bind`, `unbind` and `purge`.

use carehare_tokio::carehare_core::types::LongString;
use carehare_tokio::{AMQPValue, Connection, ExchangeOptions, QueueOptions};
use clap::{Args, Subcommand, ValueEnum};

use crate::error::CliError;
use crate::fields::{self, Untyped};

/// RabbitMQ's queue types (`x-queue-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum QueueType {
    /// Classic queue.
    Classic,
    /// Quorum queue (replicated; must be durable).
    Quorum,
    /// Stream (must be durable; consumers need x-stream-offset to read old
    /// messages).
    Stream,
}

impl QueueType {
    /// The `x-queue-type` value.
    pub(crate) fn name(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
            QueueType::Stream => "stream",
        }
    }
}

/// What to declare.
#[derive(Subcommand, Debug)]
pub(crate) enum Declare {
    /// Declares a queue; prints `queue NAME messages=N consumers=N`
    /// (NAME is the server's choice for an empty name).
    Queue {
        /// The name (empty: RabbitMQ picks one).
        #[arg(default_value = "")]
        name: String,
        /// Survive a broker restart.
        #[arg(long)]
        durable: bool,
        /// Used by this connection only (pointless from a CLI, except with
        /// --passive checks).
        #[arg(long)]
        exclusive: bool,
        /// Deleted when its last consumer goes.
        #[arg(long)]
        auto_delete: bool,
        /// Only check that it exists (404, exit code 4, if not).
        #[arg(long)]
        passive: bool,
        /// Queue type: sets x-queue-type.
        #[arg(long = "type", value_enum)]
        kind: Option<QueueType>,
        /// Argument `key=value`, e.g. x-max-length=1000 (numbers and
        /// booleans are inferred; `key:str=value` forces a string).
        #[arg(long = "arg", value_name = "KEY=VALUE")]
        arguments: Vec<String>,
    },
    /// Declares an exchange.
    Exchange {
        /// The name.
        name: String,
        /// direct, fanout, topic, headers, or a plugin's type.
        #[arg(long = "type", default_value = "direct")]
        kind: String,
        /// Survive a broker restart.
        #[arg(long)]
        durable: bool,
        /// Deleted when its last binding goes.
        #[arg(long)]
        auto_delete: bool,
        /// Can only be reached through exchange-to-exchange bindings.
        #[arg(long)]
        internal: bool,
        /// Only check that it exists.
        #[arg(long)]
        passive: bool,
        /// Argument `key=value`, e.g. alternate-exchange=unrouted.
        #[arg(long = "arg", value_name = "KEY=VALUE")]
        arguments: Vec<String>,
    },
}

/// What to delete.
#[derive(Subcommand, Debug)]
pub(crate) enum Delete {
    /// Deletes a queue; prints how many messages went with it.
    Queue {
        /// The name.
        name: String,
        /// Refuse (406) if it has consumers.
        #[arg(long)]
        if_unused: bool,
        /// Refuse (406) if it has messages.
        #[arg(long)]
        if_empty: bool,
    },
    /// Deletes an exchange.
    Exchange {
        /// The name.
        name: String,
        /// Refuse (406) if it has bindings.
        #[arg(long)]
        if_unused: bool,
    },
}

/// A binding's source, routing key and arguments.
#[derive(Args, Debug)]
pub(crate) struct Binding {
    /// The source exchange.
    #[arg(long, short = 'e')]
    exchange: String,
    /// The routing key (binding key).
    #[arg(long, short = 'k', default_value = "")]
    routing_key: String,
    /// Binding argument `key=value` (headers exchanges: x-match=all...).
    #[arg(long = "arg", value_name = "KEY=VALUE")]
    arguments: Vec<String>,
}

/// What to bind (or unbind).
#[derive(Subcommand, Debug)]
pub(crate) enum Bind {
    /// Binds a queue to an exchange.
    Queue {
        /// The queue.
        name: String,
        #[command(flatten)]
        binding: Binding,
    },
    /// Binds an exchange (the destination) to another (--exchange, the
    /// source).
    Exchange {
        /// The destination exchange.
        name: String,
        #[command(flatten)]
        binding: Binding,
    },
}

/// `purge QUEUE`.
#[derive(Args, Debug)]
pub(crate) struct Purge {
    /// The queue.
    queue: String,
}

/// Runs `declare`.
pub(crate) async fn declare(connection: &Connection, what: Declare) -> Result<(), CliError> {
    match what {
        Declare::Queue {
            name,
            durable,
            exclusive,
            auto_delete,
            passive,
            kind,
            arguments,
        } => {
            let mut arguments = fields::table(&arguments, Untyped::Infer)?;
            if let Some(kind) = kind {
                arguments.insert(
                    "x-queue-type".into(),
                    AMQPValue::LongString(LongString::from(kind.name().as_bytes().to_vec())),
                );
            }
            let options = QueueOptions {
                passive,
                durable,
                exclusive,
                auto_delete,
                arguments,
            };
            let ok = connection.queue_declare(&name, options).await?;
            println!(
                "queue {} messages={} consumers={}",
                ok.queue, ok.message_count, ok.consumer_count
            );
        }
        Declare::Exchange {
            name,
            kind,
            durable,
            auto_delete,
            internal,
            passive,
            arguments,
        } => {
            let options = ExchangeOptions {
                passive,
                durable,
                auto_delete,
                internal,
                arguments: fields::table(&arguments, Untyped::Infer)?,
            };
            connection.exchange_declare(&name, &kind, options).await?;
            println!("exchange {name}");
        }
    }
    Ok(())
}

/// Runs `delete`.
pub(crate) async fn delete(connection: &Connection, what: Delete) -> Result<(), CliError> {
    match what {
        Delete::Queue {
            name,
            if_unused,
            if_empty,
        } => {
            let n = connection.queue_delete(&name, if_unused, if_empty).await?;
            println!("deleted queue {name} messages={n}");
        }
        Delete::Exchange { name, if_unused } => {
            connection.exchange_delete(&name, if_unused).await?;
            println!("deleted exchange {name}");
        }
    }
    Ok(())
}

/// Runs `bind` (`bind == true`) or `unbind`.
pub(crate) async fn bind(connection: &Connection, what: Bind, bind: bool) -> Result<(), CliError> {
    let (queue, name, b) = match what {
        Bind::Queue { name, binding } => (true, name, binding),
        Bind::Exchange { name, binding } => (false, name, binding),
    };
    let arguments = fields::table(&b.arguments, Untyped::Infer)?;
    let (e, k) = (b.exchange.as_str(), b.routing_key.as_str());
    match (queue, bind) {
        (true, true) => connection.queue_bind(&name, e, k, arguments).await?,
        (true, false) => connection.queue_unbind(&name, e, k, arguments).await?,
        (false, true) => connection.exchange_bind(&name, e, k, arguments).await?,
        (false, false) => connection.exchange_unbind(&name, e, k, arguments).await?,
    }
    let verb = if bind { "bound" } else { "unbound" };
    let kind = if queue { "queue" } else { "exchange" };
    println!("{verb} {kind} {name} exchange={e} routing_key={k}");
    Ok(())
}

/// Runs `purge`.
pub(crate) async fn purge(connection: &Connection, args: Purge) -> Result<(), CliError> {
    let n = connection.queue_purge(&args.queue).await?;
    println!("purged queue {} messages={n}", args.queue);
    Ok(())
}
