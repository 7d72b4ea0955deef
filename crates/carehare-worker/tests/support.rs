//! Helpers shared by the live-broker tests (`#[path]`-included by each test
//! file; as a test target of its own it holds no tests).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use carehare_tokio::{AMQPValue, BasicProperties, Connection, FieldTable, QueueOptions};
use carehare_worker::{ConnectionParameters, RetryPolicy};

/// The test broker (`test-server/start.sh`), as guest.
pub fn params() -> ConnectionParameters {
    ConnectionParameters::new("127.0.0.1", 5672, "guest", "guest").with_retry(RetryPolicy {
        max_attempts: 20,
        initial_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(2),
    })
}

/// A queue name no other test (or run) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "carehare-worker-{prefix}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A plain carehare connection to the test broker.
pub async fn connect() -> Connection {
    params()
        .connect()
        .await
        .expect("connect to the test broker")
}

/// Fails the test instead of hanging.
pub async fn within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: timed out after {limit:?}"),
    }
}

/// Polls `check` until it holds, or fails the test after `limit`.
pub async fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "{what}: not true after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Ready messages in `queue`.
pub async fn message_count(connection: &Connection, queue: &str) -> u32 {
    let passive = QueueOptions {
        passive: true,
        ..Default::default()
    };
    connection
        .queue_declare(queue, passive)
        .await
        .expect("passive declare")
        .message_count
}

/// Polls the ready count of `queue` until it is `n`.
pub async fn wait_for_count(connection: &Connection, queue: &str, n: u32, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let count = message_count(connection, queue).await;
        if count == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{queue} holds {count} messages, not {n}, after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Publishes a raw body to `queue` and waits for the confirm.
pub async fn publish_raw(connection: &Connection, queue: &str, body: Vec<u8>) {
    connection
        .publish_with(body, "", queue, &BasicProperties::default())
        .await
        .expect("publish");
}

/// Queue arguments that dead-letter rejected messages to `dead` through
/// the default exchange.
pub fn dead_letter_to(dead: &str) -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    arguments.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(dead.into()),
    );
    arguments
}

/// Declares `name` as a plain (non-durable, auto-delete-free) queue.
pub async fn declare(connection: &Connection, name: &str) {
    connection
        .queue_declare(name, QueueOptions::default())
        .await
        .expect("declare");
}

/// Deletes queues, ignoring errors.
pub async fn delete(connection: &Connection, queues: &[&str]) {
    for q in queues {
        let _ = connection.queue_delete(q, false, false).await;
    }
}
