//! The layer: its handle, its operations, and the background task that
//! keeps a connection (reconnecting forever) and routes messages.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use carehare_tokio::{
    AMQPValue, AckingConsumer, ConnectOptions, Connection, ConsumerOptions, ExchangeOptions,
    FieldTable, QueueOptions,
};
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

/// The layer's view of its connection.
#[derive(Clone)]
enum ConnState {
    /// Connecting or reconnecting: operations wait.
    Down,
    /// Usable; the number tells connections apart.
    Up(Connection, u64),
    /// `close()` was called: operations fail with [`Error::Closed`].
    Closed,
}

struct Shared {
    config: Config,
    options: ConnectOptions,
    queue_name: String,
    /// `<queue_name>!`, the prefix of this layer's channels.
    prefix: String,
    local: Mutex<Local>,
    local_expiry: Option<Duration>,
    /// `local_capacity` permits: one per message held in memory.
    permits: Arc<Semaphore>,
    conn: watch::Sender<ConnState>,
    closing: watch::Sender<bool>,
    /// Held while group membership and bindings change together, so a
    /// reconnect binds exactly the groups that have local members.
    bindings: tokio::sync::Mutex<()>,
    /// Signalled when a message is buffered (for the expiry task).
    buffered: Notify,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    fn local(&self) -> MutexGuard<'_, Local> {
        self.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the connection state, never leaving `Closed`.
    fn set_conn(&self, state: ConnState) {
        self.conn.send_if_modified(|s| {
            if matches!(s, ConnState::Closed) {
                return false;
            }
            *s = state;
            true
        });
    }

    fn generation(&self) -> Option<u64> {
        match &*self.conn.borrow() {
            ConnState::Up(_, g) => Some(*g),
            _ => None,
        }
    }

    /// Marks connection `generation` unusable (an operation saw it die
    /// before the reader task did).
    fn mark_down(&self, generation: u64) {
        self.conn.send_if_modified(|s| match s {
            ConnState::Up(_, g) if *g == generation => {
                *s = ConnState::Down;
                true
            }
            _ => false,
        });
    }

    fn is_closing(&self) -> bool {
        *self.closing.borrow()
    }

    /// Resolves once `close()` was called (or every handle dropped).
    async fn closing(&self) {
        let mut rx = self.closing.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }

    /// Starts closing: no more deliveries, every receive fails.
    fn begin_close(&self) {
        self.closing.send_replace(true);
        self.conn.send_replace(ConnState::Closed);
        // Dropped outside the lock: dropping acks.
        let dropped = self.local().close();
        drop(dropped);
    }

    async fn wait_connection(&self) -> Result<(Connection, u64), Error> {
        let mut rx = self.conn.subscribe();
        let state = rx
            .wait_for(|s| !matches!(s, ConnState::Down))
            .await
            .map_err(|_| Error::Closed)?
            .clone();
        match state {
            ConnState::Up(conn, generation) => Ok((conn, generation)),
            _ => Err(Error::Closed),
        }
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
/// exchange. A background task keeps the connection, reconnecting forever,
/// and routes incoming messages to channel buffers.
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
    /// connecting in the background (operations wait for the connection).
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
            conn: watch::Sender::new(ConnState::Down),
            closing: watch::Sender::new(false),
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
    /// reconnects).
    ///
    /// ```no_run
    /// # async fn f(layer: carehare_layer::Layer) -> Result<(), Box<dyn std::error::Error>> {
    /// let connection = layer.connection().await?;
    /// connection.publish("task", "", "job_queue").await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Closed`] once the layer is closed.
    pub async fn connection(&self) -> Result<Connection, Error> {
        self.shared.wait_connection().await.map(|(c, _)| c)
    }

    /// Sends `message` (anything that serializes to a map, like Python's
    /// `dict`) to `channel`, of this or any other layer on the broker.
    /// Waits while the layer reconnects.
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
    /// not a map; [`Error::Closed`]; [`Error::Broker`] if RabbitMQ refuses
    /// the publish otherwise.
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
    /// [`Error::Encode`], [`Error::Closed`], [`Error::Broker`].
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
                warn!("Aborting send to group {group}: a queue is at capacity");
                Ok(())
            }
            Err(Published::Other(e)) => Err(e),
            Ok(()) => Ok(()),
        }
    }

    /// Publishes, waiting for a connection; a publish the connection
    /// dropped is sent again on the next one.
    async fn publish(
        &self,
        body: Bytes,
        exchange: &str,
        routing_key: &str,
    ) -> Result<(), Published> {
        loop {
            let (conn, generation) = self.shared.wait_connection().await?;
            match conn.publish(body.clone(), exchange, routing_key).await {
                Ok(()) => return Ok(()),
                Err(carehare_tokio::Error::ServerSentNack) => return Err(Published::Nack),
                Err(carehare_tokio::Error::ConnectionClosed(e)) => {
                    debug!("publish lost its connection ({e}); waiting for the next one");
                    self.shared.mark_down(generation);
                }
                Err(e) => return Err(Published::Other(Error::Broker(e))),
            }
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
    /// waiting); [`Error::Decode`] if the message does not fit `M` (it is
    /// consumed); [`Error::InvalidChannelName`]; [`Error::ForeignChannel`].
    pub async fn receive<M: DeserializeOwned>(&self, channel: &str) -> Result<M, Error> {
        let body = self.receive_raw(channel).await?;
        Ok(rmp_serde::from_slice(&body)?)
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
                return Err(Error::Closed);
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
            Err(_) => Err(Error::Closed),
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
    /// [`Error::ForeignChannel`], [`Error::Closed`]; [`Error::Broker`] if
    /// RabbitMQ refuses the binding (then the channel is not added).
    pub async fn group_add(&self, group: &str, channel: &str) -> Result<(), Error> {
        names::check_group(group)?;
        self.check_local(channel)?;
        loop {
            let (conn, generation) = self.shared.wait_connection().await?;
            let _bindings = self.shared.bindings.lock().await;
            if self.shared.generation() != Some(generation) {
                continue;
            }
            let is_new = {
                let mut local = self.shared.local();
                if local.closed {
                    return Err(Error::Closed);
                }
                local.group_add(group, channel)
            };
            if !is_new {
                return Ok(());
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
            return match result {
                Ok(()) => Ok(()),
                Err(carehare_tokio::Error::ConnectionClosed(_)) if self.shared.is_closing() => {
                    Err(Error::Closed)
                }
                // The reconnect binds it: it is a member now.
                Err(carehare_tokio::Error::ConnectionClosed(_)) => Ok(()),
                Err(e) => {
                    self.shared.local().group_discard(group, channel);
                    error!("RabbitMQ refused to bind to group {group}: {e}");
                    Err(Error::Broker(e))
                }
            };
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
        let conn = match &*self.shared.conn.borrow() {
            ConnState::Up(conn, _) => conn.clone(),
            _ => return Ok(()),
        };
        debug!(queue = self.shared.queue_name, group, "unbinding");
        match conn
            .queue_unbind(
                &self.shared.queue_name,
                &self.shared.config.groups_exchange,
                group,
                FieldTable::default(),
            )
            .await
        {
            Ok(()) | Err(carehare_tokio::Error::ConnectionClosed(_)) => {}
            Err(e) => error!("RabbitMQ refused to unbind from group {group}: {e}"),
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

/// Connects, declares the exchange and the queue, binds the groups and
/// starts consuming. The bindings lock is returned held: the caller
/// publishes the connection before letting group changes through.
async fn connect(
    shared: &Shared,
) -> Result<(Connection, AckingConsumer, tokio::sync::MutexGuard<'_, ()>), String> {
    let conn = carehare_tokio::connect_with(shared.options.clone())
        .await
        .map_err(|e| e.to_string())?;
    let setup = async {
        // Spurious declarations (as on reconnect) are harmless.
        conn.exchange_declare(
            &shared.config.groups_exchange,
            "direct",
            ExchangeOptions::default(),
        )
        .await
        .map_err(|e| e.to_string())?;
        // As Python does: refuse a queue that still exists (a previous
        // connection's, not yet deleted), and retry later.
        let passive = QueueOptions {
            passive: true,
            ..QueueOptions::default()
        };
        match conn.queue_declare(&shared.queue_name, passive).await {
            Ok(_) => {
                return Err(format!(
                    "queue {} still exists (a previous connection's?); refusing to redeclare it",
                    shared.queue_name
                ));
            }
            Err(e) if e.reply_code() == Some(404) => {}
            Err(e) => return Err(e.to_string()),
        }
        conn.queue_declare(
            &shared.queue_name,
            QueueOptions {
                exclusive: true,
                arguments: queue_arguments(&shared.config),
                ..QueueOptions::default()
            },
        )
        .await
        .map_err(|e| e.to_string())?;
        let bindings = shared.bindings.lock().await;
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
            result.map_err(|e| format!("binding groups: {e}"))?;
        }
        let consumer = conn
            .consumer(
                &shared.queue_name,
                ConsumerOptions {
                    prefetch_count: shared.config.local_capacity,
                    ..ConsumerOptions::default()
                },
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok((consumer, bindings))
    };
    match setup.await {
        Ok((consumer, bindings)) => Ok((conn, consumer, bindings)),
        Err(e) => {
            close_quietly(&conn).await;
            Err(e)
        }
    }
}

async fn close_quietly(conn: &Connection) {
    let _ = conn.close().await;
}

/// The background task: connect, consume until the connection ends,
/// reconnect; until the layer closes.
async fn run(shared: Arc<Shared>) {
    let mut generation = 0u64;
    loop {
        if shared.is_closing() {
            break;
        }
        let connected = tokio::select! {
            result = connect(&shared) => result,
            () = shared.closing() => break,
        };
        let (conn, consumer, bindings) = match connected {
            Ok(c) => c,
            Err(e) => {
                warn!("Failure connecting to RabbitMQ: {e}. Retrying");
                tokio::select! {
                    () = tokio::time::sleep(shared.config.reconnect_delay) => continue,
                    () = shared.closing() => break,
                }
            }
        };
        generation += 1;
        shared.set_conn(ConnState::Up(conn.clone(), generation));
        drop(bindings);
        info!(
            queue = shared.queue_name,
            address = %conn.address(),
            "Connected to RabbitMQ"
        );
        let connected_at = Instant::now();
        let consumer = Arc::new(consumer);
        let why = consume(&shared, &conn, &consumer).await;
        shared.mark_down(generation);
        close_quietly(&conn).await;
        match why {
            None => break,
            Some(e) => warn!("Disconnected from RabbitMQ: {e}. Will reconnect."),
        }
        // A connection that fails at once (say, the consumer is refused)
        // must not turn into a busy loop.
        if connected_at.elapsed() < shared.config.reconnect_delay {
            tokio::select! {
                () = tokio::time::sleep(shared.config.reconnect_delay) => {}
                () = shared.closing() => break,
            }
        }
    }
    shared.conn.send_replace(ConnState::Closed);
}

/// Routes deliveries into the local buffers until the connection or the
/// consumer ends (returns why) or the layer closes (returns `None`).
async fn consume(
    shared: &Shared,
    conn: &Connection,
    consumer: &Arc<AckingConsumer>,
) -> Option<String> {
    let closed = conn.closed();
    tokio::pin!(closed);
    loop {
        if shared.permits.available_permits() == 0 {
            let mut local = shared.local();
            if rate_limit(
                &mut local.last_backpressure_warning,
                Instant::now(),
                WARNING_INTERVAL,
            ) {
                warn!(
                    "Back-pressuring. Biggest queues: {}",
                    local.biggest_queues()
                );
            }
        }
        let permit = tokio::select! {
            permit = shared.permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return None,
            },
            e = &mut closed => return Some(e.to_string()),
            () = shared.closing() => return None,
        };
        let message = tokio::select! {
            m = consumer.next() => m,
            e = &mut closed => return Some(e.to_string()),
            () = shared.closing() => return None,
        };
        let message = match message {
            Ok(m) => m,
            Err(e) => return Some(e.to_string()),
        };
        let (recipient, body) = match wire::take_recipient(&message.body) {
            Ok(r) => r,
            Err(e) => {
                warn!("Dropping a message that is not a channel-layer message: {e}");
                consumer.ack(message.delivery_tag);
                continue;
            }
        };
        let delivery = Delivery::new(
            Bytes::from(body),
            Some((consumer.clone(), message.delivery_tag)),
            Some(permit),
        );
        let mut local = shared.local();
        let channels = match recipient {
            Recipient::Channel(channel) if channel.starts_with(&shared.prefix) => vec![channel],
            Recipient::Channel(channel) => {
                warn!("Dropping a message for channel {channel}, which is not this layer's");
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
            let (dropped, next) = local.expire(now, expiry);
            if dropped > 0 && local.should_warn_expiry(now, WARNING_INTERVAL) {
                warn!(
                    "A message (or messages) expired locally. Biggest queues: {}",
                    local.biggest_queues()
                );
            }
            next
        };
        match next {
            Some(deadline) => tokio::select! {
                () = tokio::time::sleep_until(deadline) => {}
                () = shared.closing() => return,
            },
            None => tokio::select! {
                () = shared.buffered.notified() => {}
                () = shared.closing() => return,
            },
        }
    }
}
