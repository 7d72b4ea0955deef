//! `carehare rpc call`: a request over direct reply-to, and its reply.

use std::time::Duration;

use carehare_tokio::Connection;
use clap::{Args, Subcommand};

use crate::common::{BodyArgs, PropsArgs};
use crate::error::CliError;
use crate::fields;
use crate::output::{Format, write_message};

/// RPC commands.
#[derive(Subcommand, Debug)]
pub(crate) enum Rpc {
    /// Publishes a request with reply-to `amq.rabbitmq.reply-to` and a
    /// fresh correlation id, and prints the reply. An unroutable request is
    /// exit code 5, no reply within --timeout is exit code 6.
    Call(CallArgs),
}

/// `rpc call`'s flags.
#[derive(Args, Debug)]
pub(crate) struct CallArgs {
    /// Exchange (default: the default exchange).
    #[arg(long, short = 'e', default_value = "")]
    pub exchange: String,
    /// Routing key (with the default exchange: the server's queue).
    #[arg(long, short = 'k')]
    pub routing_key: String,
    /// How long to wait for the reply.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = fields::duration)]
    pub timeout: Duration,
    /// Output format of the reply.
    #[arg(long, value_enum, default_value_t = Format::Raw)]
    pub format: Format,
    #[command(flatten)]
    pub body: BodyArgs,
    /// (--reply-to and --correlation-id are set by the call itself.)
    #[command(flatten)]
    pub properties: PropsArgs,
}

/// Runs `rpc`.
pub(crate) async fn run(connection: &Connection, rpc: Rpc) -> Result<(), CliError> {
    let Rpc::Call(args) = rpc;
    let properties = args.properties.properties()?;
    let body = args.body.read()?;
    let client = connection.direct_reply_to().await?;
    let reply = client
        .call(
            &args.exchange,
            &args.routing_key,
            body,
            &properties,
            args.timeout,
        )
        .await?;
    write_message(&mut std::io::stdout().lock(), args.format, &reply, None)
}
