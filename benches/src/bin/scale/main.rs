//! Scale: what idle connections cost, 10,000 of them on a 1 s heartbeat,
//! many consumers on one connection, and many queues over one connection
//! or one connection each. `benches/run.sh` runs it (steps `scale` and
//! `queues`); the "Scale" sections of docs/benchmarks.md say what each
//! figure is.
//!
//! ```text
//! scale idle-rss  [--connections 1,100,1000] [--clients carehare,amqprs,lapin] [--processes 16]
//!                 [--heartbeat 10] [--idle 12] [--batch 50] [--warmup 1] [--out DIR]
//! scale idle      [--connections 10000] [--heartbeat 1] [--idle 60] [--batch 100]
//!                 [--check all|idle] [--test-server DIR]
//! scale consumers [--consumers 1,10,100,1000] [--messages 100000] [--prefetch 300]
//!                 [--rounds 1] [--out DIR]
//! scale queues    [--queues 1,4,16,64] [--messages 100000] [--confirm 1000]
//!                 [--prefetch 300] [--rounds 1] [--out DIR]
//! every one also: [--url amqp://guest:guest@127.0.0.1:5672/%2f]
//! ```
//!
//! Each prints a markdown table on stdout and writes its figure files
//! (`fig-*.json`) into `--out` (default `target/bench`). `idle-rss`,
//! `consumers` and `queues` measure each point in a child process of
//! their own (`*-child` subcommands, one JSON line each), so that memory
//! and CPU figures are that point's alone.

mod alloc;
mod broker;
mod child;
mod clients;
mod consumers;
mod figure;
mod flags;
mod idle_many;
mod idle_rss;
mod queues;
mod sys;
mod watch;
mod work;

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;

/// The local test broker, default user and vhost.
pub const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = flags::Flags::parse(args.get(1..).unwrap_or_default()).and_then(|f| {
        let run = match args.first().map(String::as_str) {
            Some("idle-rss") => idle_rss::main,
            Some("idle-rss-child") => idle_rss::child,
            Some("idle") => idle_many::main,
            Some("consumers") => consumers::main,
            Some("consumers-child") => consumers::child,
            Some("publish-child") => consumers::publish_child,
            Some("queues") => queues::main,
            Some("queues-child") => queues::child,
            _ => {
                return Err(
                    "usage: scale idle-rss|idle|consumers|queues [flags] (see the source)".into(),
                );
            }
        };
        run(&f)
    });
    if let Err(e) = result {
        eprintln!("scale: {e}");
        std::process::exit(1);
    }
}
