//! A consumer that survives recovery: it re-subscribes on each new
//! connection, after `setup` has run, to the queue the latest topology
//! names.
//!
//! Invariants:
//! - `sub.consumer` is a subscription on connection `sub.generation`, or
//!   `None` when that connection was lost (the next one must be newer);
//! - a [`DeliveryTag`] settles only on the subscription it came from: a
//!   tag of a lost connection is refused (RabbitMQ redelivers its message,
//!   with `redelivered` set), never sent on a new channel where it would
//!   name another message.

use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

use futures_util::future::{Either, select};

use crate::error::Error;
use crate::handles::consumer::{AckingConsumer, ConsumerOptions};
use crate::message::Message;

use super::shared::Recovery;

/// Names the queue to consume in the latest topology.
type QueueName<T> = Arc<dyn Fn(&T) -> String + Send + Sync>;

/// Which delivery of which connection: what settles a
/// [`RecoveredMessage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeliveryTag {
    generation: u64,
    tag: u64,
}

impl DeliveryTag {
    /// The connection it came on: 1 for the first, then one more per
    /// recovery.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// RabbitMQ's delivery tag on that connection's channel.
    pub fn delivery_tag(&self) -> u64 {
        self.tag
    }
}

/// A message from a [`RecoveringConsumer`], with the tag that settles it.
/// It dereferences to its [`Message`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RecoveredMessage {
    /// The message.
    pub message: Message,
    /// Settles it with [`RecoveringConsumer::ack`] and the others.
    pub tag: DeliveryTag,
}

impl std::ops::Deref for RecoveredMessage {
    type Target = Message;

    fn deref(&self) -> &Message {
        &self.message
    }
}

struct Sub {
    generation: u64,
    consumer: Option<Arc<AckingConsumer>>,
    /// Closed by the user: no more subscriptions.
    closed: bool,
    /// The call waiting for recovery (one at a time: it holds
    /// `subscribing`), woken by `close`; cleared when its wait ends.
    waiting: Option<Waker>,
}

/// Forgets the waiting call's waker when its wait ends, however it ends:
/// a cancelled `next` must not leave its task's waker behind (one per
/// cancelled call, for the consumer's life, before).
struct Waiting<'a>(&'a Mutex<Sub>);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).waiting = None;
    }
}

/// A consumer on a [`RecoveringConnection`](crate::RecoveringConnection):
/// it keeps yielding messages across reconnects.
///
/// It subscribes on the first [`next`](Self::next), and again after each
/// recovery. It ends with an error only for what recovery can't fix: the
/// server cancelled it ([`Error::ConsumerCancelledByServer`], e.g. its
/// queue was deleted), refused it ([`Error::ChannelClosedByServer`]), or
/// the connection was closed or gave up.
///
/// Messages that were not acked when a connection was lost are
/// redelivered by RabbitMQ, with `redelivered` set: consumers should be
/// idempotent.
pub struct RecoveringConsumer<T> {
    shared: Arc<Recovery<T>>,
    queue: QueueName<T>,
    options: ConsumerOptions,
    sub: Mutex<Sub>,
    /// Held while subscribing, so concurrent `next` calls subscribe once.
    subscribing: async_lock::Mutex<()>,
}

impl<T> std::fmt::Debug for RecoveringConsumer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sub = self.lock();
        f.debug_struct("RecoveringConsumer")
            .field("generation", &sub.generation)
            .field("subscribed", &sub.consumer.is_some())
            .finish_non_exhaustive()
    }
}

impl<T> RecoveringConsumer<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Sub> {
        self.sub.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<T: Clone + Send + Sync + 'static> RecoveringConsumer<T> {
    pub(super) fn new(
        shared: Arc<Recovery<T>>,
        queue: QueueName<T>,
        options: ConsumerOptions,
    ) -> Self {
        Self {
            shared,
            queue,
            options,
            sub: Mutex::new(Sub {
                generation: 0,
                consumer: None,
                closed: false,
                waiting: None,
            }),
            subscribing: async_lock::Mutex::new(()),
        }
    }

    /// The next message, waiting across recoveries.
    ///
    /// # Cancel safety
    /// Cancel-safe: a message is taken from the buffer only when this
    /// returns it.
    pub async fn next(&self) -> Result<RecoveredMessage, Error> {
        loop {
            let (generation, consumer) = self.subscription().await?;
            match consumer.next().await {
                Ok(message) => {
                    let tag = DeliveryTag {
                        generation,
                        tag: message.delivery_tag,
                    };
                    return Ok(RecoveredMessage { message, tag });
                }
                // The connection went: wait for the next one.
                Err(Error::ConnectionClosed(_)) => self.lost(generation),
                Err(e) => return Err(e),
            }
        }
    }

    /// Subscribes now, if not subscribed yet, instead of on the first
    /// [`next`](Self::next): e.g. so that the consumer is registered with
    /// RabbitMQ before publishing starts. Waits for recovery like `next`.
    ///
    /// # Cancel safety
    /// Cancel-safe: a cancelled call leaves the consumer subscribed or
    /// not, and the next call carries on.
    pub async fn subscribe(&self) -> Result<(), Error> {
        self.subscription().await.map(drop)
    }

    /// Forgets the subscription on `generation`.
    fn lost(&self, generation: u64) {
        let mut sub = self.lock();
        if sub.generation == generation {
            sub.consumer = None;
        }
    }

    /// The live subscription, made on the newest connection if there is
    /// none.
    async fn subscription(&self) -> Result<(u64, Arc<AckingConsumer>), Error> {
        let _subscribing = self.subscribing.lock().await;
        loop {
            let after = {
                let sub = self.lock();
                if sub.closed {
                    return Err(Error::ConsumerClosed);
                }
                if let Some(consumer) = &sub.consumer {
                    return Ok((sub.generation, consumer.clone()));
                }
                sub.generation
            };
            let closed = std::future::poll_fn(|cx| {
                let mut sub = self.lock();
                if sub.closed {
                    return Poll::Ready(());
                }
                match &mut sub.waiting {
                    Some(waker) => waker.clone_from(cx.waker()),
                    None => sub.waiting = Some(cx.waker().clone()),
                }
                Poll::Pending
            });
            let live = {
                let _waiting = Waiting(&self.sub);
                match select(Box::pin(self.shared.live(after)), Box::pin(closed)).await {
                    Either::Left((live, _)) => live?,
                    Either::Right(_) => return Err(Error::ConsumerClosed),
                }
            };
            let (connection, topology, generation) = live;
            let queue = (self.queue)(&topology);
            match connection.consumer(&queue, self.options.clone()).await {
                Ok(consumer) => {
                    let consumer = Arc::new(consumer);
                    let closed = {
                        let mut sub = self.lock();
                        if !sub.closed {
                            sub.generation = generation;
                            sub.consumer = Some(consumer.clone());
                        }
                        sub.closed
                    };
                    if closed {
                        consumer.close().await;
                        return Err(Error::ConsumerClosed);
                    }
                    return Ok((generation, consumer));
                }
                // Lost again while subscribing: wait for a newer one.
                Err(Error::ConnectionClosed(_)) => {
                    self.lock().generation = generation;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether a call is registered as waiting for recovery.
    #[cfg(test)]
    pub(super) fn has_waiter(&self) -> bool {
        self.lock().waiting.is_some()
    }

    /// Runs `settle` on the subscription `tag` came from; `false` if that
    /// connection is gone (RabbitMQ redelivers the message).
    fn settle(&self, tag: DeliveryTag, settle: impl FnOnce(&AckingConsumer, u64)) -> bool {
        let sub = self.lock();
        match &sub.consumer {
            Some(consumer) if sub.generation == tag.generation => {
                settle(consumer, tag.tag);
                true
            }
            _ => false,
        }
    }

    /// Acks a message. Returns `false`, sending nothing, if the message
    /// came on a connection that has since been lost: RabbitMQ redelivers
    /// it.
    pub fn ack(&self, tag: DeliveryTag) -> bool {
        self.settle(tag, AckingConsumer::ack)
    }

    /// Acks a message and every earlier one of the same connection; `false`
    /// if that connection is gone (see [`ack`](Self::ack)).
    pub fn ack_multiple(&self, tag: DeliveryTag) -> bool {
        self.settle(tag, AckingConsumer::ack_multiple)
    }

    /// Refuses a message (requeued or dead-lettered); `false` if its
    /// connection is gone (see [`ack`](Self::ack)).
    pub fn nack(&self, tag: DeliveryTag, requeue: bool) -> bool {
        self.settle(tag, |c, t| c.nack(t, requeue))
    }

    /// Stops consuming: closes the current subscription (RabbitMQ requeues
    /// its unacked messages). Pending and later [`next`](Self::next) calls
    /// fail with [`Error::ConsumerClosed`].
    ///
    /// # Cancel safety
    /// Cancel-safe: the consumer is closed by the first poll; a cancelled
    /// call only stops waiting for the subscription's channel to close.
    pub async fn close(&self) {
        let consumer = {
            let mut sub = self.lock();
            sub.closed = true;
            if let Some(w) = sub.waiting.take() {
                w.wake();
            }
            sub.consumer.take()
        };
        if let Some(consumer) = consumer {
            consumer.close().await;
        }
    }
}
