//! The core driven by a scripted fake broker, with simulated time.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use carehare_core::error::{ChannelError, ConnectionError, ProtocolViolation, UsageError};
use carehare_core::frame::{FRAME_END, Frame, encode_content};
use carehare_core::method::*;
use carehare_core::properties::{BASIC_CLASS_ID, BasicProperties, ContentHeader};
use carehare_core::testing::Broker;
use carehare_core::types::{AMQPValue, FieldTable, ShortStr};
use carehare_core::{Auth, Coalescing, ConnectionConfig, ContentMethod, Event, Reply};

fn s(v: &'static str) -> ShortStr {
    ShortStr::from_static(v)
}

fn broker() -> Broker {
    Broker::new(ConnectionConfig::default())
}

fn open_broker() -> Broker {
    let mut b = broker();
    b.handshake();
    b
}

fn closed_with(events: &[Event]) -> &ConnectionError {
    match events.last() {
        Some(Event::ConnectionClosed(e)) => e,
        other => panic!("expected ConnectionClosed last, got {other:?} in {events:?}"),
    }
}

// ---- Handshake ----------------------------------------------------------

#[test]
fn handshake_sends_plain_credentials_properties_and_capabilities() {
    let mut b = Broker::new(ConnectionConfig {
        auth: Auth::plain("bob", "secret"),
        virtual_host: "carehare-test".into(),
        connection_name: Some("my-app".into()),
        ..Default::default()
    });
    b.start();
    let (_, m) = b.expect_one();
    let Method::ConnectionStartOk(ok) = m else {
        panic!("{m:?}")
    };
    assert_eq!(ok.mechanism, "PLAIN");
    assert_eq!(&ok.response.0[..], b"\0bob\0secret");
    let props = ok.client_properties.inner();
    assert_eq!(
        props.get("product"),
        Some(&AMQPValue::LongString(b"carehare".to_vec().into()))
    );
    assert!(props.contains_key("version") && props.contains_key("platform"));
    assert_eq!(
        props.get("connection_name"),
        Some(&AMQPValue::LongString(b"my-app".to_vec().into()))
    );
    let Some(AMQPValue::FieldTable(caps)) = props.get("capabilities") else {
        panic!("no capabilities")
    };
    for cap in [
        "publisher_confirms",
        "consumer_cancel_notify",
        "basic.nack",
        "connection.blocked",
        "authentication_failure_close",
    ] {
        assert_eq!(
            caps.inner().get(cap),
            Some(&AMQPValue::Boolean(true)),
            "{cap}"
        );
    }
    b.method(
        0,
        ConnectionTune {
            channel_max: 100,
            frame_max: 8192,
            heartbeat: 30,
        },
    );
    let sent = b.sent_methods();
    assert_eq!(
        sent,
        vec![
            (
                0,
                ConnectionTuneOk {
                    channel_max: 100,
                    frame_max: 8192,
                    heartbeat: 30
                }
                .into()
            ),
            (
                0,
                ConnectionOpen {
                    virtual_host: s("carehare-test"),
                    ..Default::default()
                }
                .into()
            ),
        ]
    );
    assert!(!b.conn.is_open());
    b.method(0, ConnectionOpenOk::default());
    assert!(b.conn.is_open());
    assert!(matches!(b.events().as_slice(), [Event::Connected(t)] if t.frame_max == 8192));
}

#[test]
fn tune_is_the_minimum_where_zero_means_no_limit() {
    let cases = [
        // (client, server) -> negotiated, for channel_max/frame_max/heartbeat
        ((2047, 131_072, 60), (0, 0, 0), (2047, 131_072, 60)),
        ((0, 0, 0), (100, 8192, 10), (100, 8192, 10)),
        ((10, 65_536, 5), (100, 8192, 10), (10, 8192, 5)),
        ((0, 0, 0), (0, 0, 0), (u16::MAX, 0, 0)),
    ];
    for ((cc, cf, ch), (sc, sf, sh), (nc, nf, nh)) in cases {
        let mut b = Broker::new(ConnectionConfig {
            channel_max: cc,
            frame_max: cf,
            heartbeat: ch,
            ..Default::default()
        });
        let t = b.handshake_with(ConnectionTune {
            channel_max: sc,
            frame_max: sf,
            heartbeat: sh,
        });
        assert_eq!(
            (t.channel_max, t.frame_max, t.heartbeat),
            (nc, nf, nh),
            "client {cc}/{cf}/{ch} server {sc}/{sf}/{sh}"
        );
    }
}

#[test]
fn heartbeat_zero_disables_timers() {
    let mut b = Broker::new(ConnectionConfig {
        heartbeat: 0,
        ..Default::default()
    });
    b.handshake_with(ConnectionTune {
        channel_max: 0,
        frame_max: 131_072,
        heartbeat: 0,
    });
    assert_eq!(b.conn.poll_timeout(), None);
    b.advance(Duration::from_secs(3600));
    assert!(b.conn.is_open());
    assert!(b.sent().is_empty());
}

#[test]
fn amqplain_and_external_mechanisms() {
    let mut b = Broker::new(ConnectionConfig {
        auth: Auth::AmqPlain {
            username: "u".into(),
            password: "p".into(),
        },
        ..Default::default()
    });
    b.start();
    let (_, Method::ConnectionStartOk(ok)) = b.expect_one() else {
        panic!()
    };
    assert_eq!(ok.mechanism, "AMQPLAIN");
    assert!(ok.response.0.starts_with(b"\x05LOGINS"));

    let mut b = Broker::new(ConnectionConfig {
        auth: Auth::External,
        ..Default::default()
    });
    b.start();
    let (_, Method::ConnectionStartOk(ok)) = b.expect_one() else {
        panic!()
    };
    assert_eq!(ok.mechanism, "EXTERNAL");
    assert!(ok.response.0.is_empty());
}

#[test]
fn mechanism_not_offered_is_typed() {
    let mut b = Broker::new(ConnectionConfig {
        auth: Auth::External,
        ..Default::default()
    });
    b.method(
        0,
        ConnectionStart {
            version_major: 0,
            version_minor: 9,
            mechanisms: "PLAIN AMQPLAIN".into(),
            locales: "en_US".into(),
            ..Default::default()
        },
    );
    let events = b.events();
    assert!(matches!(
        closed_with(&events),
        ConnectionError::MechanismNotOffered { wanted: "EXTERNAL", offered } if offered == "PLAIN AMQPLAIN"
    ));
}

#[test]
fn refused_credentials_are_an_authentication_error() {
    let mut b = broker();
    b.start();
    b.sent();
    b.method(
        0,
        ConnectionClose {
            reply_code: 403,
            reply_text: s(
                "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN",
            ),
            class_id: 0,
            method_id: 0,
        },
    );
    assert_eq!(b.expect_one(), (0, ConnectionCloseOk {}.into()));
    let events = b.events();
    assert!(
        matches!(closed_with(&events), ConnectionError::AuthenticationFailed(r) if r.code == 403)
    );
    assert!(b.conn.is_closed());
}

#[test]
fn handshake_times_out() {
    let mut b = Broker::new(ConnectionConfig {
        handshake_timeout: Duration::from_secs(5),
        ..Default::default()
    });
    b.advance(Duration::from_millis(4999));
    assert!(b.events().is_empty());
    b.advance(Duration::from_millis(1));
    let events = b.events();
    assert_eq!(
        closed_with(&events),
        &ConnectionError::HandshakeTimeout(Duration::from_secs(5))
    );
}

#[test]
fn a_server_that_answers_with_a_protocol_header_is_typed() {
    let mut b = broker();
    b.bytes(b"AMQP\x00\x00\x09\x00");
    let events = b.events();
    assert!(matches!(
        closed_with(&events),
        ConnectionError::Protocol(ProtocolViolation::ProtocolHeader(h)) if h == b"AMQP\x00\x00\x09\x00"
    ));
}

#[test]
fn commands_before_open_are_usage_errors() {
    let mut b = broker();
    assert_eq!(b.conn.open_channel(), Err(UsageError::NotOpen));
}

// ---- Heartbeats -----------------------------------------------------------

/// A broker past the handshake, on a heartbeat of `seconds`.
fn open_with_heartbeat(seconds: u16) -> Broker {
    let mut b = Broker::new(ConnectionConfig {
        heartbeat: seconds,
        ..Default::default()
    });
    b.handshake();
    b
}

#[test]
fn heartbeat_is_sent_after_five_quarters_of_the_interval_of_write_silence() {
    let mut b = open_with_heartbeat(10);
    b.sent();
    b.advance(Duration::from_millis(12_400));
    assert!(b.sent().is_empty());
    b.advance(Duration::from_millis(100));
    assert_eq!(b.sent(), vec![Frame::Heartbeat { channel: 0 }]);
    // Writing something else resets the write timer.
    let ch = {
        b.advance(Duration::from_secs(4));
        b.open_channel()
    };
    assert!(ch > 0);
    b.advance(Duration::from_millis(12_400));
    assert!(
        b.sent().is_empty(),
        "a write 12.4 s ago: no heartbeat due yet"
    );
    b.advance(Duration::from_millis(100));
    assert_eq!(b.sent(), vec![Frame::Heartbeat { channel: 0 }]);
}

#[test]
fn a_read_takes_a_heartbeat_along_after_three_quarters_of_an_interval_of_write_silence() {
    let mut b = open_with_heartbeat(10);
    b.sent();
    b.advance(Duration::from_millis(7_400));
    b.frame(Frame::Heartbeat { channel: 0 });
    assert!(b.sent().is_empty(), "written 7.4 s ago: not yet");
    b.advance(Duration::from_millis(100));
    b.frame(Frame::Heartbeat { channel: 0 });
    assert_eq!(b.sent(), vec![Frame::Heartbeat { channel: 0 }]);
    // RabbitMQ's every 5 s: ours go out with every second one, once per
    // interval, and the timer (12.5 s after the last write) never comes
    // due.
    for _ in 0..4 {
        b.advance(Duration::from_secs(5));
        b.frame(Frame::Heartbeat { channel: 0 });
        assert!(b.sent().is_empty(), "written 5 s ago: not yet");
        let due = b.conn.poll_timeout().unwrap() - b.now;
        assert_eq!(due, Duration::from_millis(7_500));
        b.advance(Duration::from_secs(5));
        b.frame(Frame::Heartbeat { channel: 0 });
        assert_eq!(b.sent(), vec![Frame::Heartbeat { channel: 0 }]);
        let due = b.conn.poll_timeout().unwrap() - b.now;
        assert_eq!(due, Duration::from_millis(12_500));
    }
    // A read while something is queued takes nothing more along.
    b.advance(Duration::from_secs(8));
    let ch = b.conn.open_channel().unwrap().0;
    b.frame(Frame::Heartbeat { channel: 0 });
    let sent = b.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(matches!(sent[0], Frame::Method { channel, .. } if channel == ch));
}

#[test]
fn silent_peer_is_declared_dead_after_twice_the_interval() {
    let mut b = open_with_heartbeat(10);
    let ch = b.open_channel();
    let op = b
        .conn
        .call(
            ch,
            QueueDeclare {
                queue: s("q"),
                ..Default::default()
            }
            .into(),
        )
        .unwrap();
    b.sent();
    // The server's heartbeats keep it alive...
    b.advance(Duration::from_secs(15));
    b.frame(Frame::Heartbeat { channel: 0 });
    b.advance(Duration::from_secs(19));
    assert!(b.conn.is_open());
    // ...until it goes quiet for 20 s.
    b.advance(Duration::from_secs(1));
    let events = b.events();
    assert_eq!(
        closed_with(&events),
        &ConnectionError::ClosedByHeartbeatMonitor(Duration::from_secs(20))
    );
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Completed { op: o, result: Err(ChannelError::ConnectionClosed(ConnectionError::ClosedByHeartbeatMonitor(_))), .. } if *o == op
    )), "the pending declare fails: {events:?}");
    assert!(b.conn.is_closed());
    assert_eq!(b.conn.poll_timeout(), None);
}

// ---- Close, both ways -------------------------------------------------------

#[test]
fn server_close_is_typed_answered_and_final() {
    let mut b = open_broker();
    let ch = b.open_channel();
    let op = b
        .conn
        .call(
            ch,
            QueueDeclare {
                queue: s("q"),
                ..Default::default()
            }
            .into(),
        )
        .unwrap();
    b.sent();
    b.method(
        0,
        ConnectionClose {
            reply_code: 320,
            reply_text: s(
                "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'",
            ),
            class_id: 0,
            method_id: 0,
        },
    );
    assert_eq!(b.expect_one(), (0, ConnectionCloseOk {}.into()));
    let events = b.events();
    let err = closed_with(&events);
    assert!(matches!(err, ConnectionError::ClosedByServer(r) if r.code == 320));
    assert!(err.to_string().contains("CONNECTION_FORCED"));
    assert!(
        matches!(&events[0], Event::Completed { op: o, result: Err(ChannelError::ConnectionClosed(_)), .. } if *o == op)
    );
    // Later input is ignored, commands are refused.
    b.method(
        ch,
        QueueDeclareOk {
            queue: s("q"),
            ..Default::default()
        },
    );
    b.bytes(b"garbage garbage");
    assert!(b.events().is_empty());
    assert!(b.sent().is_empty());
    assert_eq!(b.conn.open_channel(), Err(UsageError::Closed));
}

#[test]
fn client_close_waits_for_close_ok() {
    let mut b = open_broker();
    b.conn.close(b.now, 200, "bye").unwrap();
    assert!(
        matches!(b.expect_one(), (0, Method::ConnectionClose(c)) if c.reply_code == 200 && c.reply_text == "bye")
    );
    assert_eq!(b.conn.close(b.now, 200, "again"), Err(UsageError::Closed));
    // Why it is closing is readable while commands are refused.
    assert_eq!(
        b.conn.closing_reason(),
        Some(&ConnectionError::ClosedByClient)
    );
    // Anything but close-ok is dropped while closing.
    b.method(0, ConnectionBlocked { reason: s("x") });
    b.method(7, ChannelOpenOk::default());
    assert!(b.events().is_empty());
    b.method(0, ConnectionCloseOk {});
    let events = b.events();
    assert_eq!(closed_with(&events), &ConnectionError::ClosedByClient);
    assert!(b.conn.is_closed());
    assert_eq!(b.conn.closing_reason(), None);
}

#[test]
fn client_close_times_out() {
    let mut b = Broker::new(ConnectionConfig {
        close_timeout: Duration::from_secs(3),
        ..Default::default()
    });
    b.handshake();
    b.conn.close(b.now, 200, "bye").unwrap();
    b.sent();
    b.advance(Duration::from_secs(3));
    let events = b.events();
    assert_eq!(
        closed_with(&events),
        &ConnectionError::CloseTimeout(Duration::from_secs(3))
    );
}

/// The server's heartbeat monitor runs until it sends its close-ok: a slow
/// close-ok on a short heartbeat must not cost the clean close.
#[test]
fn heartbeats_go_on_while_a_close_waits_for_its_close_ok() {
    /// Open on a 2 s heartbeat, then closing, its `connection.close` sent.
    fn closing(close_timeout: Duration) -> Broker {
        let mut b = Broker::new(ConnectionConfig {
            heartbeat: 2,
            close_timeout,
            ..Default::default()
        });
        b.handshake();
        b.conn.close(b.now, 200, "bye").unwrap();
        assert!(matches!(b.expect_one(), (0, Method::ConnectionClose(_))));
        b
    }
    let mut b = closing(Duration::from_secs(10));
    // The timer: five quarters of an interval after the close went out.
    assert_eq!(
        b.conn.poll_timeout().map(|t| t - b.now),
        Some(Duration::from_millis(2_500))
    );
    b.advance(Duration::from_millis(2_500));
    assert_eq!(b.sent(), vec![Frame::Heartbeat { channel: 0 }]);
    // A read three quarters of an interval later takes one along, as when
    // open.
    b.advance(Duration::from_millis(1_500));
    b.frame(Frame::Heartbeat { channel: 0 });
    assert_eq!(b.sent(), vec![Frame::Heartbeat { channel: 0 }]);
    for _ in 0..2 {
        b.advance(Duration::from_millis(2_500));
        assert_eq!(b.sent(), vec![Frame::Heartbeat { channel: 0 }]);
    }
    assert!(b.events().is_empty(), "still waiting for the close-ok");
    b.method(0, ConnectionCloseOk {});
    let events = b.events();
    assert_eq!(closed_with(&events), &ConnectionError::ClosedByClient);
    assert_eq!(b.conn.poll_timeout(), None);
    // The close timeout still ends a close-ok that never comes, heartbeats
    // or not.
    let mut b = closing(Duration::from_secs(4));
    b.advance(Duration::from_millis(2_500));
    assert_eq!(b.sent(), vec![Frame::Heartbeat { channel: 0 }]);
    assert_eq!(
        b.conn.poll_timeout().map(|t| t - b.now),
        Some(Duration::from_millis(1_500))
    );
    b.advance(Duration::from_millis(1_500));
    let events = b.events();
    assert_eq!(
        closed_with(&events),
        &ConnectionError::CloseTimeout(Duration::from_secs(4))
    );
    assert!(b.sent().is_empty());
}

#[test]
fn eof_without_close_is_unexpected() {
    let mut b = open_broker();
    b.conn.handle_eof(b.now);
    let events = b.events();
    assert_eq!(closed_with(&events), &ConnectionError::UnexpectedEof);
}

// ---- Channels ------------------------------------------------------------------

#[test]
fn channel_ids_are_allocated_up_to_channel_max_and_reused() {
    let mut b = Broker::new(ConnectionConfig {
        channel_max: 3,
        ..Default::default()
    });
    b.handshake();
    let ids: Vec<u16> = (0..3).map(|_| b.open_channel()).collect();
    assert_eq!(ids, vec![1, 2, 3]);
    assert_eq!(b.conn.open_channel(), Err(UsageError::NoFreeChannel(3)));
    let op = b.conn.close_channel(2).unwrap();
    assert!(matches!(b.expect_one(), (2, Method::ChannelClose(c)) if c.reply_code == 200));
    // Still closing: the id is not free yet, and commands on it are refused.
    assert_eq!(b.conn.open_channel(), Err(UsageError::NoFreeChannel(3)));
    assert_eq!(
        b.conn.call(2, QueueDeclare::default().into()),
        Err(UsageError::ChannelNotOpen(2))
    );
    b.method(2, ChannelCloseOk {});
    assert!(
        matches!(b.events().as_slice(), [Event::Completed { op: o, channel: 2, result: Ok(_) }] if *o == op)
    );
    assert_eq!(b.open_channel(), 2);
}

#[test]
fn frames_for_a_closing_channel_are_dropped_until_close_ok() {
    let mut b = open_broker();
    let ch = b.open_channel();
    let declare = b
        .conn
        .call(
            ch,
            QueueDeclare {
                queue: s("q"),
                ..Default::default()
            }
            .into(),
        )
        .unwrap();
    b.sent();
    let close = b.conn.close_channel(ch).unwrap();
    b.sent();
    let events = b.events();
    assert!(
        matches!(events.as_slice(), [Event::Completed { op, result: Err(ChannelError::ClosedByClient), .. }] if *op == declare)
    );
    // The broker answers what was in flight, and a delivery races the close.
    b.method(
        ch,
        QueueDeclareOk {
            queue: s("q"),
            ..Default::default()
        },
    );
    b.method(
        ch,
        BasicDeliver {
            consumer_tag: s("c"),
            delivery_tag: 1,
            ..Default::default()
        },
    );
    b.frame(Frame::Header {
        channel: ch,
        header: ContentHeader {
            class_id: BASIC_CLASS_ID,
            body_size: 3,
            properties: Default::default(),
        },
    });
    b.frame(Frame::Body {
        channel: ch,
        payload: Bytes::from_static(b"abc"),
    });
    assert!(b.events().is_empty());
    assert!(b.conn.is_open());
    b.method(ch, ChannelCloseOk {});
    assert!(
        matches!(b.events().as_slice(), [Event::Completed { op, result: Ok(_), .. }] if *op == close)
    );
}

#[test]
fn server_channel_close_fails_that_channel_only() {
    let mut b = open_broker();
    let ch = b.open_channel();
    let other = b.open_channel();
    let op = b
        .conn
        .call(
            ch,
            QueueDeclare {
                queue: s("q"),
                passive: true,
                ..Default::default()
            }
            .into(),
        )
        .unwrap();
    let op2 = b
        .conn
        .call(
            ch,
            QueueBind {
                queue: s("q"),
                ..Default::default()
            }
            .into(),
        )
        .unwrap();
    b.sent();
    b.method(
        ch,
        ChannelClose {
            reply_code: 404,
            reply_text: s("NOT_FOUND - no queue 'q' in vhost '/'"),
            class_id: 50,
            method_id: 10,
        },
    );
    assert_eq!(b.expect_one(), (ch, ChannelCloseOk {}.into()));
    let events = b.events();
    for expected_op in [op, op2] {
        assert!(events.iter().any(|e| matches!(
            e,
            Event::Completed { op, result: Err(ChannelError::ClosedByServer(r)), .. }
                if *op == expected_op && r.code == 404 && r.text.starts_with("NOT_FOUND") && r.class_id == 50
        )), "{events:?}");
    }
    assert!(
        matches!(events.last(), Some(Event::ChannelClosed { channel, reason }) if *channel == ch && reason.code == 404)
    );
    // The connection lives on; the other channel works; the id is reused.
    assert!(b.conn.is_open());
    let op3 = b
        .conn
        .call(
            other,
            QueueDeclare {
                queue: s("q2"),
                ..Default::default()
            }
            .into(),
        )
        .unwrap();
    b.sent();
    b.method(
        other,
        QueueDeclareOk {
            queue: s("q2"),
            message_count: 5,
            consumer_count: 1,
        },
    );
    assert!(matches!(
        b.events().as_slice(),
        [Event::Completed { op, result: Ok(Reply::Method(Method::QueueDeclareOk(ok))), .. }] if *op == op3 && ok.message_count == 5
    ));
    assert_eq!(b.open_channel(), ch);
}

#[test]
fn simultaneous_channel_close() {
    let mut b = open_broker();
    let ch = b.open_channel();
    let op = b.conn.close_channel(ch).unwrap();
    b.sent();
    b.method(
        ch,
        ChannelClose {
            reply_code: 406,
            reply_text: s("PRECONDITION_FAILED"),
            class_id: 0,
            method_id: 0,
        },
    );
    assert_eq!(b.expect_one(), (ch, ChannelCloseOk {}.into()));
    b.method(ch, ChannelCloseOk {});
    assert!(
        matches!(b.events().as_slice(), [Event::Completed { op: o, result: Ok(_), .. }] if *o == op)
    );
    assert_eq!(b.conn.channel_count(), 0);
}

// ---- Protocol faults from the server -------------------------------------------

fn assert_fault(b: &mut Broker, code: u16, check: impl Fn(&ProtocolViolation) -> bool) {
    let text = b.expect_connection_close(code);
    let name = carehare_core::error::reply_code::name(code);
    assert!(text.starts_with(&format!("{name} - ")), "{text}");
    // Nothing more is read; the close handshake still completes.
    b.method(0, ConnectionCloseOk {});
    let events = b.events();
    match closed_with(&events) {
        ConnectionError::Protocol(v) => {
            assert_eq!(v.reply_code(), code);
            assert!(check(v), "{v:?}");
        }
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

#[test]
fn garbage_bytes_close_with_501() {
    let mut b = open_broker();
    b.bytes(b"HTTP/1.1 400 Bad Request\r\n\r\n");
    assert_fault(&mut b, 501, |v| {
        matches!(v, ProtocolViolation::Decode { .. })
    });
}

#[test]
fn bad_frame_end_closes_with_501() {
    let mut b = open_broker();
    b.bytes(&[8, 0, 0, 0, 0, 0, 0, 0xAA]);
    assert_fault(&mut b, 501, |v| {
        matches!(
            v,
            ProtocolViolation::Decode {
                error: carehare_core::error::DecodeError::BadFrameEnd(0xAA),
                ..
            }
        )
    });
}

#[test]
fn oversized_frame_closes_with_501_before_it_arrives() {
    let mut b = Broker::new(ConnectionConfig {
        frame_max: 4096,
        ..Default::default()
    });
    b.handshake();
    // Only the header of a 1 GiB frame.
    b.bytes(&[3, 0, 1, 0x40, 0, 0, 0]);
    assert_fault(&mut b, 501, |v| {
        matches!(
            v,
            ProtocolViolation::Decode {
                error: carehare_core::error::DecodeError::FrameTooLarge { .. },
                channel: 1
            }
        )
    });
}

#[test]
fn frame_on_unknown_channel_closes_with_504() {
    let mut b = open_broker();
    b.method(9, QueueDeclareOk::default());
    assert_fault(&mut b, 504, |v| {
        matches!(v, ProtocolViolation::UnknownChannel(9))
    });
}

#[test]
fn content_header_without_method_closes_with_505() {
    let mut b = open_broker();
    let ch = b.open_channel();
    b.frame(Frame::Header {
        channel: ch,
        header: ContentHeader {
            class_id: BASIC_CLASS_ID,
            body_size: 1,
            properties: Default::default(),
        },
    });
    assert_fault(&mut b, 505, |v| {
        matches!(v, ProtocolViolation::UnexpectedFrame { .. })
    });
}

#[test]
fn body_without_header_closes_with_505() {
    let mut b = open_broker();
    let ch = b.open_channel();
    b.method(ch, BasicDeliver::default());
    b.frame(Frame::Body {
        channel: ch,
        payload: Bytes::from_static(b"x"),
    });
    assert_fault(&mut b, 505, |v| {
        matches!(v, ProtocolViolation::UnexpectedFrame { .. })
    });
}

#[test]
fn method_in_the_middle_of_content_closes_with_505() {
    let mut b = open_broker();
    let ch = b.open_channel();
    b.method(ch, BasicDeliver::default());
    b.method(ch, BasicDeliver::default());
    assert_fault(&mut b, 505, |v| {
        matches!(v, ProtocolViolation::UnexpectedFrame { .. })
    });
}

#[test]
fn body_overrun_closes_with_505() {
    let mut b = open_broker();
    let ch = b.open_channel();
    b.method(ch, BasicDeliver::default());
    b.frame(Frame::Header {
        channel: ch,
        header: ContentHeader {
            class_id: BASIC_CLASS_ID,
            body_size: 2,
            properties: Default::default(),
        },
    });
    b.frame(Frame::Body {
        channel: ch,
        payload: Bytes::from_static(b"abc"),
    });
    assert_fault(&mut b, 505, |v| {
        matches!(v, ProtocolViolation::BodyOverrun { declared: 2, .. })
    });
}

#[test]
fn body_over_the_limit_closes_before_buffering() {
    let mut b = Broker::new(ConnectionConfig {
        max_body_size: 1000,
        ..Default::default()
    });
    b.handshake();
    let ch = b.open_channel();
    b.method(ch, BasicDeliver::default());
    b.frame(Frame::Header {
        channel: ch,
        header: ContentHeader {
            class_id: BASIC_CLASS_ID,
            body_size: 1001,
            properties: Default::default(),
        },
    });
    assert_fault(&mut b, 501, |v| {
        matches!(
            v,
            ProtocolViolation::BodyTooLarge {
                size: 1001,
                max: 1000,
                ..
            }
        )
    });
}

#[test]
fn heartbeat_on_a_channel_closes_with_501() {
    let mut b = open_broker();
    let ch = b.open_channel();
    b.frame(Frame::Heartbeat { channel: ch });
    assert_fault(
        &mut b,
        501,
        |v| matches!(v, ProtocolViolation::HeartbeatOnChannel(c) if *c == ch),
    );
}

#[test]
fn unexpected_method_closes_with_503() {
    let mut b = open_broker();
    let ch = b.open_channel();
    // A reply nobody asked for.
    b.method(ch, QueueDeclareOk::default());
    assert_fault(&mut b, 503, |v| {
        matches!(
            v,
            ProtocolViolation::UnexpectedMethod {
                method: "queue.declare-ok",
                ..
            }
        )
    });
}

#[test]
fn unknown_method_closes_with_503() {
    let mut b = open_broker();
    b.bytes(&[1, 0, 0, 0, 0, 0, 4, 0, 99, 0, 1, FRAME_END]);
    assert_fault(&mut b, 503, |v| {
        matches!(v, ProtocolViolation::Decode { .. })
    });
}

#[test]
fn truncated_method_arguments_close_with_501() {
    let mut b = open_broker();
    // connection.blocked whose shortstr claims 10 bytes but has 1.
    b.bytes(&[1, 0, 0, 0, 0, 0, 6, 0, 10, 0, 60, 10, b'x', FRAME_END]);
    assert_fault(&mut b, 501, |v| {
        matches!(
            v,
            ProtocolViolation::Decode {
                error: carehare_core::error::DecodeError::Truncated,
                ..
            }
        )
    });
}

#[test]
fn faults_fail_pending_operations() {
    let mut b = open_broker();
    let ch = b.open_channel();
    let op = b
        .conn
        .call(
            ch,
            BasicQos {
                prefetch_count: 10,
                ..Default::default()
            }
            .into(),
        )
        .unwrap();
    b.sent();
    b.bytes(b"\xff\xff\xff\xff\xff\xff\xff\xff");
    let events = b.events();
    assert!(
        matches!(&events[0], Event::Completed { op: o, result: Err(ChannelError::ConnectionClosed(ConnectionError::Protocol(_))), .. } if *o == op)
    );
}

// ---- Content ----------------------------------------------------------------------

#[test]
fn delivery_body_in_one_frame_is_zero_copy() {
    let mut b = open_broker();
    let ch = b.open_channel();
    let mut wire = BytesMut::new();
    Frame::Method {
        channel: ch,
        method: BasicDeliver {
            consumer_tag: s("ctag"),
            delivery_tag: 42,
            redelivered: true,
            exchange: s("ex"),
            routing_key: s("rk"),
        }
        .into(),
    }
    .encode(&mut wire);
    let props = BasicProperties {
        content_type: Some(s("text/plain")),
        delivery_mode: Some(2),
        ..Default::default()
    };
    encode_content(
        &mut wire,
        ch,
        BASIC_CLASS_ID,
        &props,
        b"hello world",
        131_072,
    );
    b.bytes(&wire);
    let events = b.events();
    let [Event::Delivery { channel, delivery }] = events.as_slice() else {
        panic!("{events:?}")
    };
    assert_eq!(*channel, ch);
    let ContentMethod::Deliver(d) = &delivery.method else {
        panic!()
    };
    assert_eq!(
        (d.delivery_tag, d.redelivered, d.consumer_tag.as_str()),
        (42, true, "ctag")
    );
    assert_eq!(*delivery.properties, props);
    assert_eq!(&delivery.body[..], b"hello world");
}

#[test]
fn multi_frame_and_empty_bodies() {
    let mut b = Broker::new(ConnectionConfig {
        frame_max: 4096,
        ..Default::default()
    });
    b.handshake();
    let ch = b.open_channel();
    let body: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
    let mut wire = BytesMut::new();
    Frame::Method {
        channel: ch,
        method: BasicDeliver::default().into(),
    }
    .encode(&mut wire);
    encode_content(
        &mut wire,
        ch,
        BASIC_CLASS_ID,
        &BasicProperties::default(),
        &body,
        4096,
    );
    Frame::Method {
        channel: ch,
        method: BasicReturn {
            reply_code: 312,
            reply_text: s("NO_ROUTE"),
            ..Default::default()
        }
        .into(),
    }
    .encode(&mut wire);
    encode_content(
        &mut wire,
        ch,
        BASIC_CLASS_ID,
        &BasicProperties::default(),
        b"",
        4096,
    );
    // Feed it in awkward pieces.
    for piece in wire.chunks(333) {
        b.bytes(piece);
    }
    let events = b.events();
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(
        matches!(&events[0], Event::Delivery { delivery, .. } if delivery.body[..] == body[..])
    );
    assert!(
        matches!(&events[1], Event::Delivery { delivery, .. } if delivery.body.is_empty() && matches!(&delivery.method, ContentMethod::Return(r) if r.reply_code == 312))
    );
}

#[test]
fn basic_get_completes_with_the_message_or_empty() {
    let mut b = open_broker();
    let ch = b.open_channel();
    let get = b
        .conn
        .call(
            ch,
            BasicGet {
                queue: s("q"),
                ..Default::default()
            }
            .into(),
        )
        .unwrap();
    let empty = b
        .conn
        .call(
            ch,
            BasicGet {
                queue: s("q"),
                ..Default::default()
            }
            .into(),
        )
        .unwrap();
    b.sent();
    let mut wire = BytesMut::new();
    Frame::Method {
        channel: ch,
        method: BasicGetOk {
            delivery_tag: 1,
            message_count: 0,
            ..Default::default()
        }
        .into(),
    }
    .encode(&mut wire);
    encode_content(
        &mut wire,
        ch,
        BASIC_CLASS_ID,
        &BasicProperties::default(),
        b"got",
        131_072,
    );
    Frame::Method {
        channel: ch,
        method: BasicGetEmpty::default().into(),
    }
    .encode(&mut wire);
    b.bytes(&wire);
    let events = b.events();
    assert!(
        matches!(&events[0], Event::Completed { op, result: Ok(Reply::Message(d)), .. } if *op == get && &d.body[..] == b"got")
    );
    assert!(
        matches!(&events[1], Event::Completed { op, result: Ok(Reply::Method(Method::BasicGetEmpty(_))), .. } if *op == empty)
    );
}

// ---- Publishing and confirms -------------------------------------------------------

#[test]
fn transmit_len_counts_every_queued_byte_copied_or_not() {
    // frame_max as negotiated by default (128 KiB): body frames are large
    // enough to be sent as slices.
    let mut b = open_broker();
    let ch = b.open_channel();
    b.sent();
    assert_eq!(b.conn.transmit_len(), 0);
    let publish = BasicPublish {
        exchange: s("ex"),
        routing_key: s("rk"),
        ..Default::default()
    };
    let props = BasicProperties::default();
    // A small body is copied into the write buffer; a large one is queued
    // as slices of the caller's `Bytes`.
    b.conn.publish(ch, &publish, &props, b"small").unwrap();
    let large = Bytes::from(vec![7u8; 3 * carehare_core::frame::ZERO_COPY_MIN]);
    b.conn.publish_bytes(ch, &publish, &props, &large).unwrap();
    b.conn.publish(ch, &publish, &props, b"after").unwrap();
    let queued = b.conn.transmit_len();
    assert!(queued > large.len(), "{queued}");
    let mut chunks = std::collections::VecDeque::new();
    assert_eq!(b.conn.poll_transmit_chunks(&mut chunks), queued);
    assert!(chunks.len() > 1, "the large body was not copied");
    assert_eq!(b.conn.transmit_len(), 0);
    assert!(!b.conn.has_transmit());
}

#[test]
fn publish_splits_bodies_and_numbers_confirms() {
    let mut b = Broker::new(ConnectionConfig {
        frame_max: 4096,
        ..Default::default()
    });
    b.handshake();
    let ch = b.open_channel();
    let publish = BasicPublish {
        exchange: s("ex"),
        routing_key: s("rk"),
        ..Default::default()
    };
    assert_eq!(
        b.conn
            .publish(ch, &publish, &BasicProperties::default(), b"unconfirmed"),
        Ok(None)
    );
    b.sent();
    let op = b.conn.call(ch, ConfirmSelect::default().into()).unwrap();
    let body = vec![9u8; 9000];
    assert_eq!(
        b.conn
            .publish(ch, &publish, &BasicProperties::default(), &body),
        Ok(Some(1))
    );
    assert_eq!(
        b.conn
            .publish(ch, &publish, &BasicProperties::default(), b"x"),
        Ok(Some(2))
    );
    let frames = b.sent();
    let bodies: Vec<usize> = frames
        .iter()
        .filter_map(|f| match f {
            Frame::Body { payload, .. } => Some(payload.len()),
            _ => None,
        })
        .collect();
    assert_eq!(bodies, vec![4088, 4088, 824, 1]);
    b.method(ch, ConfirmSelectOk {});
    b.method(
        ch,
        BasicAck {
            delivery_tag: 1,
            multiple: false,
        },
    );
    b.method(
        ch,
        BasicNack {
            delivery_tag: 2,
            multiple: true,
            requeue: false,
        },
    );
    let events = b.events();
    assert!(matches!(&events[0], Event::Completed { op: o, .. } if *o == op));
    assert_eq!(
        events[1],
        Event::Ack {
            channel: ch,
            delivery_tag: 1,
            multiple: false
        }
    );
    assert_eq!(
        events[2],
        Event::Nack {
            channel: ch,
            delivery_tag: 2,
            multiple: true
        }
    );
}

#[test]
fn oversized_method_is_refused_locally() {
    let mut b = Broker::new(ConnectionConfig {
        frame_max: 4096,
        ..Default::default()
    });
    b.handshake();
    let ch = b.open_channel();
    let mut args = FieldTable::default();
    args.insert("big".into(), AMQPValue::LongString(vec![0u8; 5000].into()));
    let declare = QueueDeclare {
        queue: s("q"),
        arguments: args.clone(),
        ..Default::default()
    };
    assert!(matches!(
        b.conn.call(ch, declare.into()),
        Err(UsageError::FrameTooLarge { max: 4096, .. })
    ));
    let props = BasicProperties {
        headers: Some(args),
        ..Default::default()
    };
    assert!(matches!(
        b.conn.publish(ch, &BasicPublish::default(), &props, b""),
        Err(UsageError::FrameTooLarge { .. })
    ));
    assert!(b.sent().is_empty(), "nothing was queued");
    assert!(b.conn.is_open());
}

#[test]
fn usage_errors_are_immediate_and_harmless() {
    let mut b = open_broker();
    let ch = b.open_channel();
    assert_eq!(
        b.conn.call(ch, ConnectionOpen::default().into()),
        Err(UsageError::MethodNotAllowed("connection.open"))
    );
    assert_eq!(
        b.conn.call(ch, BasicDeliver::default().into()),
        Err(UsageError::MethodNotAllowed("basic.deliver"))
    );
    assert_eq!(
        b.conn.call(
            ch,
            QueueDeclare {
                no_wait: true,
                ..Default::default()
            }
            .into()
        ),
        Err(UsageError::WrongCommand {
            method: "queue.declare",
            expects_reply: false
        })
    );
    assert_eq!(
        b.conn.send(ch, QueueDeclare::default().into()),
        Err(UsageError::WrongCommand {
            method: "queue.declare",
            expects_reply: true
        })
    );
    assert_eq!(
        b.conn.send(99, BasicAck::default().into()),
        Err(UsageError::ChannelNotOpen(99))
    );
    assert!(b.sent().is_empty());
    b.conn
        .send(
            ch,
            BasicAck {
                delivery_tag: 3,
                multiple: true,
            }
            .into(),
        )
        .unwrap();
    assert_eq!(
        b.expect_one(),
        (
            ch,
            BasicAck {
                delivery_tag: 3,
                multiple: true
            }
            .into()
        )
    );
}

// ---- RabbitMQ extensions -----------------------------------------------------------

#[test]
fn blocked_unblocked_and_update_secret() {
    let mut b = open_broker();
    b.method(
        0,
        ConnectionBlocked {
            reason: s("low on memory"),
        },
    );
    b.method(0, ConnectionUnblocked {});
    assert_eq!(
        b.events(),
        vec![
            Event::Blocked {
                reason: "low on memory".into()
            },
            Event::Unblocked
        ]
    );
    let op = b
        .conn
        .update_secret(Bytes::from_static(b"new-token"), "refresh")
        .unwrap();
    assert!(
        matches!(b.expect_one(), (0, Method::ConnectionUpdateSecret(u)) if &u.new_secret.0[..] == b"new-token")
    );
    b.method(0, ConnectionUpdateSecretOk {});
    assert!(
        matches!(b.events().as_slice(), [Event::Completed { op: o, channel: 0, result: Ok(_) }] if *o == op)
    );
}

/// With `blocked_timeout`, a `connection.blocked` that is never lifted ends
/// the connection at `blocked_since + blocked_timeout` (a second `blocked`
/// does not restart the clock), failing what waits; the server is told
/// with a `connection.close` whose `close-ok` is not waited for. An
/// `unblocked` in time stops the clock, and without the option nothing
/// ever fires.
#[test]
fn a_block_longer_than_blocked_timeout_ends_the_connection() {
    const LIMIT: Duration = Duration::from_secs(5);
    let blocked = || ConnectionBlocked {
        reason: s("low on memory"),
    };
    // No heartbeat, so that the blocked timeout is the only timer.
    let no_heartbeat = ConnectionTune {
        heartbeat: 0,
        ..carehare_core::testing::server_tune()
    };
    let mut b = Broker::new(ConnectionConfig {
        heartbeat: 0,
        blocked_timeout: Some(LIMIT),
        ..Default::default()
    });
    b.handshake_with(no_heartbeat.clone());
    // Lifted in time: nothing happens.
    b.method(0, blocked());
    assert!(b.conn.poll_timeout().is_some());
    b.advance(LIMIT / 2);
    b.method(0, ConnectionUnblocked {});
    assert_eq!(b.conn.poll_timeout(), None);
    b.advance(LIMIT * 2);
    assert!(b.conn.is_open());
    let _ = b.events();
    // Never lifted: the first blocked counts.
    let ch = b.open_channel();
    let op = b.conn.call(ch, QueueDeclare::default().into()).unwrap();
    let _ = b.sent();
    b.method(0, blocked());
    let since = b.now;
    b.advance(LIMIT / 2);
    b.method(0, blocked());
    assert_eq!(b.conn.poll_timeout(), Some(since + LIMIT));
    b.advance(LIMIT / 2 - Duration::from_millis(1));
    assert!(b.conn.is_open());
    b.advance(Duration::from_millis(1));
    assert!(b.conn.is_closed(), "no close-ok is waited for");
    let text = b.expect_connection_close(200);
    assert!(text.contains("blocked"), "{text}");
    let events = b.events();
    assert_eq!(
        closed_with(&events),
        &ConnectionError::BlockedTimeout(LIMIT)
    );
    assert!(events.iter().any(|e| matches!(e,
        Event::Completed { op: o, result: Err(ChannelError::ConnectionClosed(ConnectionError::BlockedTimeout(_))), .. } if *o == op
    )));
    // Without the option, a block lasts as long as the server wants.
    let mut b = Broker::new(ConnectionConfig {
        heartbeat: 0,
        ..Default::default()
    });
    b.handshake_with(no_heartbeat);
    b.method(0, blocked());
    assert_eq!(b.conn.poll_timeout(), None);
    b.advance(Duration::from_secs(3600));
    assert!(b.conn.is_open());
}

#[test]
fn server_consumer_cancel_and_flow() {
    let mut b = open_broker();
    let ch = b.open_channel();
    b.method(
        ch,
        BasicCancel {
            consumer_tag: s("c1"),
            no_wait: true,
        },
    );
    b.method(ch, ChannelFlow { active: false });
    assert_eq!(b.expect_one(), (ch, ChannelFlowOk { active: false }.into()));
    assert_eq!(
        b.events(),
        vec![
            Event::ConsumerCancelled {
                channel: ch,
                consumer_tag: s("c1")
            },
            Event::Flow {
                channel: ch,
                active: false
            },
        ]
    );
}

// ---- The harness's pieces agree with the broker ----------------------------

#[test]
fn handshake_frames_fed_at_once_open_the_connection() {
    use carehare_core::testing::{ClientOutput, handshake_frames, server_tune};
    let now = std::time::Instant::now();
    let mut conn = carehare_core::Connection::new(ConnectionConfig::default(), now);
    conn.handle_input(now, &handshake_frames(server_tune()));
    assert!(conn.is_open());
    let mut out = ClientOutput::new();
    out.drain(&mut conn);
    out.expect_protocol_header();
    let names: Vec<&str> = std::iter::from_fn(|| out.next_method())
        .map(|(_, m)| m.name())
        .collect();
    assert_eq!(
        names,
        [
            "connection.start-ok",
            "connection.tune-ok",
            "connection.open"
        ]
    );
    assert!(out.partial().is_empty());
}

#[test]
fn open_connection_leaves_nothing_to_poll() {
    use carehare_core::testing::{ClientOutput, content_bytes, open_connection_with};
    let now = std::time::Instant::now();
    let tune = ConnectionTune {
        channel_max: 10,
        frame_max: 131_072,
        heartbeat: 0,
    };
    let mut conn = open_connection_with(ConnectionConfig::default(), now, tune);
    assert!(conn.is_open());
    assert_eq!(conn.tuning().map(|t| t.channel_max), Some(10));
    assert!(!conn.has_transmit());
    assert_eq!(conn.poll_event(), None);
    // A message in one go, then a fault the client answers with a close.
    let (ch, _) = conn.open_channel().expect("open_channel");
    conn.handle_input(
        now,
        &carehare_core::testing::method_bytes(ch, ChannelOpenOk::default()),
    );
    let deliver = BasicDeliver {
        delivery_tag: 1,
        ..Default::default()
    };
    let props = BasicProperties::default();
    conn.handle_input(now, &content_bytes(ch, deliver, &props, b"hi", 131_072));
    let events: Vec<Event> = std::iter::from_fn(|| conn.poll_event()).collect();
    assert!(
        matches!(events.as_slice(), [Event::Completed { .. }, Event::Delivery { delivery, .. }] if &delivery.body[..] == b"hi"),
        "{events:?}"
    );
    conn.handle_input(
        now,
        &carehare_core::testing::method_bytes(ch, BasicQosOk {}),
    );
    let mut out = ClientOutput::new();
    out.drain(&mut conn);
    assert!(matches!(out.next_method(), Some((c, Method::ChannelOpen(_))) if c == ch));
    out.expect_connection_close(503);
}

/// The core on one side of a blocking "transport", so that
/// `serve_handshake` can be checked without a socket.
struct Loopback {
    conn: carehare_core::Connection,
    now: std::time::Instant,
}

impl std::io::Read for Loopback {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // Reads are at most 4096 bytes; the handshake's frames are smaller.
        let mut out = Vec::new();
        self.conn.poll_transmit(&mut out);
        assert!(out.len() <= buf.len(), "a larger read than the test allows");
        buf[..out.len()].copy_from_slice(&out);
        Ok(out.len())
    }
}

impl std::io::Write for Loopback {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.conn.handle_input(self.now, data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn serve_handshake_opens_a_client_over_a_transport() {
    use carehare_core::testing::{ClientOutput, serve_handshake, server_tune};
    let now = std::time::Instant::now();
    let mut io = Loopback {
        conn: carehare_core::Connection::new(ConnectionConfig::default(), now),
        now,
    };
    let mut from_client = ClientOutput::new();
    serve_handshake(&mut io, &mut from_client, server_tune()).expect("in memory");
    assert!(io.conn.is_open());
    assert!(from_client.partial().is_empty());
}

// ---- Coalescing publishes ---------------------------------------------------

/// A broker whose connection holds publishes back while `min_unconfirmed`
/// written ones wait, and a channel in confirm mode on it.
fn coalescing_broker(min_unconfirmed: u64, max_bytes: usize) -> (Broker, u16) {
    confirming_broker(Some(Coalescing {
        min_unconfirmed,
        max_bytes,
        max_delay: Duration::from_millis(10),
    }))
}

/// A broker whose connection coalesces as `coalescing` says, and a channel
/// in confirm mode on it.
fn confirming_broker(coalescing: Option<Coalescing>) -> (Broker, u16) {
    let mut b = Broker::new(ConnectionConfig {
        coalescing,
        ..Default::default()
    });
    b.handshake();
    let ch = b.open_channel();
    b.conn
        .call(ch, ConfirmSelect::default().into())
        .expect("confirm.select");
    b.sent();
    b.method(ch, ConfirmSelectOk {});
    b.events();
    (b, ch)
}

fn publish_n(b: &mut Broker, ch: u16, n: usize, body: &[u8]) {
    let publish = BasicPublish {
        routing_key: s("q"),
        ..Default::default()
    };
    for _ in 0..n {
        b.conn
            .publish(ch, &publish, &BasicProperties::default(), body)
            .expect("publish");
    }
}

fn publishes(frames: &[Frame]) -> usize {
    frames
        .iter()
        .filter(|f| {
            matches!(
                f,
                Frame::Method {
                    method: Method::BasicPublish(_),
                    ..
                }
            )
        })
        .count()
}

/// Publishes four (written at once), then one more with `body`, which
/// the four hold back.
fn hold_one(b: &mut Broker, ch: u16, body: &[u8]) {
    publish_n(b, ch, 4, b"m");
    assert_eq!(publishes(&b.sent()), 4);
    publish_n(b, ch, 1, body);
    assert_eq!(publishes(&b.sent()), 0, "held");
}

fn ack(b: &mut Broker, ch: u16, delivery_tag: u64, multiple: bool) {
    b.method(
        ch,
        BasicAck {
            delivery_tag,
            multiple,
        },
    );
}

#[test]
fn publishes_wait_while_enough_written_ones_await_their_confirms() {
    let (mut b, ch) = coalescing_broker(4, 10_000);
    // Nothing written is unconfirmed yet: these go at once.
    publish_n(&mut b, ch, 4, b"m");
    assert!(b.conn.has_transmit());
    assert_eq!(publishes(&b.sent()), 4);
    // Four written wait for their confirms: the next ones are held.
    publish_n(&mut b, ch, 2, b"m");
    assert!(!b.conn.has_transmit(), "held, so nothing to give");
    assert!(b.conn.transmit_len() > 0);
    assert_eq!(publishes(&b.sent()), 0);
    assert_eq!(
        b.conn.poll_timeout(),
        Some(b.now + Duration::from_millis(10))
    );
    assert!(!b.conn.hold_ended());
    // A confirm leaves three written unconfirmed: the hold ends.
    ack(&mut b, ch, 1, false);
    assert!(b.conn.has_transmit());
    assert_eq!(publishes(&b.sent()), 2);
    // Once handed out, the hold's deadline is gone from the timer.
    assert!(b.conn.poll_timeout() > Some(b.now + Duration::from_secs(1)));
}

#[test]
fn while_publishes_are_held_input_may_wait_for_the_ack_frames_of_half_the_margin() {
    let (mut b, ch) = coalescing_broker(4, 10_000);
    assert_eq!(b.conn.read_low_water(), 1, "nothing held");
    // A hundred go at once: none was written before them.
    publish_n(&mut b, ch, 100, b"m");
    assert_eq!(publishes(&b.sent()), 100);
    publish_n(&mut b, ch, 1, b"m");
    assert_eq!(publishes(&b.sent()), 0, "held");
    assert_eq!(
        b.conn.read_low_water(),
        1,
        "no confirm yet: how many one ack frame settles is not known"
    );
    // One frame confirms ten: 90 written wait, 86 above min_unconfirmed.
    ack(&mut b, ch, 10, true);
    assert_eq!(publishes(&b.sent()), 0, "still held");
    // Half of 86 is 43 confirms: four frames of ten, 84 bytes, so 64.
    assert_eq!(b.conn.read_low_water(), 64);
    // A frame of one lowers the batch by an eighth, to 9: 85 wait, 81
    // above, 40 confirms, four frames again.
    ack(&mut b, ch, 11, false);
    b.sent();
    assert_eq!(b.conn.read_low_water(), 64);
    // A frame of 60 raises it to 60: no whole frame within half the margin.
    ack(&mut b, ch, 71, true);
    b.sent();
    assert_eq!(b.conn.read_low_water(), 1);
    // The hold's end at max_delay writes what it held, and the mark is 1
    // with nothing held.
    let (mut b, ch) = coalescing_broker(4, 10_000);
    publish_n(&mut b, ch, 100, b"m");
    b.sent();
    ack(&mut b, ch, 1, false);
    publish_n(&mut b, ch, 1, b"m");
    assert_eq!(publishes(&b.sent()), 0);
    assert_eq!(b.conn.read_low_water(), 512, "47 frames of one, 987 bytes");
    b.advance(Duration::from_millis(10));
    assert_eq!(b.conn.read_low_water(), 1, "the hold is over, unhanded");
    assert_eq!(publishes(&b.sent()), 1);
    assert_eq!(b.conn.read_low_water(), 1);
    // So does anything queued that may not wait, before it is written.
    publish_n(&mut b, ch, 1, b"m");
    b.sent();
    assert!(b.conn.read_low_water() > 1);
    b.conn.call(ch, BasicQos::default().into()).unwrap();
    assert_eq!(b.conn.read_low_water(), 1);
}

#[test]
fn the_read_low_water_mark_stays_far_below_a_socket_buffer() {
    let (mut b, ch) = coalescing_broker(4, 1 << 30);
    publish_n(&mut b, ch, 100_000, b"m");
    b.sent();
    ack(&mut b, ch, 1, false);
    publish_n(&mut b, ch, 1, b"m");
    assert_eq!(publishes(&b.sent()), 0);
    assert_eq!(b.conn.read_low_water(), 8 * 1024);
    // Without coalescing nothing is held, so nothing waits.
    let (mut b, ch) = confirming_broker(None);
    publish_n(&mut b, ch, 1000, b"m");
    b.sent();
    ack(&mut b, ch, 1, false);
    publish_n(&mut b, ch, 1, b"m");
    assert_eq!(publishes(&b.sent()), 1);
    assert_eq!(b.conn.read_low_water(), 1);
}

#[test]
fn a_hold_that_no_confirm_ends_lasts_max_delay() {
    let (mut b, ch) = coalescing_broker(4, 10_000);
    hold_one(&mut b, ch, b"m");
    b.advance(Duration::from_millis(9));
    // More publishes join the hold; it still ends when the first one's does.
    publish_n(&mut b, ch, 1, b"m");
    assert_eq!(publishes(&b.sent()), 0);
    b.advance(Duration::from_millis(1));
    assert_eq!(publishes(&b.sent()), 2);
}

#[test]
fn anything_but_a_publish_ends_a_hold_and_keeps_its_place() {
    let (mut b, ch) = coalescing_broker(4, 10_000);
    hold_one(&mut b, ch, b"m");
    // A further publish doesn't end it: the driver needn't be woken.
    publish_n(&mut b, ch, 1, b"m");
    assert!(!b.conn.hold_ended());
    b.conn.call(ch, BasicQos::default().into()).unwrap();
    assert!(b.conn.hold_ended(), "the driver must be woken for it");
    let frames = b.sent();
    assert_eq!(publishes(&frames), 2);
    assert!(matches!(
        frames.last(),
        Some(Frame::Method {
            method: Method::BasicQos(_),
            ..
        })
    ));
}

#[test]
fn a_hold_ends_at_max_bytes() {
    let (mut b, ch) = coalescing_broker(4, 1000);
    hold_one(&mut b, ch, &[0; 400]);
    publish_n(&mut b, ch, 1, &[0; 400]);
    assert!(!b.conn.hold_ended(), "about 860 bytes queued");
    publish_n(&mut b, ch, 1, &[0; 400]);
    assert!(b.conn.hold_ended(), "over 1000 bytes queued");
    assert_eq!(publishes(&b.sent()), 3);
}

#[test]
fn publishes_on_two_channels_or_without_confirms_are_not_held() {
    let (mut b, ch) = coalescing_broker(4, 10_000);
    let other = b.open_channel();
    hold_one(&mut b, ch, b"m");
    publish_n(&mut b, other, 1, b"m");
    assert_eq!(publishes(&b.sent()), 2);
    // A channel not in confirm mode has nothing unconfirmed to wait for.
    publish_n(&mut b, other, 10, b"m");
    assert_eq!(publishes(&b.sent()), 10);
}

#[test]
fn confirms_out_of_order_never_count_more_unconfirmed_than_wait() {
    let (mut b, ch) = coalescing_broker(4, 10_000);
    publish_n(&mut b, ch, 8, b"m");
    b.sent();
    // Publish 8 is confirmed first: the count goes by the highest tag, so
    // it may count too few waiting (1..=7 still do), never too many.
    ack(&mut b, ch, 8, false);
    publish_n(&mut b, ch, 1, b"m");
    assert_eq!(publishes(&b.sent()), 1);
}

#[test]
fn without_coalescing_every_publish_goes_at_once() {
    let (mut b, ch) = confirming_broker(None);
    publish_n(&mut b, ch, 1000, b"m");
    assert_eq!(publishes(&b.sent()), 1000);
    publish_n(&mut b, ch, 1, b"m");
    assert_eq!(publishes(&b.sent()), 1);
}

/// A broker whose connection coalesces with a 10 ms deadline, and a
/// channel consuming with `prefetch` (`None`: consuming before any qos).
fn consuming_broker(prefetch: Option<u16>) -> (Broker, u16) {
    let mut b = Broker::new(ConnectionConfig {
        coalescing: Some(Coalescing::default()),
        ..Default::default()
    });
    b.handshake();
    let ch = b.open_channel();
    let qos = BasicQos {
        prefetch_count: prefetch.unwrap_or(0),
        ..Default::default()
    };
    let consume = BasicConsume {
        queue: s("q"),
        ..Default::default()
    };
    if prefetch.is_some() {
        b.conn.call(ch, qos.into()).expect("basic.qos");
    }
    b.conn.call(ch, consume.into()).expect("basic.consume");
    b.sent();
    b.events();
    (b, ch)
}

/// RabbitMQ delivers tags `tags`, each with an empty body.
fn deliver(b: &mut Broker, ch: u16, tags: std::ops::RangeInclusive<u64>) {
    for delivery_tag in tags {
        b.method(
            ch,
            BasicDeliver {
                consumer_tag: s("ctag"),
                delivery_tag,
                ..Default::default()
            },
        );
        b.frame(Frame::Header {
            channel: ch,
            header: ContentHeader {
                class_id: BASIC_CLASS_ID,
                body_size: 0,
                properties: Default::default(),
            },
        });
    }
}

fn settle(b: &mut Broker, ch: u16, delivery_tag: u64, multiple: bool) {
    let ack = BasicAck {
        delivery_tag,
        multiple,
    };
    b.conn.send(ch, ack.into()).expect("basic.ack");
}

/// The tags of the acks among `frames`.
fn acks(frames: &[Frame]) -> Vec<u64> {
    frames
        .iter()
        .filter_map(|f| match f {
            Frame::Method {
                method: Method::BasicAck(a),
                ..
            } => Some(a.delivery_tag),
            _ => None,
        })
        .collect()
}

#[test]
fn acks_wait_while_under_a_quarter_of_the_prefetch_is_unsettled() {
    let (mut b, ch) = consuming_broker(Some(20));
    deliver(&mut b, ch, 1..=3);
    settle(&mut b, ch, 3, true);
    assert!(!b.conn.has_transmit(), "3 unsettled of 20: held");
    assert_eq!(acks(&b.sent()), [] as [u64; 0]);
    assert_eq!(
        b.conn.poll_timeout(),
        Some(b.now + Duration::from_millis(10))
    );
    deliver(&mut b, ch, 4..=4);
    settle(&mut b, ch, 4, false);
    assert_eq!(acks(&b.sent()), [] as [u64; 0], "4 unsettled: still held");
    // The fifth delivery makes a quarter of the prefetch unsettled by what was
    // written: RabbitMQ could stop soon, so the acks go.
    deliver(&mut b, ch, 5..=5);
    assert!(b.conn.has_transmit());
    assert_eq!(acks(&b.sent()), [3, 4]);
    // Counted from what was written: tags 1 to 4 are settled.
    deliver(&mut b, ch, 6..=8);
    settle(&mut b, ch, 8, true);
    assert_eq!(acks(&b.sent()), [] as [u64; 0], "5 to 8 unsettled: held");
    deliver(&mut b, ch, 9..=9);
    assert_eq!(acks(&b.sent()), [8]);
}

#[test]
fn a_held_ack_goes_after_max_delay_or_with_anything_else() {
    let (mut b, ch) = consuming_broker(Some(300));
    deliver(&mut b, ch, 1..=1);
    settle(&mut b, ch, 1, false);
    assert_eq!(acks(&b.sent()), [] as [u64; 0], "held from now");
    b.advance(Duration::from_millis(9));
    assert_eq!(acks(&b.sent()), [] as [u64; 0]);
    b.advance(Duration::from_millis(1));
    assert_eq!(acks(&b.sent()), [1], "the queue went quiet: 10 ms at most");

    deliver(&mut b, ch, 2..=2);
    settle(&mut b, ch, 2, false);
    assert_eq!(acks(&b.sent()), [] as [u64; 0]);
    assert!(!b.conn.hold_ended());
    let cancel = BasicCancel {
        consumer_tag: s("ctag"),
        ..Default::default()
    };
    b.conn.call(ch, cancel.into()).expect("basic.cancel");
    assert!(b.conn.hold_ended(), "the driver must be woken for it");
    let frames = b.sent();
    assert_eq!(
        acks(&frames),
        [2],
        "the ack keeps its place before the cancel"
    );
    assert!(matches!(
        frames.last(),
        Some(Frame::Method {
            method: Method::BasicCancel(_),
            ..
        })
    ));
}

#[test]
fn acks_are_not_held_without_a_known_prefetch_or_with_a_small_one() {
    // The server's default prefetch applies: how much room is left is not
    // known.
    let (mut b, ch) = consuming_broker(None);
    deliver(&mut b, ch, 1..=1);
    settle(&mut b, ch, 1, false);
    assert_eq!(acks(&b.sent()), [1]);
    // Prefetch 1: RabbitMQ sends nothing more until this ack.
    let (mut b, ch) = consuming_broker(Some(1));
    deliver(&mut b, ch, 1..=1);
    settle(&mut b, ch, 1, false);
    assert_eq!(acks(&b.sent()), [1]);
    // Prefetch 7: a quarter of it rounds down to the one delivered.
    let (mut b, ch) = consuming_broker(Some(7));
    deliver(&mut b, ch, 1..=1);
    settle(&mut b, ch, 1, false);
    assert_eq!(acks(&b.sent()), [1]);
}

#[test]
fn acks_out_of_order_never_count_fewer_unsettled_than_the_server() {
    let (mut b, ch) = consuming_broker(Some(20));
    deliver(&mut b, ch, 1..=4);
    // Tag 2 alone leaves 1 unsettled: the count stays at 0 settled, so
    // four are unsettled, not three.
    settle(&mut b, ch, 2, false);
    assert_eq!(acks(&b.sent()), [] as [u64; 0], "4 of 20: held");
    deliver(&mut b, ch, 5..=5);
    assert_eq!(acks(&b.sent()), [2], "5 unsettled by the written count");
}

#[test]
fn acks_on_two_channels_or_beside_a_publish_are_not_held() {
    let (mut b, ch) = consuming_broker(Some(300));
    let (other, _) = {
        let other = b.open_channel();
        let qos = BasicQos {
            prefetch_count: 300,
            ..Default::default()
        };
        b.conn.call(other, qos.into()).expect("basic.qos");
        b.sent();
        (other, ())
    };
    deliver(&mut b, ch, 1..=1);
    deliver(&mut b, other, 1..=1);
    settle(&mut b, ch, 1, false);
    assert_eq!(acks(&b.sent()), [] as [u64; 0]);
    settle(&mut b, other, 1, false);
    assert_eq!(acks(&b.sent()), [1, 1], "two channels");
    deliver(&mut b, ch, 2..=2);
    settle(&mut b, ch, 2, false);
    publish_n(&mut b, ch, 1, b"m");
    let frames = b.sent();
    assert_eq!((acks(&frames), publishes(&frames)), (vec![2], 1));
}

#[test]
fn without_coalescing_every_ack_goes_at_once() {
    let mut b = Broker::new(ConnectionConfig {
        coalescing: None,
        ..Default::default()
    });
    b.handshake();
    let ch = b.open_channel();
    let qos = BasicQos {
        prefetch_count: 300,
        ..Default::default()
    };
    b.conn.call(ch, qos.into()).expect("basic.qos");
    b.sent();
    deliver(&mut b, ch, 1..=1);
    settle(&mut b, ch, 1, false);
    assert_eq!(acks(&b.sent()), [1]);
}
