//! `carehare publish`: one message, confirmed.

use std::time::Duration;

use carehare_tokio::Connection;
use clap::Args;

use crate::common::{BodyArgs, PropsArgs};
use crate::error::CliError;
use crate::fields;

/// Publishes one message and waits for RabbitMQ's confirm. Prints `acked`;
/// a returned (with --mandatory) or nacked message exits with code 5.
#[derive(Args, Debug)]
pub(crate) struct PublishArgs {
    /// Exchange (default: the default exchange, which routes by queue name).
    #[arg(long, short = 'e', default_value = "")]
    pub exchange: String,
    /// Routing key (with the default exchange: the queue name).
    #[arg(long, short = 'k', default_value = "")]
    pub routing_key: String,
    /// Ask RabbitMQ to return the message if no queue takes it.
    #[arg(long)]
    pub mandatory: bool,
    /// How long to wait for the confirm.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = fields::duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub body: BodyArgs,
    #[command(flatten)]
    pub properties: PropsArgs,
}

/// Runs `publish`.
pub(crate) async fn run(connection: &Connection, args: PublishArgs) -> Result<(), CliError> {
    let properties = args.properties.properties()?;
    let body = args.body.read()?;
    let confirmation = if args.mandatory {
        connection.publish_mandatory(body, &args.exchange, &args.routing_key, &properties)
    } else {
        connection.publish_with(body, &args.exchange, &args.routing_key, &properties)
    };
    match tokio::time::timeout(args.timeout, confirmation).await {
        Ok(result) => result?,
        Err(_) => {
            return Err(CliError::Timeout {
                what: "no confirm from RabbitMQ".into(),
                timeout: args.timeout,
            });
        }
    }
    println!("acked");
    Ok(())
}
