//! carehare-core against the live test broker (`test-server/start.sh`),
//! through the blocking driver in this crate.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use carehare_core::error::{ChannelError, ConnectionError, UsageError};
use carehare_core::method::*;
use carehare_core::properties::BasicProperties;
use carehare_core::types::{AMQPValue, FieldTable, ShortStr};
use carehare_core::{Auth, ConnectionConfig, ContentMethod, Event, Reply};
use carehare_tests::{Blocking, Failure};

fn s(v: &str) -> ShortStr {
    ShortStr::new(v).unwrap()
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

fn connect() -> Blocking {
    Blocking::connect(ConnectionConfig::default())
        .expect("connect")
        .0
}

fn declare_exclusive(c: &mut Blocking, ch: u16, arguments: FieldTable) -> String {
    let name = unique("core-live");
    let reply = c
        .call(
            ch,
            QueueDeclare {
                queue: s(&name),
                exclusive: true,
                arguments,
                ..Default::default()
            },
        )
        .expect("declare");
    assert!(
        matches!(reply, Reply::Method(Method::QueueDeclareOk(ok)) if ok.queue == name.as_str())
    );
    name
}

#[test]
fn handshake_negotiates_with_rabbitmq() {
    let (mut c, tuning) = Blocking::connect(ConnectionConfig::default()).expect("connect");
    assert_eq!(tuning.channel_max, 2047);
    assert_eq!(tuning.frame_max, 131_072);
    assert_eq!(tuning.heartbeat, 60);
    let product = c.conn.server_properties().inner().get("product").cloned();
    assert_eq!(
        product,
        Some(AMQPValue::LongString(b"RabbitMQ".to_vec().into()))
    );
    assert_eq!(c.close().unwrap(), ConnectionError::ClosedByClient);
}

#[test]
fn smaller_client_limits_win() {
    let config = ConnectionConfig {
        channel_max: 5,
        frame_max: 4096,
        heartbeat: 7,
        ..Default::default()
    };
    let (mut c, tuning) = Blocking::connect(config).expect("connect");
    assert_eq!(
        (tuning.channel_max, tuning.frame_max, tuning.heartbeat),
        (5, 4096, 7)
    );
    for _ in 0..5 {
        c.open_channel().expect("open");
    }
    assert!(matches!(
        c.open_channel(),
        Err(Failure::Usage(UsageError::NoFreeChannel(5)))
    ));
}

#[test]
fn amqplain_on_the_second_vhost() {
    let config = ConnectionConfig {
        auth: Auth::AmqPlain {
            username: "carehare".into(),
            password: "carehare-pw".into(),
        },
        virtual_host: "carehare-test".into(),
        ..Default::default()
    };
    let (mut c, _) = Blocking::connect(config).expect("connect");
    let ch = c.open_channel().unwrap();
    declare_exclusive(&mut c, ch, FieldTable::default());
}

#[test]
fn wrong_password_is_an_authentication_error() {
    let config = ConnectionConfig {
        auth: Auth::plain("carehare", "wrong"),
        ..Default::default()
    };
    match Blocking::connect(config) {
        Err(Failure::Connection(ConnectionError::AuthenticationFailed(r))) => {
            assert_eq!(r.code, 403);
            assert!(r.text.contains("ACCESS_REFUSED"), "{}", r.text);
        }
        Err(other) => panic!("expected AuthenticationFailed, got {other:?}"),
        Ok(_) => panic!("expected AuthenticationFailed, got a connection"),
    }
}

#[test]
fn unknown_vhost_is_closed_by_server() {
    let config = ConnectionConfig {
        virtual_host: "no-such-vhost".into(),
        ..Default::default()
    };
    match Blocking::connect(config) {
        Err(Failure::Connection(ConnectionError::ClosedByServer(r))) => {
            assert_eq!(r.code, 530, "{r}")
        }
        Err(other) => panic!("expected ClosedByServer, got {other:?}"),
        Ok(_) => panic!("expected ClosedByServer, got a connection"),
    }
}

#[test]
fn tls_with_plain_and_with_external() {
    let (mut c, _) =
        Blocking::connect_tls(ConnectionConfig::default(), false).expect("TLS + PLAIN");
    c.open_channel().unwrap();
    let config = ConnectionConfig {
        auth: Auth::External,
        ..Default::default()
    };
    let (mut c, _) =
        Blocking::connect_tls(config, true).expect("TLS + EXTERNAL with the client cert");
    let ch = c.open_channel().unwrap();
    declare_exclusive(&mut c, ch, FieldTable::default());
}

#[test]
fn a_channel_error_leaves_the_connection_usable() {
    let mut c = connect();
    let ch = c.open_channel().unwrap();
    let missing = unique("missing");
    let err = c.call(
        ch,
        QueueDeclare {
            queue: s(&missing),
            passive: true,
            ..Default::default()
        },
    );
    match err {
        Err(Failure::Channel(ChannelError::ClosedByServer(r))) => {
            assert_eq!((r.code, r.class_id, r.method_id), (404, 50, 10));
            assert!(r.text.contains(&missing), "{}", r.text);
        }
        other => panic!("expected 404, got {other:?}"),
    }
    let closed = c
        .wait_for(Duration::from_secs(5), |e| {
            matches!(e, Event::ChannelClosed { .. })
        })
        .unwrap();
    assert!(matches!(closed, Event::ChannelClosed { channel, .. } if channel == ch));
    assert!(c.conn.is_open());
    let ch2 = c.open_channel().unwrap();
    assert_eq!(ch2, ch, "the freed id is reused");
    declare_exclusive(&mut c, ch2, FieldTable::default());
}

#[test]
fn publish_with_confirms_then_consume_and_ack() {
    let config = ConnectionConfig {
        frame_max: 4096,
        ..Default::default()
    };
    let (mut c, _) = Blocking::connect(config).unwrap();
    let ch = c.open_channel().unwrap();
    let queue = declare_exclusive(&mut c, ch, FieldTable::default());
    c.call(ch, ConfirmSelect::default()).unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let mut headers = FieldTable::default();
    headers.insert("x-number".into(), AMQPValue::LongLongInt(-5));
    headers.insert(
        "x-list".into(),
        AMQPValue::FieldArray(
            vec![
                AMQPValue::Boolean(true),
                AMQPValue::LongString(b"s".to_vec().into()),
            ]
            .into(),
        ),
    );
    let props = BasicProperties {
        content_type: Some(s("application/octet-stream")),
        headers: Some(headers),
        delivery_mode: Some(2),
        priority: Some(3),
        correlation_id: Some(s("corr")),
        reply_to: Some(s("reply")),
        expiration: Some(s("60000")),
        message_id: Some(s("mid")),
        timestamp: Some(1_700_000_000),
        kind: Some(s("type")),
        user_id: Some(s("guest")),
        app_id: Some(s("carehare-tests")),
        ..Default::default()
    };
    let publish = BasicPublish {
        routing_key: s(&queue),
        ..Default::default()
    };
    let bodies: [&[u8]; 3] = [b"small", b"", &big];
    for (i, body) in bodies.iter().enumerate() {
        let seq = c.conn.publish(ch, &publish, &props, body).unwrap();
        assert_eq!(seq, Some(i as u64 + 1));
    }
    let mut confirmed = 0;
    while confirmed < 3 {
        match c
            .wait_for(Duration::from_secs(10), |e| {
                matches!(e, Event::Ack { .. } | Event::Nack { .. })
            })
            .unwrap()
        {
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
            other => panic!("nacked: {other:?}"),
        }
    }
    let consume = c
        .call(
            ch,
            BasicConsume {
                queue: s(&queue),
                ..Default::default()
            },
        )
        .unwrap();
    let Reply::Method(Method::BasicConsumeOk(ok)) = consume else {
        panic!("{consume:?}")
    };
    for body in bodies {
        let Event::Delivery { delivery, .. } = c
            .wait_for(Duration::from_secs(10), |e| {
                matches!(e, Event::Delivery { .. })
            })
            .unwrap()
        else {
            unreachable!()
        };
        let ContentMethod::Deliver(d) = &delivery.method else {
            panic!("{:?}", delivery.method)
        };
        assert_eq!(d.consumer_tag, ok.consumer_tag);
        assert_eq!(&delivery.body[..], body);
        assert_eq!(*delivery.properties, props);
        c.conn
            .send(
                ch,
                BasicAck {
                    delivery_tag: d.delivery_tag,
                    multiple: false,
                }
                .into(),
            )
            .unwrap();
    }
    c.flush();
    let purged = c
        .call(
            ch,
            QueuePurge {
                queue: s(&queue),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(
        matches!(purged, Reply::Method(Method::QueuePurgeOk(p)) if p.message_count == 0),
        "all acked"
    );
}

#[test]
fn get_returns_and_nacks() {
    let mut c = connect();
    let ch = c.open_channel().unwrap();
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(1));
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString(b"reject-publish".to_vec().into()),
    );
    let queue = declare_exclusive(&mut c, ch, args);
    c.call(ch, ConfirmSelect::default()).unwrap();
    let to_queue = BasicPublish {
        routing_key: s(&queue),
        ..Default::default()
    };
    let unroutable = BasicPublish {
        routing_key: s(&unique("nowhere")),
        mandatory: true,
        ..Default::default()
    };
    let p = BasicProperties::default();
    c.conn.publish(ch, &to_queue, &p, b"one").unwrap();
    c.conn.publish(ch, &to_queue, &p, b"two").unwrap();
    c.conn.publish(ch, &unroutable, &p, b"lost").unwrap();
    let mut acks = Vec::new();
    let mut nacks = Vec::new();
    let mut returned = None;
    while acks.len() + nacks.len() < 3 {
        match c
            .wait_for(Duration::from_secs(10), |e| {
                matches!(
                    e,
                    Event::Ack { .. } | Event::Nack { .. } | Event::Delivery { .. }
                )
            })
            .unwrap()
        {
            Event::Ack { delivery_tag, .. } => {
                if delivery_tag == 3 {
                    assert!(
                        returned.is_some(),
                        "basic.return comes before the ack of its publish"
                    );
                }
                acks.push(delivery_tag)
            }
            Event::Nack { delivery_tag, .. } => nacks.push(delivery_tag),
            Event::Delivery { delivery, .. } => returned = Some(delivery),
            _ => unreachable!(),
        }
    }
    assert_eq!(nacks, vec![2], "the queue was full: reject-publish nacks");
    // Confirms may come out of order across queues: the unroutable one
    // needs no queue at all.
    acks.sort_unstable();
    assert_eq!(acks, vec![1, 3]);
    let returned = returned.expect("the unroutable mandatory message comes back before its ack");
    assert!(
        matches!(&returned.method, ContentMethod::Return(r) if r.reply_code == 312 && r.reply_text == "NO_ROUTE")
    );
    assert_eq!(&returned.body[..], b"lost");

    let got = c
        .call(
            ch,
            BasicGet {
                queue: s(&queue),
                no_ack: true,
                ..Default::default()
            },
        )
        .unwrap();
    assert!(
        matches!(&got, Reply::Message(d) if d.body == Bytes::from_static(b"one")),
        "{got:?}"
    );
    let empty = c
        .call(
            ch,
            BasicGet {
                queue: s(&queue),
                no_ack: true,
                ..Default::default()
            },
        )
        .unwrap();
    assert!(matches!(empty, Reply::Method(Method::BasicGetEmpty(_))));
}

#[test]
fn exchange_to_exchange_bindings() {
    let mut c = connect();
    let ch = c.open_channel().unwrap();
    let (a, b) = (unique("ex-a"), unique("ex-b"));
    for name in [&a, &b] {
        c.call(
            ch,
            ExchangeDeclare {
                exchange: s(name),
                kind: s("fanout"),
                auto_delete: true,
                ..Default::default()
            },
        )
        .unwrap();
    }
    c.call(
        ch,
        ExchangeBind {
            destination: s(&b),
            source: s(&a),
            ..Default::default()
        },
    )
    .unwrap();
    c.call(
        ch,
        ExchangeUnbind {
            destination: s(&b),
            source: s(&a),
            ..Default::default()
        },
    )
    .unwrap();
    for name in [&a, &b] {
        c.call(
            ch,
            ExchangeDelete {
                exchange: s(name),
                ..Default::default()
            },
        )
        .unwrap();
    }
}

#[test]
fn heartbeats_keep_an_idle_connection_alive() {
    let config = ConnectionConfig {
        heartbeat: 1,
        ..Default::default()
    };
    let (mut c, tuning) = Blocking::connect(config).unwrap();
    assert_eq!(tuning.heartbeat, 1);
    // RabbitMQ drops a client that misses its heartbeats; 5 s is 5 intervals.
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        assert!(matches!(
            c.next_event(Duration::from_millis(500)),
            Err(Failure::Timeout)
        ));
    }
    assert!(c.conn.is_open());
    c.open_channel().expect("still usable");
}

fn rabbitmqctl(args: &str) -> String {
    let script = format!(
        "source '{}/../test-server/env.sh' && rabbitmqctl {args}",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "rabbitmqctl {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn server_initiated_close_is_typed() {
    let (mut c, _) = Blocking::connect(ConnectionConfig {
        connection_name: Some(unique("to-be-closed")),
        ..Default::default()
    })
    .unwrap();
    let ch = c.open_channel().unwrap();
    let port = c.local_port();
    let list = rabbitmqctl("list_connections pid peer_port --no-table-headers -q");
    let pid = list
        .lines()
        .find_map(|l| {
            let mut parts = l.split_whitespace();
            let pid = parts.next()?;
            (parts.next()? == port.to_string()).then(|| pid.to_string())
        })
        .unwrap_or_else(|| panic!("connection on port {port} not in {list}"));
    let op = c
        .conn
        .call(
            ch,
            BasicQos {
                prefetch_count: 1,
                ..Default::default()
            }
            .into(),
        )
        .unwrap();
    let _ = c.wait(op);
    rabbitmqctl(&format!(
        "close_connection '{pid}' 'carehare test says goodbye'"
    ));
    match c.next_event(Duration::from_secs(10)) {
        Ok(Event::ConnectionClosed(ConnectionError::ClosedByServer(r)))
        | Err(Failure::Connection(ConnectionError::ClosedByServer(r))) => {
            assert_eq!(r.code, 320);
            assert!(r.text.contains("carehare test says goodbye"), "{}", r.text);
        }
        other => panic!("expected ClosedByServer, got {other:?}"),
    }
}
