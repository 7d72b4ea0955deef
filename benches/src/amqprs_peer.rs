//! What the amqprs programs share, written the way amqprs' docs do it: a
//! channel callback receives the publisher confirms (`publish_ack`, which
//! may be `multiple`) and returns slots to a semaphore that bounds the
//! unconfirmed publishes.

use std::sync::Arc;

use amqprs::callbacks::{ChannelCallback, DefaultConnectionCallback};
use amqprs::channel::{Channel, ConfirmSelectArguments, QueueDeclareArguments};
use amqprs::connection::{Connection, OpenConnectionArguments};
use amqprs::error::Error as AmqprsError;
use amqprs::{Ack, BasicProperties, Cancel, CloseChannel, Nack, Return};
use async_trait::async_trait;
use tokio::sync::Semaphore;

use crate::e2e::host_port;

type Result<T> = std::result::Result<T, AmqprsError>;

/// Releases one window slot per confirmed message.
struct Confirms {
    window: Arc<Semaphore>,
    settled: u64,
}

#[async_trait]
impl ChannelCallback for Confirms {
    async fn close(&mut self, _: &Channel, close: CloseChannel) -> Result<()> {
        panic!("channel closed by the server: {close}");
    }
    async fn cancel(&mut self, _: &Channel, _: Cancel) -> Result<()> {
        Ok(())
    }
    async fn flow(&mut self, _: &Channel, active: bool) -> Result<bool> {
        Ok(active)
    }
    async fn publish_ack(&mut self, _: &Channel, ack: Ack) {
        let tag = ack.delivery_tag();
        let n = if ack.mutiple() { tag - self.settled } else { 1 };
        self.settled = self.settled.max(tag);
        self.window.add_permits(n as usize);
    }
    async fn publish_nack(&mut self, _: &Channel, nack: Nack) {
        panic!("nack {}", nack.delivery_tag());
    }
    async fn publish_return(&mut self, _: &Channel, _: Return, _: BasicProperties, _: Vec<u8>) {
        panic!("returned");
    }
}

/// A connection to `url`, a publishing channel in confirm mode and a
/// server-named exclusive queue.
pub struct Publishing {
    /// The connection.
    pub connection: Connection,
    /// The channel, in confirm mode.
    pub channel: Channel,
    /// The queue's name.
    pub queue: String,
    /// `window` permits: take one per publish; each confirm returns it.
    pub window: Arc<Semaphore>,
}

/// Connects and sets up [`Publishing`] with `window` unconfirmed
/// publishes at most.
pub async fn publishing(url: &str, window: usize) -> Publishing {
    let (host, port) = host_port(url);
    let connection = Connection::open(&OpenConnectionArguments::new(&host, port, "guest", "guest"))
        .await
        .expect("connect");
    connection
        .register_callback(DefaultConnectionCallback)
        .await
        .expect("callback");
    let channel = connection.open_channel(None).await.expect("channel");
    let window = Arc::new(Semaphore::new(window));
    channel
        .register_callback(Confirms {
            window: window.clone(),
            settled: 0,
        })
        .await
        .expect("callback");
    let (queue, _, _) = channel
        .queue_declare(QueueDeclareArguments::exclusive_server_named())
        .await
        .expect("queue.declare")
        .expect("declare-ok");
    channel
        .confirm_select(ConfirmSelectArguments::default())
        .await
        .expect("confirm.select");
    Publishing {
        connection,
        channel,
        queue,
        window,
    }
}
