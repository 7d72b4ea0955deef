//! The state's rules, driven by scripted server frames (no broker, no
//! socket): confirms, returns, blocking, the prefetch bound, closing.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use carehare_core::ConnectionConfig;
use carehare_core::error::ConnectionError;
use carehare_core::method::*;
use carehare_core::properties::BasicProperties;
use carehare_core::testing;

use super::{Inner, Shared};
use crate::error::{Error, short};
use crate::handles::confirmation::Confirmation;

pub(super) fn feed(inner: &mut Inner, channel: u16, method: impl Into<Method>) {
    let bytes = testing::method_bytes(channel, method);
    inner.input(Instant::now(), BytesMut::from(&bytes[..]));
}

fn feed_content(inner: &mut Inner, channel: u16, method: impl Into<Method>, body: &'static [u8]) {
    let props = BasicProperties::default();
    let bytes = testing::content_bytes(channel, method, &props, body, 131_072);
    inner.input(Instant::now(), BytesMut::from(&bytes[..]));
}

/// Everything the client queued for the socket, as bytes.
pub(super) fn sent(inner: &mut Inner) -> BytesMut {
    let mut chunks = VecDeque::new();
    inner.poll_transmit(&mut chunks);
    let mut out = BytesMut::new();
    for c in chunks {
        out.extend_from_slice(&c);
    }
    out
}

pub(super) fn open_shared() -> Arc<Shared> {
    let conn = testing::open_connection(ConnectionConfig::default(), Instant::now());
    let (shared, _connected) = Shared::new(
        conn,
        crate::metrics::Meter::default(),
        tracing::Span::none(),
    );
    // The handshake's frames are the harness's business, not ours.
    sent(&mut shared.lock());
    shared
}

fn publish(
    shared: &Arc<Shared>,
    exchange: &str,
    mandatory: bool,
    body: &'static str,
) -> Confirmation {
    Confirmation::publish(
        shared,
        Bytes::from_static(body.as_bytes()),
        exchange,
        if mandatory { "nowhere" } else { "q" },
        &BasicProperties::default(),
        mandatory,
        None,
    )
}

fn settled(c: &mut Confirmation) -> Option<Result<(), Error>> {
    let waker = futures_util::task::noop_waker();
    match Pin::new(c).poll(&mut Context::from_waker(&waker)) {
        Poll::Ready(r) => Some(r),
        Poll::Pending => None,
    }
}

/// The publish channel of `exchange`, answered by the server: open, and in
/// confirm mode.
fn confirming_channel(inner: &mut Inner, exchange: &str) -> u16 {
    let ch = inner.confirms.channel_of(exchange).unwrap();
    feed(inner, ch, ChannelOpenOk::default());
    feed(inner, ch, ConfirmSelectOk {});
    ch
}

/// The server confirms `delivery_tag` (and every earlier one if `multiple`).
fn ack(delivery_tag: u64, multiple: bool) -> BasicAck {
    BasicAck {
        delivery_tag,
        multiple,
    }
}

/// The server refuses `delivery_tag` (and every earlier one if `multiple`).
fn nack(delivery_tag: u64, multiple: bool) -> BasicNack {
    BasicNack {
        delivery_tag,
        multiple,
        requeue: false,
    }
}

/// A connection whose metrics go to `counters`.
fn open_metered(counters: &Arc<crate::metrics::Counters>, now: Instant) -> Arc<Shared> {
    let conn = testing::open_connection(ConnectionConfig::default(), now);
    let (shared, _connected) = Shared::new(
        conn,
        crate::metrics::Meter::new(Some(counters.clone())),
        tracing::Span::none(),
    );
    shared
}

#[test]
fn each_publish_names_its_own_exchange_and_routing_key_and_a_bad_name_fails_alone() {
    let shared = open_shared();
    let publish_to = |exchange: &str, routing_key: &str| {
        Confirmation::publish(
            &shared,
            Bytes::from_static(b"x"),
            exchange,
            routing_key,
            &BasicProperties::default(),
            false,
            None,
        )
    };
    let mut good = vec![publish_to("", "q1"), publish_to("", "q2")];
    let mut too_long = publish_to("", &"k".repeat(256));
    good.push(publish_to("ex", "q2"));
    good.push(publish_to("", "q1"));
    assert!(matches!(settled(&mut too_long), Some(Err(Error::Usage(_)))));
    for c in &mut good {
        assert!(settled(c).is_none(), "each awaits its confirm");
    }
    let mut inner = shared.lock();
    let mut out = sent(&mut inner);
    let mut names = Vec::new();
    while let Some(frame) = carehare_core::frame::decode_frame(&mut out, u32::MAX).unwrap() {
        if let carehare_core::frame::Frame::Method {
            channel,
            method: Method::BasicPublish(p),
        } = frame
        {
            assert!(!p.mandatory);
            // Each exchange has a channel of its own, and each publish
            // goes on its exchange's.
            let exchange = p.exchange.to_string();
            assert_eq!(Some(channel), inner.confirms.channel_of(&exchange));
            names.push((exchange, p.routing_key.to_string()));
        }
    }
    let expected = [("", "q1"), ("", "q2"), ("ex", "q2"), ("", "q1")];
    assert_eq!(names, expected.map(|(e, k)| (e.to_string(), k.to_string())));
    assert_ne!(
        inner.confirms.channel_of(""),
        inner.confirms.channel_of("ex")
    );
}

#[test]
fn multiple_acks_and_nacks_settle_every_covered_publish() {
    let shared = open_shared();
    let mut c: Vec<_> = (0..5).map(|_| publish(&shared, "ex", false, "x")).collect();
    let mut inner = shared.lock();
    let ch = inner.confirms.channel_of("ex").unwrap();
    assert_eq!(inner.confirms.unsettled(ch), 5, "one channel per exchange");
    confirming_channel(&mut inner, "ex");
    // ack up to 2 (multiple), nack 3 alone, then nack up to 5 (multiple).
    feed(&mut inner, ch, ack(2, true));
    assert!(matches!(settled(&mut c[0]), Some(Ok(()))));
    assert!(matches!(settled(&mut c[1]), Some(Ok(()))));
    assert!(settled(&mut c[2]).is_none());
    feed(&mut inner, ch, nack(3, false));
    assert!(matches!(
        settled(&mut c[2]),
        Some(Err(Error::ServerSentNack))
    ));
    feed(&mut inner, ch, nack(5, true));
    assert!(matches!(
        settled(&mut c[3]),
        Some(Err(Error::ServerSentNack))
    ));
    assert!(matches!(
        settled(&mut c[4]),
        Some(Err(Error::ServerSentNack))
    ));
    assert_eq!(inner.confirms.unsettled(ch), 0);
}

#[test]
fn a_closed_publish_channel_fails_its_publishes_and_is_replaced() {
    let shared = open_shared();
    let mut first = publish(&shared, "missing", false, "x");
    let mut inner = shared.lock();
    let ch = inner.confirms.channel_of("missing").unwrap();
    feed(&mut inner, ch, ChannelOpenOk::default());
    let close = ChannelClose {
        reply_code: 404,
        reply_text: short("NOT_FOUND - no exchange 'missing' in vhost '/'").unwrap(),
        class_id: 60,
        method_id: 40,
    };
    feed(&mut inner, ch, close);
    assert!(
        matches!(settled(&mut first), Some(Err(Error::ChannelClosedByServer(r))) if r.code == 404)
    );
    assert_eq!(inner.confirms.channel_of("missing"), None);
    drop(inner);
    let _again = publish(&shared, "missing", false, "x");
    let inner = shared.lock();
    let again = inner.confirms.channel_of("missing").unwrap();
    assert_eq!(again, ch, "a fresh channel (the freed id is reused)");
    assert_eq!(inner.confirms.unsettled(again), 1);
}

#[test]
fn a_returned_mandatory_publish_fails_with_returned_and_others_confirm() {
    let shared = open_shared();
    let mut routed = publish(&shared, "", false, "a");
    let mut lost = publish(&shared, "", true, "b");
    let mut inner = shared.lock();
    let ch = confirming_channel(&mut inner, "");
    let ret = BasicReturn {
        reply_code: 312,
        reply_text: short("NO_ROUTE").unwrap(),
        exchange: short("").unwrap(),
        routing_key: short("nowhere").unwrap(),
    };
    feed_content(&mut inner, ch, ret, b"b");
    feed(&mut inner, ch, ack(2, true));
    drop(inner);
    assert!(matches!(settled(&mut routed), Some(Ok(()))));
    match settled(&mut lost) {
        Some(Err(Error::Returned(r))) => {
            assert_eq!((r.reply_code, r.reply_text.as_str()), (312, "NO_ROUTE"));
            assert_eq!(&r.body[..], b"b");
        }
        other => panic!("expected Returned, got {other:?}"),
    }
}

#[test]
fn publishes_wait_while_blocked_and_go_out_in_order_when_unblocked() {
    let shared = open_shared();
    let blocked = ConnectionBlocked {
        reason: short("low on memory").unwrap(),
    };
    feed(&mut shared.lock(), 0, blocked);
    assert_eq!(shared.lock().blocked().as_deref(), Some("low on memory"));
    let mut c = publish(&shared, "", false, "x");
    assert!(
        sent(&mut shared.lock()).is_empty(),
        "nothing is sent while blocked"
    );
    assert_eq!(shared.lock().confirms.held(), 1);
    assert!(settled(&mut c).is_none());
    feed(&mut shared.lock(), 0, ConnectionUnblocked {});
    assert_eq!(shared.lock().confirms.held(), 0, "held only while blocked");
    assert!(!sent(&mut shared.lock()).is_empty(), "sent once unblocked");
    let mut inner = shared.lock();
    let ch = confirming_channel(&mut inner, "");
    feed(&mut inner, ch, ack(1, false));
    drop(inner);
    assert!(matches!(settled(&mut c), Some(Ok(()))));
}

#[test]
fn more_deliveries_than_the_prefetch_close_the_connection_with_505() {
    let shared = open_shared();
    let mut inner = shared.lock();
    let (ch, token, _rx) = inner.open_mailbox([], 2, None).unwrap();
    feed(&mut inner, ch, ChannelOpenOk::default());
    sent(&mut inner);
    for tag in 1..=3 {
        let deliver = BasicDeliver {
            consumer_tag: short("c").unwrap(),
            delivery_tag: tag,
            ..Default::default()
        };
        feed_content(&mut inner, ch, deliver, b"m");
    }
    assert_eq!(inner.consumers.buffered(token), 2);
    let mut out = testing::ClientOutput::new();
    out.extend(&sent(&mut inner));
    out.expect_connection_close(505);
    assert!(inner.closed_error().is_some());
}

#[test]
fn commands_while_closing_report_why_not_misuse() {
    let shared = open_shared();
    let mut inner = shared.lock();
    assert!(inner.closed_error().is_none());
    inner.close(Instant::now(), 200, "bye");
    // The core refuses commands now; the user is told why.
    assert!(matches!(
        inner.on_temporary_channel(QueueDeclare::default().into()),
        Err(Error::ConnectionClosed(ConnectionError::ClosedByClient))
    ));
}

#[test]
fn a_stopped_driver_answers_every_waiter_with_that_cause() {
    let shared = open_shared();
    let mut pending = publish(&shared, "ex", false, "x");
    let rx = shared
        .lock()
        .on_temporary_channel(QueueDeclare::default().into())
        .unwrap();
    shared.lock().driver_stopped();
    assert!(matches!(
        settled(&mut pending),
        Some(Err(Error::ConnectionClosed(ConnectionError::DriverStopped)))
    ));
    let reply = futures_util::FutureExt::now_or_never(rx).unwrap().unwrap();
    assert!(matches!(
        reply,
        Err(Error::ConnectionClosed(ConnectionError::DriverStopped))
    ));
    // Later commands are told the same.
    assert!(matches!(
        shared.lock().lost(),
        Error::ConnectionClosed(ConnectionError::DriverStopped)
    ));
}

#[test]
fn a_channel_that_nacks_everything_is_replaced_and_closed_once_settled() {
    let shared = open_shared();
    let mut c: Vec<_> = (0..65).map(|_| publish(&shared, "", false, "x")).collect();
    let mut inner = shared.lock();
    let old = confirming_channel(&mut inner, "");
    sent(&mut inner);
    for tag in 1..=64 {
        feed(&mut inner, old, nack(tag, false));
    }
    assert!(matches!(
        settled(&mut c[0]),
        Some(Err(Error::ServerSentNack))
    ));
    assert_eq!(
        inner.confirms.channel_of(""),
        None,
        "retired after 64 nacks in a row"
    );
    assert_eq!(
        inner.confirms.unsettled(old),
        1,
        "its last publish still waits"
    );
    drop(inner);
    let _fresh = publish(&shared, "", false, "y");
    let mut inner = shared.lock();
    let fresh = inner.confirms.channel_of("").unwrap();
    assert_ne!(fresh, old, "the next publish opens a fresh channel");
    let mut out = testing::ClientOutput::new();
    out.extend(&sent(&mut inner));
    assert!(
        std::iter::from_fn(|| out.next_method())
            .all(|(ch, m)| ch != old || !matches!(m, Method::ChannelClose(_))),
        "not closed while a publish on it is unsettled"
    );
    feed(&mut inner, old, ack(65, false));
    assert!(matches!(settled(&mut c[64]), Some(Ok(()))));
    let mut out = testing::ClientOutput::new();
    out.extend(&sent(&mut inner));
    let closes: Vec<u16> = std::iter::from_fn(|| out.next_method())
        .filter(|(_, m)| matches!(m, Method::ChannelClose(_)))
        .map(|(ch, _)| ch)
        .collect();
    assert_eq!(closes, [old], "closed once its last publish is settled");
}

#[test]
fn a_few_nacks_keep_the_channel() {
    let shared = open_shared();
    let _c: Vec<_> = (0..10).map(|_| publish(&shared, "", false, "x")).collect();
    let mut inner = shared.lock();
    let ch = confirming_channel(&mut inner, "");
    feed(&mut inner, ch, nack(10, true));
    assert_eq!(inner.confirms.channel_of(""), Some(ch));
}

#[test]
fn blocked_time_is_counted_until_unblocked_and_until_the_end() {
    use crate::metrics::{Counter, Counters};
    let t0 = Instant::now();
    let counters = Arc::new(Counters::default());
    let shared = open_metered(&counters, t0);
    let at = |secs: u64, method: Method| {
        let bytes = testing::method_bytes(0, method);
        shared.lock().input(
            t0 + std::time::Duration::from_secs(secs),
            BytesMut::from(&bytes[..]),
        );
    };
    let blocked = || {
        Method::from(ConnectionBlocked {
            reason: short("low on memory").unwrap(),
        })
    };
    at(1, blocked());
    at(2, blocked()); // a repeat does not restart the clock
    at(4, ConnectionUnblocked {}.into());
    assert_eq!(counters.get(Counter::BlockedMicros), 3_000_000);
    at(10, blocked());
    shared.lock().eof(t0 + std::time::Duration::from_secs(12));
    assert_eq!(counters.get(Counter::BlockedMicros), 5_000_000);
}

/// A publish's outcome is counted before its waiter is woken: a task that
/// wakes on another thread must already see its publish in the counters.
#[test]
fn a_settled_publish_is_counted_before_its_waiter_wakes() {
    use std::sync::Mutex;
    use std::task::Wake;

    use crate::metrics::{Counter, Counters};

    /// Reads the counters at the moment it is woken.
    struct Witness {
        counters: Arc<Counters>,
        seen: Mutex<Vec<(u64, u64)>>,
    }
    impl Wake for Witness {
        fn wake(self: Arc<Self>) {
            let c = &self.counters;
            let now = (c.get(Counter::Confirmed), c.get(Counter::PublishNacked));
            self.seen.lock().unwrap().push(now);
        }
    }

    let counters = Arc::new(Counters::default());
    let shared = open_metered(&counters, Instant::now());
    sent(&mut shared.lock());
    let witness = Arc::new(Witness {
        counters: counters.clone(),
        seen: Mutex::new(Vec::new()),
    });
    let waker = std::task::Waker::from(witness.clone());
    let mut c: Vec<_> = (0..3).map(|_| publish(&shared, "ex", false, "x")).collect();
    for c in &mut c {
        assert!(
            Pin::new(c)
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
        );
    }
    let mut inner = shared.lock();
    let ch = confirming_channel(&mut inner, "ex");
    feed(&mut inner, ch, ack(2, true));
    feed(&mut inner, ch, nack(3, false));
    assert_eq!(*witness.seen.lock().unwrap(), [(2, 0), (2, 0), (2, 1)]);
}
