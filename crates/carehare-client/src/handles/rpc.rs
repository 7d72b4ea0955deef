//! RPC over RabbitMQ's direct reply-to (`amq.rabbitmq.reply-to`): no reply
//! queue to declare, replies routed to each call by correlation id.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use carehare_core::Reply;
use carehare_core::method::{BasicConsume, BasicPublish, ConfirmSelect, Method};
use carehare_core::properties::BasicProperties;
use carehare_core::types::{ChannelId, ShortStr};
use futures_util::future::{Either, select};

use super::connection::Connection;
use super::wait::{reply, unexpected};
use crate::error::{Error, short};
use crate::message::Message;
use crate::state::Shared;

/// The pseudo-queue RabbitMQ routes direct replies through.
///
/// ```
/// assert_eq!(carehare_client::DIRECT_REPLY_TO, "amq.rabbitmq.reply-to");
/// ```
pub const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// An RPC client using direct reply-to. Requests are published on the same
/// channel that consumes the replies, as RabbitMQ requires; many calls can
/// be in flight at once. Made by [`Connection::direct_reply_to`].
///
/// ```no_run
/// # async fn f(connection: carehare_client::Connection) -> Result<(), carehare_client::Error> {
/// use std::time::Duration;
/// let rpc = connection.direct_reply_to().await?;
/// let reply = rpc.call("", "rpc-requests", "2 + 2", &Default::default(), Duration::from_secs(5)).await?;
/// println!("{:?}", reply.body);
/// # Ok(()) }
/// ```
pub struct RpcClient {
    connection: Connection,
    channel: ChannelId,
    next_id: AtomicU64,
}

impl std::fmt::Debug for RpcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcClient")
            .field("channel", &self.channel)
            .finish()
    }
}

impl Connection {
    /// Opens a direct reply-to RPC channel: `confirm.select`, then
    /// `basic.consume` on `amq.rabbitmq.reply-to` (no-ack, as RabbitMQ
    /// requires for it).
    ///
    /// ```no_run
    /// # async fn f(connection: carehare_client::Connection) -> Result<(), carehare_client::Error> {
    /// let rpc = connection.direct_reply_to().await?;
    /// # drop(rpc); Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// Cancel-safe: cancelled after the channel was opened, the channel is
    /// closed again.
    pub async fn direct_reply_to(&self) -> Result<RpcClient, Error> {
        let consume = BasicConsume {
            queue: ShortStr::from_static(DIRECT_REPLY_TO),
            no_ack: true,
            ..Default::default()
        };
        let shared = self.shared().clone();
        let (channel, rx) = shared
            .lock()
            .open_rpc([ConfirmSelect::default().into(), consume.into()])
            // A failed open may have queued a close for the channel.
            .inspect_err(|_| shared.wake_driver())?;
        shared.wake_driver();
        let client = RpcClient {
            connection: self.clone(),
            channel,
            next_id: AtomicU64::new(1),
        };
        match reply(&shared, rx).await? {
            Reply::Method(Method::BasicConsumeOk(_)) => Ok(client),
            _ => unexpected(),
        }
    }
}

impl RpcClient {
    fn shared(&self) -> &Arc<Shared> {
        self.connection.shared()
    }

    /// Publishes a request (mandatory, with `reply_to` and a fresh
    /// `correlation_id` set) and waits for its reply.
    ///
    /// Fails with [`Error::Returned`] when no queue takes the request (no
    /// route), [`Error::Timeout`] when no reply comes within `timeout`, and
    /// the usual channel and connection errors.
    ///
    /// ```no_run
    /// # async fn f(rpc: carehare_client::RpcClient) -> Result<(), carehare_client::Error> {
    /// use std::time::Duration;
    /// use carehare_client::Error;
    /// match rpc.call("", "rpc-requests", "ping", &Default::default(), Duration::from_secs(2)).await {
    ///     Ok(reply) => println!("{:?}", reply.body),
    ///     Err(Error::Returned(_)) => eprintln!("no server is listening"),
    ///     Err(Error::Timeout(_)) => eprintln!("the server did not answer"),
    ///     Err(other) => return Err(other),
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// The request is published by the first poll. Cancelling the call
    /// after that does not take it back: a server may still handle it, and
    /// its reply, if one comes, is dropped. Nothing is left waiting for
    /// it.
    pub async fn call(
        &self,
        exchange: &str,
        routing_key: &str,
        body: impl Into<Bytes>,
        properties: &BasicProperties,
        timeout: Duration,
    ) -> Result<Message, Error> {
        let correlation_id = short(&format!(
            "carehare-{}",
            self.next_id.fetch_add(1, Ordering::Relaxed)
        ))?;
        let mut properties = properties.clone();
        properties.reply_to = Some(ShortStr::from_static(DIRECT_REPLY_TO));
        properties.correlation_id = Some(correlation_id.clone());
        let publish = BasicPublish {
            exchange: short(exchange)?,
            routing_key: short(routing_key)?,
            mandatory: true,
            ..Default::default()
        };
        let body = body.into();
        let (reply_rx, confirm) = self.shared().lock().rpc_call(
            self.channel,
            &publish,
            &properties,
            &body,
            &correlation_id,
        )?;
        // However the call ends, this future dropped included, its reply
        // route goes (a reply routed already took it; removing it again
        // is harmless).
        let _route = Route {
            shared: self.shared(),
            channel: self.channel,
            correlation_id,
        };
        self.shared().wake_driver();
        let runtime = self.connection.runtime().clone();
        let deadline = runtime.now() + timeout;
        let outcome = async {
            // The confirm settles first (a return comes before its ack).
            match confirm.await {
                Some(Ok(())) => {}
                Some(Err(e)) => return Err(e),
                None => return Err(self.shared().lock().lost()),
            }
            match reply_rx.await {
                Ok(result) => result,
                Err(_) => Err(self.shared().lock().lost()),
            }
        };
        match select(Box::pin(outcome), runtime.sleep_until(deadline)).await {
            Either::Left((result, _)) => result,
            Either::Right(_) => Err(Error::Timeout(timeout)),
        }
    }
}

/// One call's reply route, forgotten when dropped.
struct Route<'a> {
    shared: &'a Shared,
    channel: ChannelId,
    correlation_id: ShortStr,
}

impl Drop for Route<'_> {
    fn drop(&mut self) {
        self.shared
            .lock()
            .rpc_forget(self.channel, &self.correlation_id);
    }
}

impl Drop for RpcClient {
    fn drop(&mut self) {
        self.shared().lock().close_rpc(self.channel);
        self.shared().wake_driver();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a panic is the failure report

    use std::sync::Arc;

    use carehare_core::method::ConnectionTune;
    use carehare_core::testing;

    use super::*;
    use crate::connect::connect_with_runtime;
    use crate::options::ConnectOptions;
    use crate::runtime::Runtime;
    use crate::sim::{POLITE, serve, with_broker};

    #[test]
    fn a_cancelled_call_leaves_no_reply_route_behind() {
        let tune = ConnectionTune {
            heartbeat: 0,
            ..testing::server_tune()
        };
        // Acks every request and never replies.
        let sim = with_broker(tune, |broker| serve(broker, 0, POLITE, Arc::default()));
        let runtime: Arc<dyn Runtime> = sim.clone();
        let options = ConnectOptions {
            host: "127.0.0.1".into(),
            ..ConnectOptions::default()
        };
        let (cancelled, waiting, timed_out, waiting_after) = sim.block_on(async move {
            let connection = connect_with_runtime(runtime.clone(), options)
                .await
                .unwrap();
            let rpc = connection.direct_reply_to().await.unwrap();
            let properties = BasicProperties::default();
            let call = rpc.call("", "rpc", "ping", &properties, Duration::from_secs(60));
            let stop = runtime.sleep_until(runtime.now() + Duration::from_millis(10));
            let cancelled = matches!(select(Box::pin(call), stop).await, Either::Right(_));
            let waiting = rpc.shared().lock().rpc_waiting();
            // A call that times out forgets its route too.
            let timed_out = rpc
                .call(
                    "",
                    "rpc",
                    "ping",
                    &Default::default(),
                    Duration::from_millis(5),
                )
                .await;
            let waiting_after = rpc.shared().lock().rpc_waiting();
            (cancelled, waiting, timed_out, waiting_after)
        });
        assert!(cancelled, "the call was not cancelled");
        assert_eq!(waiting, 0, "a cancelled call's route is still there");
        assert!(matches!(timed_out, Err(Error::Timeout(_))), "{timed_out:?}");
        assert_eq!(waiting_after, 0);
    }
}
