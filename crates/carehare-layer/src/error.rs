//! The errors the layer's operations return.

/// Everything a layer operation can fail with.
///
/// Disconnections are not errors: operations wait for the layer to
/// reconnect. Two errors end the layer for good: [`Closed`](Error::Closed)
/// and [`Connect`](Error::Connect).
///
/// ```no_run
/// # async fn f(layer: carehare_layer::Layer, channel: &str) -> Result<(), carehare_layer::Error> {
/// use carehare_layer::Error;
/// #[derive(serde::Serialize)]
/// struct Hello<'a> { r#type: &'a str }
/// match layer.send(channel, &Hello { r#type: "hello" }).await {
///     Ok(()) => {}
///     Err(Error::ChannelFull(channel)) => eprintln!("{channel} is not keeping up"),
///     Err(other) => return Err(other),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The channel name is not `<queue>!<local>` with Django Channels'
    /// characters (ASCII letters, digits, `-`, `_`, `.`; any letter or
    /// digit after the `!`), or is 100 characters or longer. "Normal
    /// channels" (without `!`) are not supported, as in Python's layer.
    #[error(
        "invalid channel name {0:?}: want <queue>!<local>, fewer than 100 characters of [a-zA-Z0-9-_.]"
    )]
    InvalidChannelName(String),
    /// The group name is empty, is 100 characters or longer, or has
    /// characters other than ASCII letters, digits, `-`, `_` and `.`.
    #[error("invalid group name {0:?}: want 1 to 99 characters of [a-zA-Z0-9-_.]")]
    InvalidGroupName(String),
    /// The channel belongs to another layer instance: only this layer's
    /// channels (made by [`Layer::new_channel`](crate::Layer::new_channel))
    /// can be received from or added to groups here.
    #[error("channel {0:?} does not belong to this layer")]
    ForeignChannel(String),
    /// The recipient's RabbitMQ queue is at `remote_capacity`: RabbitMQ
    /// refused the message (`basic.nack`).
    #[error("channel {0:?} is full")]
    ChannelFull(String),
    /// The layer was closed: every pending and later operation fails so.
    #[error("the channel layer is closed")]
    Closed,
    /// RabbitMQ refused the layer with an error that retrying can't fix
    /// (see [`carehare_tokio::Error::is_transient`]): bad credentials, a
    /// missing or forbidden vhost, TLS settings, or a refused declaration
    /// of the layer's exchange or queue, whether on the first connection
    /// or on a reconnect. The layer has stopped: every pending and later
    /// operation fails so, at once, until it is closed. (With
    /// [`RecoveryOptions::retry_permanent`](carehare_tokio::RecoveryOptions::retry_permanent)
    /// in [`Config::recovery`](crate::Config::recovery), those errors are
    /// retried instead.)
    #[error("RabbitMQ refused the channel layer: {0}")]
    Connect(#[source] carehare_tokio::Error),
    /// The message could not be encoded with msgpack.
    #[error("could not encode the message: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    /// The message is not a map, or uses a key the layer reserves
    /// (`__asgi_channel__`, `__asgi_group__`).
    #[error("invalid message: {0}")]
    InvalidMessage(String),
    /// A received message could not be decoded into the requested type.
    /// It is taken from the channel, but not lost: `raw` is the message as
    /// [`Layer::receive_raw`](crate::Layer::receive_raw) would have
    /// returned it (msgpack), e.g. to decode it as a [`Value`](crate::Value),
    /// which takes any message.
    #[error("could not decode the message: {source}")]
    Decode {
        /// Why it does not fit the type.
        #[source]
        source: rmp_serde::decode::Error,
        /// The message, as msgpack bytes (a map, without the layer's
        /// recipient key).
        raw: bytes::Bytes,
    },
    /// The configuration is unusable (e.g. a bad `host` URL).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// RabbitMQ refused an operation, e.g. a binding to a groups exchange
    /// that was deleted (or the connection stayed down longer than
    /// [`RecoveryOptions::outage_timeout`](carehare_tokio::RecoveryOptions::outage_timeout),
    /// when one is set).
    #[error(transparent)]
    Broker(#[from] carehare_tokio::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_and_its_io_error_are_reachable_through_source() {
        let refused = carehare_tokio::Error::Connect {
            address: "a:1".into(),
            error: std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into(),
        };
        for e in [Error::Connect(refused.clone()), Error::Broker(refused)] {
            let kind =
                std::iter::successors(Some(&e as &(dyn std::error::Error + 'static)), |&e| {
                    e.source()
                })
                .find_map(|e| e.downcast_ref::<std::io::Error>())
                .map(std::io::Error::kind);
            assert_eq!(kind, Some(std::io::ErrorKind::ConnectionRefused), "{e}");
        }
    }
}
