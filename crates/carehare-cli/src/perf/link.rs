//! A run's connections, publishers and consumers: recovering ones (the
//! default), or plain ones (`--no-recovery`), behind one small API so the
//! producer and consumer loops are written once.
//!
//! Recovering runs carry on through a broker restart or a lost link:
//! unconfirmed publishes go out again and consumers re-subscribe. Plain
//! runs measure the plain client alone, as a benchmark beside clients
//! without recovery; a lost connection ends them.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use carehare_tokio::{
    AckingConsumer, BasicProperties, Confirmation, Connection, ConsumerOptions, DeliveryTag, Error,
    Message, Publisher, RecoveringConfirmation, RecoveringConnection, RecoveringConsumer,
    RecoveringPublisher,
};
use futures_util::FutureExt;

/// One of the run's connections.
#[derive(Clone)]
pub(super) enum Link {
    Plain(Connection),
    /// Its `setup` declares the run's queues, exchange and bindings again
    /// on every connection.
    Recovering(RecoveringConnection),
}

impl Link {
    /// The connection in use (waiting for recovery if need be).
    pub(super) async fn connection(&self) -> Result<Connection, Error> {
        match self {
            Link::Plain(c) => Ok(c.clone()),
            Link::Recovering(c) => c.connection().await,
        }
    }

    /// A live connection to publish on without confirms: after a lost
    /// one, the next (a plain link has only its one). A recovering link
    /// may still hand out the lost connection for a moment, until its
    /// supervisor notices the loss: that one is skipped.
    pub(super) async fn live_connection(&self) -> Result<Connection, Error> {
        loop {
            let c = self.connection().await?;
            if matches!(self, Link::Plain(_)) || c.closed().now_or_never().is_none() {
                return Ok(c);
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Whether a lost connection is followed by another.
    pub(super) fn recovers(&self) -> bool {
        matches!(self, Link::Recovering(_))
    }

    pub(super) fn publisher(&self, window: usize) -> Pub {
        match self {
            Link::Plain(c) => Pub::Plain(c.publisher(window)),
            Link::Recovering(c) => Pub::Recovering(c.publisher(window)),
        }
    }

    /// A consumer, registered with RabbitMQ before this returns.
    pub(super) async fn consumer(
        &self,
        queue: &str,
        options: ConsumerOptions,
    ) -> Result<Sub, Error> {
        match self {
            Link::Plain(c) => Ok(Sub::Plain(c.consumer(queue, options).await?)),
            Link::Recovering(c) => {
                let name = queue.to_string();
                let consumer = c.consumer(move |_| name.clone(), options);
                consumer.subscribe().await?;
                Ok(Sub::Recovering(consumer))
            }
        }
    }

    pub(super) async fn close(&self) {
        let _ = match self {
            Link::Plain(c) => c.close().await,
            Link::Recovering(c) => c.close().await,
        };
    }
}

/// A publisher with a confirm window.
pub(super) enum Pub {
    Plain(Publisher),
    Recovering(RecoveringPublisher<()>),
}

impl Pub {
    /// Publishes within the window (waiting for room), `mandatory` or not.
    pub(super) async fn publish(
        &self,
        body: Bytes,
        exchange: &str,
        routing_key: &str,
        properties: &BasicProperties,
        mandatory: bool,
    ) -> Result<Confirm, Error> {
        Ok(match (self, mandatory) {
            (Pub::Plain(p), false) => Confirm::Plain(
                p.publish_with(body, exchange, routing_key, properties)
                    .await?,
            ),
            (Pub::Plain(p), true) => Confirm::Plain(
                p.publish_mandatory(body, exchange, routing_key, properties)
                    .await?,
            ),
            (Pub::Recovering(p), false) => Confirm::Recovering(
                p.publish_with(body, exchange, routing_key, properties)
                    .await?,
            ),
            (Pub::Recovering(p), true) => Confirm::Recovering(
                p.publish_mandatory(body, exchange, routing_key, properties)
                    .await?,
            ),
        })
    }
}

/// A publish's confirmation.
pub(super) enum Confirm {
    Plain(Confirmation),
    Recovering(RecoveringConfirmation),
}

impl Future for Confirm {
    type Output = Result<(), Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Confirm::Plain(c) => Pin::new(c).poll(cx),
            Confirm::Recovering(c) => Pin::new(c).poll(cx),
        }
    }
}

/// A message's delivery tag.
#[derive(Clone, Copy)]
pub(super) enum Tag {
    Plain(u64),
    Recovering(DeliveryTag),
}

/// An acking consumer.
pub(super) enum Sub {
    Plain(AckingConsumer),
    Recovering(RecoveringConsumer<()>),
}

impl Sub {
    pub(super) async fn next(&self) -> Result<(Message, Tag), Error> {
        match self {
            Sub::Plain(c) => {
                let m = c.next().await?;
                let tag = Tag::Plain(m.delivery_tag);
                Ok((m, tag))
            }
            Sub::Recovering(c) => {
                let m = c.next().await?;
                Ok((m.message, Tag::Recovering(m.tag)))
            }
        }
    }

    /// Acks `tag`, and with `multiple` every earlier message too. A tag
    /// from a lost connection settles nothing: RabbitMQ redelivers.
    pub(super) fn ack(&self, tag: Tag, multiple: bool) {
        match (self, tag) {
            (Sub::Plain(c), Tag::Plain(t)) if multiple => c.ack_multiple(t),
            (Sub::Plain(c), Tag::Plain(t)) => c.ack(t),
            (Sub::Recovering(c), Tag::Recovering(t)) if multiple => {
                c.ack_multiple(t);
            }
            (Sub::Recovering(c), Tag::Recovering(t)) => {
                c.ack(t);
            }
            // A tag is only ever handed to the consumer it came from.
            _ => {}
        }
    }

    pub(super) async fn close(&self) {
        match self {
            Sub::Plain(c) => c.close().await,
            Sub::Recovering(c) => c.close().await,
        }
    }
}
