//! The layer: its handle, its operations, and the background task that
//! connects (a [`RecoveringConnection`], which reconnects and runs
//! [`setup`] again after a loss) and routes messages.

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use carehare_tokio::{
    AMQPValue, BoxFuture, Connection, ConnectionError, ConsumerOptions, ExchangeOptions,
    FieldTable, QueueOptions, RecoveringConnection, RecoveringPublisher,
};
use futures_util::FutureExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::local::{Delivery, Local, rate_limit};
use crate::wire::{self, Recipient};
use crate::{Config, Error, names};

/// At most one back-pressure warning and one local-expiry warning this often.
const WARNING_INTERVAL: Duration = Duration::from_secs(5);

/// Unconfirmed publishes (`send`, `group_send`) at once; more wait.
const PUBLISH_WINDOW: usize = 1000;

/// What `setup` hands the consumer: the queue's name.
type Topology = String;

/// The layer's view of its connection.
#[derive(Clone)]
enum ConnState {
    /// The recovering connection is being made (which is quick: it makes
    /// its first connection in the background): operations wait.
    Connecting,
    /// Connected once; from then on the recovering connection (and its
    /// publisher) wait out outages themselves.
    Up(
        RecoveringConnection<Topology>,
        RecoveringPublisher<Topology>,
    ),
    /// RabbitMQ refused the layer with an error that retrying can't fix:
    /// operations fail with [`Error::Connect`].
    Failed(carehare_tokio::Error),
    /// `close()` was called: operations fail with [`Error::Closed`].
    Closed,
}

struct Shared {
    config: Config,
    options: carehare_tokio::ConnectOptions,
    queue_name: String,
    /// `<queue_name>!`, the prefix of this layer's channels.
    prefix: String,
    local: Mutex<Local>,
    local_expiry: Option<Duration>,
    /// `local_capacity` permits: one per message held in memory.
    permits: Arc<Semaphore>,
    conn: watch::Sender<ConnState>,
    /// Set when the layer ends: closed, or failed for good.
    stopping: watch::Sender<bool>,
    /// Held while group membership and bindings change together, so a
    /// `setup` binds exactly the groups that have local members.
    bindings: tokio::sync::Mutex<()>,
    /// Signalled when a message is buffered (for the expiry task).
    buffered: Notify,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    fn local(&self) -> MutexGuard<'_, Local> {
        self.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the connection state, never leaving `Closed` or `Failed`.
    fn set_conn(&self, state: ConnState) {
        self.conn.send_if_modified(|s| {
            if matches!(s, ConnState::Closed | ConnState::Failed(_)) {
                return false;
            }
            *s = state;
            true
        });
    }

    fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    /// Resolves once the layer ends: `close()` was called (or every handle
    /// dropped), or it failed for good.
    async fn stopped(&self) {
        let mut rx = self.stopping.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }

    /// Ends the layer: no more deliveries, every receive fails.
    fn stop(&self) {
        self.stopping.send_replace(true);
        // Dropped outside the lock: dropping acks.
        let dropped = self.local().close();
        drop(dropped);
    }

    /// Starts closing.
    fn begin_close(&self) {
        self.conn.send_replace(ConnState::Closed);
        self.stop();
    }

    /// RabbitMQ refused the layer for good (bad credentials, a missing
    /// vhost, a refused declaration...): every operation, pending or
    /// later, fails with [`Error::Connect`].
    fn fail(&self, cause: carehare_tokio::Error) {
        let failed = self.conn.send_if_modified(|s| match s {
            ConnState::Closed | ConnState::Failed(_) => false,
            _ => {
                *s = ConnState::Failed(cause.clone());
                true
            }
        });
        if failed {
            error!(queue = self.queue_name, error = %cause, "RabbitMQ refused the channel layer; it stops");
            // After the state: woken receivers read it.
            self.stop();
        }
    }

    /// Why operations fail once the layer has ended.
    fn end_error(&self) -> Error {
        match &*self.conn.borrow() {
            ConnState::Failed(cause) => Error::Connect(cause.clone()),
            _ => Error::Closed,
        }
    }

    /// The recovering connection and its publisher, waiting for the first
    /// connection.
    async fn up(
        &self,
    ) -> Result<
        (
            RecoveringConnection<Topology>,
            RecoveringPublisher<Topology>,
        ),
        Error,
    > {
        let mut rx = self.conn.subscribe();
        let state = rx
            .wait_for(|s| !matches!(s, ConnState::Connecting))
            .await
            .map_err(|_| Error::Closed)?
            .clone();
        match state {
            ConnState::Up(rc, publisher) => Ok((rc, publisher)),
            ConnState::Failed(cause) => Err(Error::Connect(cause)),
            _ => Err(Error::Closed),
        }
    }

    /// What an error from the recovering connection means for the layer:
    /// its end (closed, or recovery gave up: then the layer fails), or the
    /// failure of one operation.
    fn classify(&self, rc: &RecoveringConnection<Topology>, e: carehare_tokio::Error) -> Error {
        if self.is_stopping() {
            return self.end_error();
        }
        match ended(rc) {
            Some(cause) => {
                self.fail(cause);
                self.end_error()
            }
            None => Error::Broker(e),
        }
    }

    /// A connection that is up, waiting while (re)connecting.
    async fn live_connection(&self) -> Result<Connection, Error> {
        loop {
            let (rc, _) = self.up().await?;
            let conn = rc.connection().await.map_err(|e| self.classify(&rc, e))?;
            if conn.closed().now_or_never().is_none() {
                return Ok(conn);
            }
            // Lost a moment ago; recovery is about to notice.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Unbinds the queue from `group`, logging a refusal.
    async fn unbind(&self, conn: &Connection, group: &str) {
        debug!(queue = self.queue_name, group, "unbinding");
        match conn
            .queue_unbind(
                &self.queue_name,
                &self.config.groups_exchange,
                group,
                FieldTable::default(),
            )
            .await
        {
            Ok(()) | Err(carehare_tokio::Error::ConnectionClosed(_)) => {}
            Err(e) => {
                error!(queue = self.queue_name, group, error = %e, "RabbitMQ refused to unbind from a group")
            }
        }
    }
}

/// The error the recovering connection ended with (closed, or gave up), if
/// it has ended.
fn ended(rc: &RecoveringConnection<Topology>) -> Option<carehare_tokio::Error> {
    match rc.connection().now_or_never() {
        Some(Err(carehare_tokio::Error::RecoveryTimeout(_))) | Some(Ok(_)) | None => None,
        Some(Err(cause)) => Some(cause),
    }
}

/// Closes the layer when the last [`Layer`] clone goes.
struct CloseOnDrop(Arc<Shared>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.begin_close();
    }
}

/// A channel layer: Python `channels_rabbitmq`'s `RabbitmqChannelLayer`,
/// on the same wire format, so Rust and Python processes can talk through
/// one RabbitMQ.
///
/// Each layer owns one exclusive RabbitMQ queue; its channels are
/// `<queue>!<random>`. Groups are bindings of that queue to the groups
/// exchange. A background task connects (retrying until RabbitMQ answers),
/// keeps the connection recovering after losses, and routes incoming
/// messages to channel buffers. An error that retrying can't fix (bad
/// credentials, a missing vhost) ends the layer: every operation then
/// fails with [`Error::Connect`].
///
/// Cheap to clone; the layer closes when [`close`](Self::close) is called
/// or the last clone is dropped.
///
/// ```no_run
/// # async fn f() -> Result<(), carehare_layer::Error> {
/// use carehare_layer::{Config, Layer};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Chat { r#type: String, text: String }
///
/// let layer = Layer::new(Config::new("amqp://guest:guest@localhost/"))?;
/// let me = layer.new_channel();
/// layer.group_add("room-1", &me).await?;
/// layer.group_send("room-1", &Chat { r#type: "chat.message".into(), text: "hi".into() }).await?;
/// let chat: Chat = layer.receive(&me).await?;
/// assert_eq!(chat.text, "hi");
/// layer.close().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Layer {
    shared: Arc<Shared>,
    _close_on_drop: Arc<CloseOnDrop>,
}

impl std::fmt::Debug for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layer")
            .field("queue_name", &self.shared.queue_name)
            .finish_non_exhaustive()
    }
}

impl Layer {
    /// Starts a layer: checks `config`, picks the queue name and starts
    /// connecting in the background (operations wait for the connection;
    /// if RabbitMQ refuses it for good, they fail with [`Error::Connect`]).
    /// Must be called within a tokio runtime.
    ///
    /// ```no_run
    /// # #[tokio::main] async fn main() -> Result<(), carehare_layer::Error> {
    /// let layer = carehare_layer::Layer::new(carehare_layer::Config::new("amqp://guest:guest@localhost/"))?;
    /// layer.connection().await?; // optional: wait until connected
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Config`] for unusable settings or outside a tokio runtime.
    pub fn new(config: Config) -> Result<Layer, Error> {
        config.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::Config("Layer::new must be called within a tokio runtime".into())
        })?;
        let options = config.connect_options()?;
        let queue_name = config
            .queue_name
            .clone()
            .unwrap_or_else(|| format!("channels_{}", names::random_letters(12)));
        let shared = Arc::new(Shared {
            prefix: format!("{queue_name}!"),
            queue_name,
            options,
            local: Mutex::new(Local::default()),
            local_expiry: config.effective_local_expiry(),
            permits: Arc::new(Semaphore::new(usize::from(config.local_capacity))),
            conn: watch::Sender::new(ConnState::Connecting),
            stopping: watch::Sender::new(false),
            bindings: tokio::sync::Mutex::new(()),
            buffered: Notify::new(),
            tasks: Mutex::new(Vec::new()),
            config,
        });
        let mut tasks = vec![runtime.spawn(run(shared.clone()))];
        if let Some(expiry) = shared.local_expiry {
            tasks.push(runtime.spawn(expire_locally(shared.clone(), expiry)));
        }
        *shared.tasks.lock().unwrap_or_else(|e| e.into_inner()) = tasks;
        Ok(Layer {
            _close_on_drop: Arc::new(CloseOnDrop(shared.clone())),
            shared,
        })
    }

    /// [`new`](Self::new), then waits until the layer is connected and its
    /// queue declared (messages for its channels wait there from then
    /// on). A message sent to one of its
    /// channels before that is dropped by RabbitMQ (there is no queue to
    /// route it to yet), as with Python's layer; a process that hands out
    /// channel names at once should start with this.
    ///
    /// ```no_run
    /// # #[tokio::main] async fn main() -> Result<(), carehare_layer::Error> {
    /// let layer = carehare_layer::Layer::connect(carehare_layer::Config::new("amqp://guest:guest@localhost/")).await?;
    /// let channel = layer.new_channel(); // other processes can send to it now
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`new`](Self::new), and [`Error::Connect`] when RabbitMQ refuses
    /// the layer for good (bad credentials, a missing vhost). A broker that
    /// is not up yet is waited for.
    pub async fn connect(config: Config) -> Result<Layer, Error> {
        let layer = Self::new(config)?;
        layer.connection().await?;
        Ok(layer)
    }

    /// This layer's RabbitMQ queue, `channels_<12 letters>`.
    ///
    /// ```no_run
    /// # fn f(layer: carehare_layer::Layer) {
    /// assert!(layer.new_channel().starts_with(&format!("{}!", layer.queue_name())));
    /// # }
    /// ```
    pub fn queue_name(&self) -> &str {
        &self.shared.queue_name
    }

    /// The settings this layer runs with.
    ///
    /// ```no_run
    /// # fn f(layer: carehare_layer::Layer) {
    /// println!("groups go through {}", layer.config().groups_exchange);
    /// # }
    /// ```
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// A new channel name for a consumer in this process:
    /// `<queue>!<12 random letters>`.
    ///
    /// ```no_run
    /// # fn f(layer: carehare_layer::Layer) {
    /// let channel = layer.new_channel();
    /// assert_eq!(channel.len(), layer.queue_name().len() + 13);
    /// # }
    /// ```
    pub fn new_channel(&self) -> String {
        format!("{}{}", self.shared.prefix, names::random_letters(12))
    }

    /// The current carehare connection, waiting while (re)connecting, to
    /// use RabbitMQ directly (e.g. job queues). Like Python's
    /// `carehare_connection`: it was connected at some point, and may
    /// drop at any time (then operations fail with
    /// [`carehare_tokio::Error::ConnectionClosed`], and the layer
    /// reconnects). Don't close it: the layer takes a connection closed by
    /// its own side as the end, and fails with [`Error::Connect`].
    ///
    /// ```no_run
    /// # async fn f(layer: carehare_layer::Layer) -> Result<(), Box<dyn std::error::Error>> {
    /// let connection = layer.connection().await?;
    /// connection.publish("task", "", "job_queue").await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Closed`] once the layer is closed; [`Error::Connect`] once
    /// RabbitMQ refused it for good.
    pub async fn connection(&self) -> Result<Connection, Error> {
        self.shared.live_connection().await
    }

    /// Sends `message` (anything that serializes to a map, like Python's
    /// `dict`) to `channel`, of this or any other layer on the broker.
    /// Waits while the layer reconnects; a publish the connection lost
    /// before RabbitMQ confirmed it is sent again on the next one (so,
    /// rarely, twice).
    ///
    /// ```no_run
    /// # async fn f(layer: carehare_layer::Layer, channel: &str) -> Result<(), carehare_layer::Error> {
    /// use std::collections::HashMap;
    /// let message = HashMap::from([("type", "websocket.send"), ("text", "hello")]);
    /// layer.send(channel, &message).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::ChannelFull`] when the recipient's queue is at
    /// `remote_capacity`; [`Error::InvalidChannelName`];
    /// [`Error::InvalidMessage`] / [`Error::Encode`] for a message that is
    /// not a map; [`Error::Closed`]; [`Error::Connect`] if RabbitMQ refused
    /// the layer for good; [`Error::Broker`] if RabbitMQ refuses the
    /// publish otherwise.
    pub async fn send<M: Serialize + ?Sized>(
        &self,
        channel: &str,
        message: &M,
    ) -> Result<(), Error> {
        let queue = names::check_channel(channel)?;
        let body = encode(message, &Recipient::Channel(channel.to_string()))?;
        debug!(channel, "send");
        match self.publish(body, "", queue).await {
            Err(Published::Nack) => Err(Error::ChannelFull(channel.to_string())),
            Err(Published::Other(e)) => Err(e),
            Ok(()) => Ok(()),
        }
    }

    /// Sends `message` to every channel in `group`, on every layer. A
    /// layer whose queue is full misses it (with a warning here), as
    /// Django Channels' spec wants: group sends never fail for capacity.
    ///
    /// ```no_run
    /// # async fn f(layer: carehare_layer::Layer) -> Result<(), carehare_layer::Error> {
    /// #[derive(serde::Serialize)]
    /// struct Chat<'a> { r#type: &'a str, text: &'a str }
    /// layer.group_send("room-1", &Chat { r#type: "chat.message", text: "hi all" }).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidGroupName`], [`Error::InvalidMessage`] /
    /// [`Error::Encode`], [`Error::Closed`], [`Error::Connect`],
    /// [`Error::Broker`].
    pub async fn group_send<M: Serialize + ?Sized>(
        &self,
        group: &str,
        message: &M,
    ) -> Result<(), Error> {
        names::check_group(group)?;
        let body = encode(message, &Recipient::Group(group.to_string()))?;
        debug!(group, "group_send");
        let exchange = self.shared.config.groups_exchange.clone();
        match self.publish(body, &exchange, group).await {
            Err(Published::Nack) => {
                warn!(
                    group,
                    "a group member's queue is at capacity: it misses this group_send"
                );
                Ok(())
            }
            Err(Published::Other(e)) => Err(e),
            Ok(()) => Ok(()),
        }
    }

    /// Publishes with confirms, waiting for a connection; the publisher
    /// sends again, on the next connection, what a lost one had not
    /// confirmed.
    async fn publish(
        &self,
        body: Bytes,
        exchange: &str,
        routing_key: &str,
    ) -> Result<(), Published> {
        let (rc, publisher) = self.shared.up().await?;
        let confirmation = publisher
            .publish(body, exchange, routing_key)
            .await
            .map_err(|e| self.shared.classify(&rc, e))?;
        match confirmation.await {
            Ok(()) => Ok(()),
            Err(carehare_tokio::Error::ServerSentNack) => Err(Published::Nack),
            Err(e) => Err(Published::Other(self.shared.classify(&rc, e))),
        }
    }

    /// Receives the next message for `channel` (one of this layer's),
    /// waiting as long as it takes; wrap it in a timeout if needed.
    /// When several calls wait on one channel, each message goes to one of
    /// them. Cancel-safe: a message is never lost to a dropped call.
    ///
    /// `M` is any type the message deserializes into: a struct, a
    /// `HashMap<String, _>`...
    ///
    /// ```no_run
    /// # async fn f(layer: carehare_layer::Layer) -> Result<(), carehare_layer::Error> {
    /// #[derive(serde::Deserialize)]
    /// struct Chat { r#type: String, text: String }
    /// let channel = layer.new_channel();
    /// let chat: Chat = layer.receive(&channel).await?;
    /// println!("{}: {}", chat.r#type, chat.text);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Closed`] when the layer is closed (also for calls already
    /// waiting); [`Error::Connect`] when RabbitMQ refused it for good (also
    /// for calls already waiting); [`Error::Decode`] if the message does
    /// not fit `M` (it is taken from the channel, and handed back inside
    /// the error); [`Error::InvalidChannelName`];
    /// [`Error::ForeignChannel`].
    ///
    /// Any message decodes as a [`Value`](crate::Value), Python `bytes`
    /// included (as `Value::Binary`); a `Vec<u8>` field of a struct needs
    /// `#[serde(with = "serde_bytes")]` to decode from (and encode to)
    /// msgpack binary, which is what Python `bytes` are.
    pub async fn receive<M: DeserializeOwned>(&self, channel: &str) -> Result<M, Error> {
        let raw = self.receive_raw(channel).await?;
        rmp_serde::from_slice(&raw).map_err(|source| Error::Decode { source, raw })
    }

    /// Like [`receive`](Self::receive), but returns the message as msgpack
    /// bytes (a map, without the layer's recipient key).
    ///
    /// ```no_run
    /// # async fn f(layer: carehare_layer::Layer, channel: &str) -> Result<(), carehare_layer::Error> {
    /// let bytes = layer.receive_raw(channel).await?;
    /// println!("{} bytes of msgpack", bytes.len());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`receive`](Self::receive), except [`Error::Decode`].
    pub async fn receive_raw(&self, channel: &str) -> Result<Bytes, Error> {
        self.check_local(channel)?;
        let waiting = {
            let mut local = self.shared.local();
            if local.closed {
                drop(local);
                return Err(self.shared.end_error());
            }
            local.take_or_wait(channel)
        };
        let (id, rx) = match waiting {
            Ok(delivery) => return Ok(delivery.body.clone()),
            Err(w) => w,
        };
        let mut guard = WaitGuard {
            shared: &self.shared,
            channel,
            id,
            rx,
        };
        match (&mut guard.rx).await {
            Ok(delivery) => Ok(delivery.body.clone()),
            Err(_) => Err(self.shared.end_error()),
        }
    }

    /// Adds `channel` (one of this layer's) to `group`. The first local
    /// member binds the layer's queue to the group (waiting for the
    /// connection if needed); the binding comes back after a reconnect.
    ///
    /// ```no_run
    /// # async fn f(layer: carehare_layer::Layer) -> Result<(), carehare_layer::Error> {
    /// let channel = layer.new_channel();
    /// layer.group_add("room-1", &channel).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidGroupName`], [`Error::InvalidChannelName`],
    /// [`Error::ForeignChannel`], [`Error::Closed`], [`Error::Connect`];
    /// [`Error::Broker`] if RabbitMQ refuses the binding (then the channel
    /// is not added).
    pub async fn group_add(&self, group: &str, channel: &str) -> Result<(), Error> {
        names::check_group(group)?;
        self.check_local(channel)?;
        let mut added = false;
        loop {
            let conn = self.shared.live_connection().await?;
            let _bindings = self.shared.bindings.lock().await;
            {
                let mut local = self.shared.local();
                if local.closed {
                    drop(local);
                    return Err(self.shared.end_error());
                }
                if !added {
                    if !local.group_add(group, channel) {
                        // The group had local members: it is bound.
                        return Ok(());
                    }
                    added = true;
                } else if !local.members(group).contains(&channel.to_string()) {
                    // Discarded meanwhile.
                    return Ok(());
                }
            }
            debug!(queue = self.shared.queue_name, group, "binding");
            let result = conn
                .queue_bind(
                    &self.shared.queue_name,
                    &self.shared.config.groups_exchange,
                    group,
                    FieldTable::default(),
                )
                .await;
            match result {
                Ok(()) => return Ok(()),
                // The connection went: a `setup` that read the groups
                // before this one joined may have run already, so bind
                // again on the next connection (binding twice is harmless).
                Err(carehare_tokio::Error::ConnectionClosed(_)) => {
                    if self.shared.is_stopping() {
                        return Err(self.shared.end_error());
                    }
                }
                Err(e) => {
                    self.shared.local().group_discard(group, channel);
                    error!(queue = self.shared.queue_name, group, error = %e, "RabbitMQ refused to bind to a group");
                    return Err(Error::Broker(e));
                }
            }
        }
    }

    /// Removes `channel` from `group`; does nothing if it is not in it.
    /// The last local member unbinds the layer's queue from the group.
    /// Never waits for a connection: while disconnected, the reconnect
    /// simply doesn't bind the group again.
    ///
    /// ```no_run
    /// # async fn f(layer: carehare_layer::Layer, channel: &str) -> Result<(), carehare_layer::Error> {
    /// layer.group_discard("room-1", channel).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidGroupName`], [`Error::InvalidChannelName`].
    pub async fn group_discard(&self, group: &str, channel: &str) -> Result<(), Error> {
        names::check_group(group)?;
        names::check_channel(channel)?;
        let _bindings = self.shared.bindings.lock().await;
        if !self.shared.local().group_discard(group, channel) {
            return Ok(());
        }
        let rc = match &*self.shared.conn.borrow() {
            ConnState::Up(rc, _) => rc.clone(),
            _ => return Ok(()),
        };
        match rc.connection().now_or_never() {
            Some(Ok(conn)) => self.shared.unbind(&conn, group).await,
            Some(Err(_)) => {}
            None => {
                // Reconnecting: a `setup` that read the groups before this
                // discard may have bound the group again. Unbind it once
                // connected, unless it has local members again by then.
                let (shared, group) = (self.shared.clone(), group.to_string());
                tokio::spawn(async move {
                    let Ok(conn) = shared.live_connection().await else {
                        return;
                    };
                    let _bindings = shared.bindings.lock().await;
                    if shared.local().members(&group).is_empty() {
                        shared.unbind(&conn, &group).await;
                    }
                });
            }
        }
        Ok(())
    }

    /// Closes the layer: pending and later [`receive`](Self::receive)s fail
    /// with [`Error::Closed`], buffered messages are dropped, the
    /// connection closes (RabbitMQ deletes the queue and its bindings), and
    /// the background tasks end before this returns. Calling it again is
    /// harmless.
    ///
    /// ```no_run
    /// # async fn f(layer: carehare_layer::Layer) {
    /// layer.close().await;
    /// # }
    /// ```
    pub async fn close(&self) {
        self.shared.begin_close();
        let tasks =
            std::mem::take(&mut *self.shared.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for task in tasks {
            let _ = task.await;
        }
    }

    fn check_local(&self, channel: &str) -> Result<(), Error> {
        names::check_channel(channel)?;
        if channel.starts_with(&self.shared.prefix) {
            Ok(())
        } else {
            Err(Error::ForeignChannel(channel.to_string()))
        }
    }
}

/// A pending receive: on drop, forget the waiter and give back a message
/// it was handed but didn't take.
struct WaitGuard<'a> {
    shared: &'a Shared,
    channel: &'a str,
    id: u64,
    rx: tokio::sync::oneshot::Receiver<Arc<Delivery>>,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        let leftover = self.rx.try_recv().ok();
        let mut local = self.shared.local();
        if local.closed {
            drop(local);
            drop(leftover);
            return;
        }
        local.cancel_waiter(self.channel, self.id, leftover);
    }
}

enum Published {
    Nack,
    Other(Error),
}

impl From<Error> for Published {
    fn from(e: Error) -> Self {
        Published::Other(e)
    }
}

fn encode<M: Serialize + ?Sized>(message: &M, recipient: &Recipient) -> Result<Bytes, Error> {
    let payload = rmp_serde::to_vec_named(message)?;
    wire::add_recipient(&payload, recipient)
        .map(Bytes::from)
        .map_err(|e| Error::InvalidMessage(e.to_string()))
}

/// The queue's arguments, as Python's `_setup_connection` declares them.
fn queue_arguments(config: &Config) -> FieldTable {
    let mut arguments = FieldTable::default();
    if let Some(capacity) = config.remote_capacity {
        arguments.insert("x-max-length".into(), int_value(u64::from(capacity)));
        arguments.insert(
            "x-overflow".into(),
            AMQPValue::LongString("reject-publish".into()),
        );
    }
    if let Some(expiry) = config.expiry {
        let ms = u64::try_from(expiry.as_millis()).unwrap_or(u64::MAX);
        arguments.insert("x-message-ttl".into(), int_value(ms));
    }
    arguments
}

fn int_value(n: u64) -> AMQPValue {
    match i32::try_from(n) {
        Ok(n) => AMQPValue::LongInt(n),
        Err(_) => AMQPValue::LongLongInt(i64::try_from(n).unwrap_or(i64::MAX)),
    }
}

/// A connection closed by this side: what ends `setup` when the layer
/// stops while it runs (it is not transient: recovery stops).
fn closed_by_client() -> carehare_tokio::Error {
    carehare_tokio::Error::ConnectionClosed(ConnectionError::ClosedByClient)
}

/// The layer's `setup`, run on every (re)connect: declares the groups
/// exchange and the queue (waiting while a previous connection's queue of
/// the same name still exists) and binds every group with a local member.
/// Holds only a weak reference: recovery outlives no layer.
fn setup(
    shared: Weak<Shared>,
) -> impl Fn(Connection) -> BoxFuture<'static, Result<Topology, carehare_tokio::Error>>
+ Send
+ Sync
+ 'static {
    move |conn| {
        let shared = shared.clone();
        Box::pin(async move {
            let shared = shared.upgrade().ok_or_else(closed_by_client)?;
            if shared.is_stopping() {
                return Err(closed_by_client());
            }
            declare(&shared, &conn, true).await?;
            info!(
                queue = shared.queue_name,
                address = %conn.address(),
                "Connected to RabbitMQ"
            );
            Ok(shared.queue_name.clone())
        })
    }
}

/// Declares the exchange and the queue and binds the groups; with
/// `fresh`, first waits until no queue of the same name exists.
async fn declare(
    shared: &Shared,
    conn: &Connection,
    fresh: bool,
) -> Result<(), carehare_tokio::Error> {
    // Spurious declarations (as on reconnect) are harmless.
    conn.exchange_declare(
        &shared.config.groups_exchange,
        "direct",
        ExchangeOptions::default(),
    )
    .await?;
    if fresh {
        wait_for_queue_name(shared, conn).await?;
    }
    conn.queue_declare(
        &shared.queue_name,
        QueueOptions {
            exclusive: true,
            arguments: queue_arguments(&shared.config),
            ..QueueOptions::default()
        },
    )
    .await?;
    let _bindings = shared.bindings.lock().await;
    let groups = shared.local().groups();
    let binds = groups.iter().map(|group| {
        conn.queue_bind(
            &shared.queue_name,
            &shared.config.groups_exchange,
            group,
            FieldTable::default(),
        )
    });
    for result in futures_util::future::join_all(binds).await {
        result?;
    }
    Ok(())
}

/// As Python does: refuses a queue that still exists (a previous
/// connection's, not yet deleted), and waits until it is gone.
async fn wait_for_queue_name(
    shared: &Shared,
    conn: &Connection,
) -> Result<(), carehare_tokio::Error> {
    let passive = QueueOptions {
        passive: true,
        ..QueueOptions::default()
    };
    let backoff = &shared.config.recovery.backoff;
    let mut attempt = 0;
    loop {
        match conn
            .queue_declare(&shared.queue_name, passive.clone())
            .await
        {
            Err(e) if e.reply_code() == Some(404) => return Ok(()),
            // 405 RESOURCE_LOCKED: another connection's exclusive queue.
            Err(e) if e.reply_code() == Some(405) => {
                warn!(queue = shared.queue_name, error = %e, "the queue name is taken; waiting");
            }
            Err(e) => return Err(e),
            Ok(_) => warn!(
                queue = shared.queue_name,
                "the queue still exists (a previous connection's?); refusing to redeclare it, waiting"
            ),
        }
        let delay = backoff.delay(attempt, fastrand::f64());
        attempt = attempt.saturating_add(1);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shared.stopped() => return Err(closed_by_client()),
        }
    }
}

/// The background task: connects, then routes deliveries until the layer
/// stops; if RabbitMQ refuses the layer for good, fails it.
async fn run(shared: Arc<Shared>) {
    // The first connection too is made by the recovering connection, in
    // the background: retried while RabbitMQ is not up yet, given up (and
    // the layer failed) on a refusal that retrying can't fix.
    let mut recovery = shared.config.recovery.clone();
    recovery.retry_first_connect = true;
    let connected = carehare_tokio::connect_recovering(
        shared.options.clone(),
        recovery,
        setup(Arc::downgrade(&shared)),
    )
    .await;
    let rc = match connected {
        Ok(rc) => rc,
        Err(cause) => return shared.fail(cause),
    };
    shared.set_conn(ConnState::Up(rc.clone(), rc.publisher(PUBLISH_WINDOW)));
    if !shared.is_stopping()
        && let Some(cause) = consume(&shared, &rc).await
    {
        shared.fail(cause);
    }
    let _ = rc.close().await;
}

/// Routes deliveries into the local buffers until the layer stops (returns
/// `None`) or the recovering connection ends (returns why).
async fn consume(
    shared: &Shared,
    rc: &RecoveringConnection<Topology>,
) -> Option<carehare_tokio::Error> {
    let options = ConsumerOptions {
        prefetch_count: shared.config.local_capacity,
        ..ConsumerOptions::default()
    };
    let subscribe = || Arc::new(rc.consumer(Topology::clone, options.clone()));
    let mut consumer = subscribe();
    let mut attempt = 0;
    loop {
        if shared.permits.available_permits() == 0 {
            let mut local = shared.local();
            if rate_limit(
                &mut local.last_backpressure_warning,
                Instant::now(),
                WARNING_INTERVAL,
            ) {
                warn!(
                    biggest = %local.biggest_queues(),
                    "back-pressuring: local_capacity messages wait to be received"
                );
            }
        }
        let permit = tokio::select! {
            permit = shared.permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return None,
            },
            () = shared.stopped() => return None,
        };
        let message = tokio::select! {
            m = consumer.next() => m,
            () = shared.stopped() => return None,
        };
        let message = match message {
            Ok(m) => {
                attempt = 0;
                m
            }
            // An `outage_timeout` ran out: keep waiting.
            Err(carehare_tokio::Error::RecoveryTimeout(_)) => continue,
            // The queue was deleted, or RabbitMQ refused the consumer:
            // declare the queue again, then consume anew (after a wait,
            // so a refusal can't spin).
            Err(
                e @ (carehare_tokio::Error::ConsumerCancelledByServer
                | carehare_tokio::Error::ChannelClosedByServer(_)),
            ) => {
                if let Some(cause) = ended(rc) {
                    return Some(cause);
                }
                warn!(queue = shared.queue_name, error = %e, "the consumer ended; declaring the queue again");
                let delay = shared
                    .config
                    .recovery
                    .backoff
                    .delay(attempt, fastrand::f64());
                attempt = attempt.saturating_add(1);
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shared.stopped() => return None,
                }
                match rc.connection().await {
                    Ok(conn) => {
                        if let Err(e) = declare(shared, &conn, false).await {
                            warn!(queue = shared.queue_name, error = %e, "declaring the queue again failed");
                        }
                    }
                    Err(carehare_tokio::Error::RecoveryTimeout(_)) => {}
                    Err(cause) => return (!shared.is_stopping()).then_some(cause),
                }
                consumer = subscribe();
                continue;
            }
            Err(cause) => return (!shared.is_stopping()).then_some(cause),
        };
        let (recipient, body) = match wire::take_recipient(&message.body) {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "dropping a message that is not a channel-layer message");
                consumer.ack(message.tag);
                continue;
            }
        };
        let delivery = Delivery::new(
            Bytes::from(body),
            Some((consumer.clone(), message.tag)),
            Some(permit),
        );
        let mut local = shared.local();
        let channels = match recipient {
            Recipient::Channel(channel) if channel.starts_with(&shared.prefix) => vec![channel],
            Recipient::Channel(channel) => {
                warn!(
                    channel,
                    "dropping a message for a channel that is not this layer's"
                );
                Vec::new()
            }
            Recipient::Group(group) => local.members(&group),
        };
        local.put(channels, delivery);
        drop(local);
        shared.buffered.notify_one();
    }
}

/// Drops (and acks) messages that waited in memory longer than `expiry`.
async fn expire_locally(shared: Arc<Shared>, expiry: Duration) {
    loop {
        let next = {
            let mut local = shared.local();
            if local.closed {
                return;
            }
            let now = Instant::now();
            let (expired, next) = local.expire(now, expiry);
            if !expired.is_empty() && local.should_warn_expiry(now, WARNING_INTERVAL) {
                warn!(
                    dropped = expired.count(),
                    channels = %expired,
                    "messages expired locally: nobody received them within local_expiry"
                );
            }
            next
        };
        match next {
            Some(deadline) => tokio::select! {
                () = tokio::time::sleep_until(deadline) => {}
                () = shared.stopped() => return,
            },
            None => tokio::select! {
                () = shared.buffered.notified() => {}
                () = shared.stopped() => return,
            },
        }
    }
}
