//! The quick-start demo: connect to the local test broker, show the
//! handshake, then publish with confirms and consume with acks, showing
//! progress and throughput.
//!
//! It drives `carehare-core` through the small blocking driver in this
//! crate; the async clients (carehare-tokio & co.) wrap the same core.

use std::io::Write;
use std::time::{Duration, Instant};

use carehare_core::method::{
    BasicAck, BasicConsume, BasicPublish, BasicQos, ConfirmSelect, Method, QueueDeclare,
};
use carehare_core::properties::BasicProperties;
use carehare_core::types::ShortStr;
use carehare_core::{ConnectionConfig, Event, Reply};
use carehare_tests::{Blocking, Failure};

const MESSAGES: u64 = 50_000;
const BODY: usize = 1024;
const WINDOW: u64 = 1000;
const PREFETCH: u16 = 300;
const ACK_EVERY: u64 = 30;

fn main() {
    if let Err(e) = run() {
        eprintln!("\ndemo failed: {e:?}");
        std::process::exit(1);
    }
}

fn progress(label: &str, done: u64, started: Instant) {
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    eprint!(
        "\r  {label}: {done:>6}/{MESSAGES} ({:>7.0} msg/s)",
        done as f64 / secs
    );
    let _ = std::io::stderr().flush();
}

fn run() -> Result<(), Failure> {
    println!("carehare demo: {MESSAGES} messages of {BODY} B through RabbitMQ on 127.0.0.1:5672\n");
    let t0 = Instant::now();
    let config = ConnectionConfig {
        connection_name: Some("carehare demo".into()),
        ..Default::default()
    };
    let (mut c, tuning) = Blocking::connect(config)?;
    let version = match c.conn.server_properties().inner().get("version") {
        Some(carehare_core::types::AMQPValue::LongString(v)) => {
            String::from_utf8_lossy(v.as_bytes()).into_owned()
        }
        _ => "unknown".into(),
    };
    println!(
        "handshake: {:.1} ms (protocol header, start/start-ok, tune/tune-ok, open/open-ok)",
        t0.elapsed().as_secs_f64() * 1e3
    );
    println!(
        "negotiated: channel_max={} frame_max={} heartbeat={}s; server version {}\n",
        tuning.channel_max, tuning.frame_max, tuning.heartbeat, version
    );

    let ch = c.open_channel()?;
    let queue = match c.call(
        ch,
        QueueDeclare {
            exclusive: true,
            ..Default::default()
        },
    )? {
        Reply::Method(Method::QueueDeclareOk(ok)) => ok.queue,
        other => panic!("unexpected reply {other:?}"),
    };
    c.call(ch, ConfirmSelect::default())?;

    // Publish with confirms, at most WINDOW unconfirmed.
    let body = vec![b'x'; BODY];
    let publish = BasicPublish {
        routing_key: queue.clone(),
        ..Default::default()
    };
    let props = BasicProperties::default();
    let started = Instant::now();
    let (mut sent, mut confirmed) = (0u64, 0u64);
    while confirmed < MESSAGES {
        while sent < MESSAGES && sent - confirmed < WINDOW {
            c.conn
                .publish(ch, &publish, &props, &body)
                .map_err(Failure::Usage)?;
            sent += 1;
        }
        match c.next_event(Duration::from_secs(30))? {
            Event::Ack {
                delivery_tag,
                multiple,
                ..
            } => {
                confirmed = if multiple {
                    delivery_tag
                } else {
                    confirmed + 1
                }
            }
            Event::Nack { delivery_tag, .. } => panic!("broker nacked publish {delivery_tag}"),
            _ => {}
        }
        if confirmed.is_multiple_of(1000) {
            progress("publish (confirmed)", confirmed, started);
        }
    }
    progress("publish (confirmed)", confirmed, started);
    let publish_rate = MESSAGES as f64 / started.elapsed().as_secs_f64();
    eprintln!();

    // Consume with prefetch and a multiple-ack every ACK_EVERY.
    c.call(
        ch,
        BasicQos {
            prefetch_count: PREFETCH,
            ..Default::default()
        },
    )?;
    c.call(
        ch,
        BasicConsume {
            queue: queue.clone(),
            consumer_tag: ShortStr::from_static("demo"),
            ..Default::default()
        },
    )?;
    let started = Instant::now();
    let mut received = 0u64;
    while received < MESSAGES {
        if let Event::Delivery { delivery, .. } = c.next_event(Duration::from_secs(30))? {
            assert_eq!(delivery.body.len(), BODY);
            received += 1;
            if (received.is_multiple_of(ACK_EVERY) || received == MESSAGES)
                && let carehare_core::ContentMethod::Deliver(d) = &delivery.method
            {
                let ack = BasicAck {
                    delivery_tag: d.delivery_tag,
                    multiple: true,
                };
                c.conn.send(ch, ack.into()).map_err(Failure::Usage)?;
            }
            if received.is_multiple_of(1000) {
                progress("consume (acked)    ", received, started);
            }
        }
    }
    c.flush();
    progress("consume (acked)    ", received, started);
    let consume_rate = MESSAGES as f64 / started.elapsed().as_secs_f64();
    eprintln!();

    c.close()?;
    println!("\n| workload | messages | msg/s |");
    println!("|---|---|---|");
    println!("| publish {BODY} B, confirms, window {WINDOW} | {MESSAGES} | {publish_rate:.0} |");
    println!(
        "| consume {BODY} B, prefetch {PREFETCH}, multi-ack every {ACK_EVERY} | {MESSAGES} | {consume_rate:.0} |"
    );
    println!("\nclosed cleanly after {:.1} s", t0.elapsed().as_secs_f64());
    Ok(())
}
