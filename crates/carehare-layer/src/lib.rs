//! # carehare-layer
//!
//! A [Django Channels](https://channels.readthedocs.io/) channel layer on
//! RabbitMQ, in Rust: the design and wire format of the Python package
//! `channels_rabbitmq`, on [`carehare_tokio`]. Rust services and Django
//! Channels processes using `channels_rabbitmq` can send to each other's
//! channels and groups through one broker.
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> Result<(), carehare_layer::Error> {
//! use carehare_layer::{Config, Layer};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize, Debug)]
//! struct Chat {
//!     r#type: String,
//!     text: String,
//! }
//!
//! let layer = Layer::new(Config::new("amqp://guest:guest@localhost/"))?;
//! let channel = layer.new_channel(); // "channels_AbcDefGhiJkl!MnoPqrStuVwx"
//! layer.group_add("room-1", &channel).await?;
//! layer
//!     .group_send("room-1", &Chat { r#type: "chat.message".into(), text: "hello".into() })
//!     .await?;
//! let chat: Chat = layer.receive(&channel).await?;
//! println!("{chat:?}");
//! layer.close().await;
//! # Ok(()) }
//! ```
//!
//! ## Design (as in Python's layer)
//!
//! - One exclusive RabbitMQ queue per [`Layer`], `channels_<12 letters>`,
//!   declared with `x-max-length` = `remote_capacity`, `x-overflow` =
//!   `reject-publish` and `x-message-ttl` = `expiry`. RabbitMQ deletes it
//!   (and its bindings) when the connection goes.
//! - Channels are `<queue>!<12 letters>`. [`Layer::send`] publishes to the
//!   default exchange with the queue as routing key; a full queue nacks,
//!   which is [`Error::ChannelFull`].
//! - Groups use one direct exchange (`groups_exchange`, `groups` by
//!   default): the queue is bound with the group name when the group gets
//!   its first local channel and unbound when it loses its last.
//!   [`Layer::group_send`] publishes there; a full queue misses the
//!   message (a warning is logged).
//! - Messages are msgpack maps; the recipient travels in the map as
//!   `__asgi_channel__` or `__asgi_group__`.
//! - At most `local_capacity` messages are held in memory (the consumer's
//!   prefetch); messages not received within `local_expiry` are acked and
//!   dropped, with a rate-limited warning.
//! - The connection is a [`carehare_tokio::RecoveringConnection`]: after
//!   a loss it reconnects with a jittered backoff ([`Config::recovery`]),
//!   declaring everything again and restoring group bindings; operations
//!   wait for the new connection instead of failing. On a cluster
//!   ([`Config::hosts`], or a host name that resolves to every node), it
//!   reconnects to another node when its node goes away. An error that
//!   retrying can't fix (bad credentials, a missing vhost) stops the
//!   layer at once: operations fail with [`Error::Connect`].
//! - [`Layer::close`] ends every pending and later [`Layer::receive`] with
//!   [`Error::Closed`].
//!
//! ## Message types
//!
//! A message is any type that serializes to a msgpack map: a struct, a
//! `HashMap`, or a [`Value`] (re-exported from `rmpv`), which round-trips
//! every msgpack value and so takes any message, whatever its shape. Python
//! `bytes` (e.g. the `bytes` key of Channels' `websocket.receive`) are
//! msgpack binary: they decode as `Value::Binary`, or into a `Vec<u8>`
//! field marked `#[serde(with = "serde_bytes")]`. Without that attribute a
//! `Vec<u8>` is encoded as a list of integers, which Python receives as a
//! `list`, not `bytes`.
//!
//! ```no_run
//! # async fn f(layer: carehare_layer::Layer, channel: &str) -> Result<(), carehare_layer::Error> {
//! use carehare_layer::{Error, Value};
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Frame {
//!     r#type: String,
//!     #[serde(with = "serde_bytes")]
//!     bytes: Vec<u8>,
//! }
//! layer
//!     .send(channel, &Frame { r#type: "websocket.send".into(), bytes: vec![0, 255] })
//!     .await?;
//! match layer.receive::<Frame>(channel).await {
//!     Ok(frame) => println!("{} bytes", frame.bytes.len()),
//!     // Not a Frame: the message is in the error, e.g. as a Value.
//!     Err(Error::Decode { raw, .. }) => {
//!         let value: Value = rmp_serde::from_slice(&raw).expect("a layer message is msgpack");
//!         println!("something else: {value}");
//!     }
//!     Err(e) => return Err(e),
//! }
//! # Ok(()) }
//! ```
//!
//! Deviations from Django Channels' spec are Python's: no `flush`, no
//! `group_expiry`, no "normal channels" (names without `!`). Channels can
//! only be received from and added to groups on the layer that made them.

#![deny(unreachable_pub)]

mod config;
mod error;
mod layer;
mod local;
mod names;
mod wire;

pub use carehare_tokio;
pub use config::Config;
pub use error::Error;
pub use layer::Layer;
/// A msgpack value of any shape: receive one to take any message.
pub use rmpv::Value;

/// The README's examples, compiled as doctests so that they keep building.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
