//! Publishing without confirms, driven by scripted server frames (no
//! broker, no socket): its own channel, a server close, blocking, and the
//! bound on the bytes queued for the socket.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use bytes::Bytes;
use carehare_core::frame::Frame;
use carehare_core::method::*;
use carehare_core::properties::BasicProperties;
use carehare_core::testing;

use super::backlog::HIGH_WATER;
use super::tests::{feed, open_shared, sent};
use super::{Inner, Shared};
use crate::error::{Error, short};

/// A waker that counts its wake-ups.
#[derive(Default)]
struct Count(AtomicUsize);

impl Wake for Count {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

fn counting() -> (Arc<Count>, Waker) {
    let count = Arc::new(Count::default());
    (count.clone(), Waker::from(count))
}

fn publish(
    inner: &mut Inner,
    waker: &Waker,
    exchange: &str,
    body: Bytes,
) -> Poll<Result<(), Error>> {
    let mut cx = Context::from_waker(waker);
    inner.poll_publish_unconfirmed(&mut cx, &body, exchange, "q", &BasicProperties::default())
}

fn publish_str(shared: &Arc<Shared>, exchange: &str, body: &'static str) {
    let waker = futures_util::task::noop_waker();
    let polled = publish(
        &mut shared.lock(),
        &waker,
        exchange,
        Bytes::from_static(body.as_bytes()),
    );
    assert!(matches!(polled, Poll::Ready(Ok(()))), "{polled:?}");
}

/// The methods and bodies the client queued, as (channel, name-or-body).
fn sent_frames(shared: &Arc<Shared>) -> Vec<(u16, String)> {
    let mut out = testing::ClientOutput::new();
    out.extend(&sent(&mut shared.lock()));
    out.frames()
        .into_iter()
        .filter_map(|f| match f {
            Frame::Method { channel, method } => Some((channel, method.name().to_string())),
            Frame::Body { channel, payload } => {
                Some((channel, String::from_utf8(payload.to_vec()).unwrap()))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn unconfirmed_publishes_go_in_order_on_one_channel_never_in_confirm_mode() {
    let shared = open_shared();
    for body in ["1", "2", "3"] {
        publish_str(&shared, "ex", body);
    }
    publish_str(&shared, "other", "4");
    let ch = shared.lock().unconfirmed.channel().unwrap();
    let p = |body: &str| [(ch, "basic.publish".to_string()), (ch, body.to_string())];
    let mut want = vec![(ch, "channel.open".to_string())];
    for body in ["1", "2", "3", "4"] {
        want.extend(p(body));
    }
    assert_eq!(sent_frames(&shared), want, "no confirm.select, in order");
    let inner = shared.lock();
    assert_eq!(
        inner.confirms.channel_of("ex"),
        None,
        "not a confirm channel"
    );
    assert_eq!(inner.confirms.channel_of("other"), None);
    assert_eq!(inner.confirms.unsettled(ch), 0);
}

#[test]
fn a_server_close_of_the_unconfirmed_channel_is_survived_on_a_fresh_one() {
    let shared = open_shared();
    publish_str(&shared, "missing", "lost");
    let first = shared.lock().unconfirmed.channel().unwrap();
    sent(&mut shared.lock());
    {
        let mut inner = shared.lock();
        feed(&mut inner, first, ChannelOpenOk::default());
        let close = ChannelClose {
            reply_code: 404,
            reply_text: short("NOT_FOUND - no exchange 'missing' in vhost '/'").unwrap(),
            class_id: 60,
            method_id: 40,
        };
        feed(&mut inner, first, close);
        assert_eq!(inner.unconfirmed.channel(), None, "forgotten");
        assert!(inner.closed_error().is_none(), "the connection lives on");
    }
    // The client answered the close.
    assert_eq!(
        sent_frames(&shared),
        [(first, "channel.close-ok".to_string())]
    );
    publish_str(&shared, "", "next");
    let second = shared.lock().unconfirmed.channel().unwrap();
    assert_eq!(
        sent_frames(&shared),
        [
            (second, "channel.open".to_string()),
            (second, "basic.publish".to_string()),
            (second, "next".to_string()),
        ]
    );
}

#[test]
fn unconfirmed_publishes_wait_while_blocked_and_go_on_when_unblocked() {
    let shared = open_shared();
    let blocked = ConnectionBlocked {
        reason: short("low on memory").unwrap(),
    };
    feed(&mut shared.lock(), 0, blocked);
    let (count, waker) = counting();
    let body = Bytes::from_static(b"x");
    assert!(publish(&mut shared.lock(), &waker, "", body.clone()).is_pending());
    assert!(
        sent(&mut shared.lock()).is_empty(),
        "nothing queued while blocked"
    );
    // A drained backlog does not end the wait: RabbitMQ still blocks.
    shared.lock().unwritten(0);
    assert!(publish(&mut shared.lock(), &waker, "", body.clone()).is_pending());
    let before = count.0.load(Ordering::Relaxed);
    feed(&mut shared.lock(), 0, ConnectionUnblocked {});
    assert!(count.0.load(Ordering::Relaxed) > before, "woken at unblock");
    assert!(matches!(
        publish(&mut shared.lock(), &waker, "", body),
        Poll::Ready(Ok(()))
    ));
    assert!(!sent(&mut shared.lock()).is_empty());
}

#[test]
fn the_write_backlog_bounds_unconfirmed_publishes_and_its_drain_resumes_them() {
    let shared = open_shared();
    let (count, waker) = counting();
    let body = Bytes::from(vec![b'm'; 64 * 1024]);
    // Nobody writes: publishes queue until the high-water mark.
    let mut published = 0;
    while publish(&mut shared.lock(), &waker, "", body.clone()).is_ready() {
        published += 1;
        assert!(published <= HIGH_WATER / body.len() + 1, "unbounded");
    }
    let backlog = shared.lock().backlog();
    assert!(backlog >= HIGH_WATER, "{backlog}");
    assert!(backlog < HIGH_WATER + body.len() + 1024, "{backlog}");
    // The driver takes it all and writes nothing yet: still full, no wake.
    let mut out = std::collections::VecDeque::new();
    shared.lock().poll_transmit(&mut out);
    assert!(publish(&mut shared.lock(), &waker, "", body.clone()).is_pending());
    assert_eq!(count.0.load(Ordering::Relaxed), 0);
    // Written down to just over the mark: still waiting.
    shared.lock().unwritten(HIGH_WATER);
    assert_eq!(count.0.load(Ordering::Relaxed), 0);
    // Written below it: woken, and publishing again.
    shared.lock().unwritten(HIGH_WATER - 1);
    assert_eq!(count.0.load(Ordering::Relaxed), 1);
    assert!(publish(&mut shared.lock(), &waker, "", body.clone()).is_ready());
    assert!(publish(&mut shared.lock(), &waker, "", body).is_pending());
}

#[test]
fn the_end_of_the_connection_wakes_and_fails_waiting_unconfirmed_publishes() {
    let shared = open_shared();
    let blocked = ConnectionBlocked {
        reason: short("low on disk").unwrap(),
    };
    feed(&mut shared.lock(), 0, blocked);
    let (count, waker) = counting();
    let body = Bytes::from_static(b"x");
    assert!(publish(&mut shared.lock(), &waker, "", body.clone()).is_pending());
    shared.lock().driver_stopped();
    assert_eq!(count.0.load(Ordering::Relaxed), 1);
    assert!(matches!(
        publish(&mut shared.lock(), &waker, "", body),
        Poll::Ready(Err(Error::ConnectionClosed(_)))
    ));
}
