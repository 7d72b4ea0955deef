//! `carehare`: a RabbitMQ command-line tool built on carehare-tokio.
//!
//! Publish, consume, get, declare/delete/bind/unbind/purge queues and
//! exchanges, RPC calls over direct reply-to, listings through the
//! management HTTP API, and `perf`, a RabbitMQ PerfTest-style load tool.
//! See `carehare --help`, `carehare man` and the crate README.

#![deny(unreachable_pub)]

mod commands;
mod common;
mod error;
mod fields;
mod management;
mod output;
mod perf;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use crate::commands::{admin, consume, get, list, publish, rpc, shell};
use crate::common::ConnArgs;
use crate::error::CliError;

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  other failure (connection lost mid-operation, I/O error)
  2  usage: bad flags, or a request the client refuses before sending
  3  could not connect: URL, TCP, TLS, authentication, vhost access
  4  RabbitMQ refused the operation (e.g. 404 NOT_FOUND, 403 ACCESS_REFUSED,
     405 RESOURCE_LOCKED, 406 PRECONDITION_FAILED); its text is on stderr
  5  a publish was returned (--mandatory, unroutable) or nacked
  6  timeout (no confirm, reply or enough messages within --timeout)
  7  get: the queue is empty
  8  consume --exec: the command failed (with --on-failure stop)

Environment:
  AMQP_URL  the default for --url";

/// A RabbitMQ command-line tool: publish, consume, get, manage queues and
/// exchanges, RPC, listings, and a PerfTest-style load tool.
#[derive(Parser, Debug)]
#[command(name = "carehare", version, after_help = EXIT_CODES, max_term_width = 100)]
struct Cli {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Publish one message and wait for its confirm.
    Publish(publish::PublishArgs),
    /// Print deliveries of a queue or an exchange, acking each (or --exec
    /// a command on each).
    Consume(consume::ConsumeArgs),
    /// Look at one message of a queue (it stays there unless --ack).
    Get(get::GetArgs),
    /// Declare a queue or an exchange.
    #[command(subcommand)]
    Declare(admin::Declare),
    /// Delete a queue or an exchange.
    #[command(subcommand)]
    Delete(admin::Delete),
    /// Bind a queue or an exchange to an exchange.
    #[command(subcommand)]
    Bind(admin::Bind),
    /// Remove a binding made by `bind`.
    #[command(subcommand)]
    Unbind(admin::Bind),
    /// Remove every ready message from a queue.
    Purge(admin::Purge),
    /// Remote procedure calls over direct reply-to.
    #[command(subcommand)]
    Rpc(rpc::Rpc),
    /// A load test in the style of RabbitMQ's PerfTest.
    Perf(perf::PerfArgs),
    /// List queues, exchanges or connections (management HTTP API).
    List(list::ListArgs),
    /// Print a shell completion script.
    Completions(shell::CompletionsArgs),
    /// Print the manual page (roff).
    Man,
}

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Command::Publish(_) => "publish",
            Command::Consume(_) => "consume",
            Command::Get(_) => "get",
            Command::Declare(_) => "declare",
            Command::Delete(_) => "delete",
            Command::Bind(_) => "bind",
            Command::Unbind(_) => "unbind",
            Command::Purge(_) => "purge",
            Command::Rpc(_) => "rpc",
            Command::Perf(_) => "perf",
            Command::List(_) => "list",
            Command::Completions(_) => "completions",
            Command::Man => "man",
        }
    }
}

fn main() -> ExitCode {
    // clap exits with 2 on a usage error and 0 for --help / --version.
    let cli = Cli::parse();
    // The commands without AMQP need no runtime.
    let offline = match &cli.command {
        Command::Completions(args) => Some(shell::completions(Cli::command(), args)),
        Command::Man => Some(shell::man(Cli::command())),
        Command::List(args) => Some(list::run(&cli.conn, args)),
        _ => None,
    };
    if let Some(result) = offline {
        return exit(result);
    }
    let runtime = match &cli.command {
        Command::Perf(args) => perf::runtime(args),
        _ => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    };
    let result = match runtime {
        Ok(runtime) => runtime.block_on(run(cli)),
        Err(e) => Err(CliError::io("starting the tokio runtime")(e)),
    };
    exit(result)
}

/// The exit code for a command's outcome, its error said on stderr.
fn exit(result: Result<(), CliError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("carehare: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

async fn run(cli: Cli) -> Result<(), CliError> {
    let name = format!("carehare {}", cli.command.name());
    // The long-running commands manage their own connections.
    match cli.command {
        Command::Perf(args) => return perf::run(&cli.conn, args).await,
        Command::Consume(args) => return consume::run(&cli.conn, args).await,
        // Run by `main` without a runtime.
        Command::List(_) | Command::Completions(_) | Command::Man => return Ok(()),
        _ => {}
    }
    let connection = cli.conn.connect(&name).await?;
    let result = match cli.command {
        Command::Publish(args) => publish::run(&connection, args).await,
        Command::Get(args) => get::run(&connection, args).await,
        Command::Declare(what) => admin::declare(&connection, what).await,
        Command::Delete(what) => admin::delete(&connection, what).await,
        Command::Bind(what) => admin::bind(&connection, what, true).await,
        Command::Unbind(what) => admin::bind(&connection, what, false).await,
        Command::Purge(args) => admin::purge(&connection, args).await,
        Command::Rpc(rpc) => rpc::run(&connection, rpc).await,
        Command::Perf(_)
        | Command::Consume(_)
        | Command::List(_)
        | Command::Completions(_)
        | Command::Man => Ok(()),
    };
    // A clean close, so RabbitMQ logs no "connection closed abruptly";
    // the command's own outcome wins over a failed close.
    let closed = connection.close().await;
    result?;
    closed.map_err(CliError::from)
}
