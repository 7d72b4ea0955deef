//! Every AMQP 0-9-1 method a RabbitMQ client sends or receives, including
//! RabbitMQ's extensions (`connection.blocked`/`unblocked`,
//! `connection.update-secret`, `basic.nack`, `exchange.bind`/`unbind`,
//! `confirm.select`).
//!
//! Each method is a plain struct with public fields named as in the spec
//! (hyphens become underscores, `type` becomes `kind`, reserved arguments
//! are `reserved_1`...). [`Method`] is the sum of them all.

mod field;
#[cfg(test)]
pub(crate) use field::arb as field_arb;
// Declared first: its macros read the annotations in `methods!`.
#[macro_use]
mod replies;

use bytes::{Bytes, BytesMut};

use crate::error::DecodeError;
use crate::types::{FieldTable, Secret, ShortStr};
use crate::wire::{Dec, Enc};
use field::Field;

macro_rules! methods {
    ($(
        $(#[$doc:meta])*
        $variant:ident = ($class:literal, $method:literal) $name:literal
            $( [ $($client:tt)* ] )?
        {
            $( $(#[$fdoc:meta])* $field:ident : $ty:ty ),* $(,)?
        }
    )*) => {
        $(
            $(#[$doc])*
            #[doc = concat!("\n\nAMQP `", $name, "` (", stringify!($class), ".", stringify!($method), ").")]
            #[derive(Debug, Clone, PartialEq, Default)]
            pub struct $variant {
                $( $(#[$fdoc])* pub $field: $ty, )*
            }

            impl $variant {
                /// The class id.
                pub const CLASS_ID: u16 = $class;
                /// The method id.
                pub const METHOD_ID: u16 = $method;
                /// The spec's name, e.g. `queue.declare`.
                pub const NAME: &'static str = $name;

                #[allow(unused_variables, unused_mut)]
                fn decode_args(dec: &mut Dec) -> Result<Self, DecodeError> {
                    Ok(Self { $( $field: <$ty as Field>::decode(dec)?, )* })
                }

                #[allow(unused_variables)]
                fn encode_args(&self, enc: &mut Enc<'_>) {
                    $( Field::encode(&self.$field, enc); )*
                }

                /// Appends the method-frame payload, like [`Method::encode`]
                /// without wrapping (and so cloning) this into a `Method`.
                #[allow(dead_code)]
                pub(crate) fn encode_payload(&self, out: &mut BytesMut) {
                    let mut enc = Enc::new(out);
                    enc.u16($class);
                    enc.u16($method);
                    self.encode_args(&mut enc);
                }
            }

            impl From<$variant> for Method {
                fn from(m: $variant) -> Self {
                    Method::$variant(m)
                }
            }
        )*

        /// Any AMQP method.
        #[derive(Debug, Clone, PartialEq)]
        #[non_exhaustive]
        #[allow(missing_docs)] // each variant holds the struct of the same name
        pub enum Method {
            $( $variant($variant), )*
        }

        impl Method {
            /// The class id.
            pub fn class_id(&self) -> u16 {
                match self { $( Method::$variant(_) => $class, )* }
            }

            /// The method id.
            pub fn method_id(&self) -> u16 {
                match self { $( Method::$variant(_) => $method, )* }
            }

            /// The spec's name, e.g. `basic.deliver`.
            pub fn name(&self) -> &'static str {
                match self { $( Method::$variant(_) => $name, )* }
            }

            /// The name of a method by ids, if it is one we know.
            pub fn name_of(class_id: u16, method_id: u16) -> Option<&'static str> {
                match (class_id, method_id) {
                    $( ($class, $method) => Some($name), )*
                    _ => None,
                }
            }

            /// Decodes a whole method-frame payload: class id, method id,
            /// arguments, and nothing after them.
            pub fn decode(payload: Bytes) -> Result<Method, DecodeError> {
                let mut dec = Dec::new(payload);
                let class_id = dec.u16()?;
                let method_id = dec.u16()?;
                let method = match (class_id, method_id) {
                    $( ($class, $method) => Method::$variant($variant::decode_args(&mut dec)?), )*
                    _ => return Err(DecodeError::UnknownMethod { class_id, method_id }),
                };
                dec.finish()?;
                Ok(method)
            }

            /// Appends the method-frame payload (ids and arguments).
            pub fn encode(&self, out: &mut BytesMut) {
                let mut enc = Enc::new(out);
                enc.u16(self.class_id());
                enc.u16(self.method_id());
                match self { $( Method::$variant(m) => m.encode_args(&mut enc), )* }
            }
        }

        /// The `(class_id, method_id)` pairs that answer `method` when a
        /// client sends it, or `None` when it gets no reply (asynchronous
        /// methods, and `no_wait`).
        ///
        /// `basic.get` has two possible answers; every other method has one.
        #[allow(unused_variables)] // `m` is read only for `unless no_wait`
        pub fn reply_ids(method: &Method) -> Option<&'static [(u16, u16)]> {
            match method {
                $( Method::$variant(m) => reply_ids_of!(m; $($($client)*)?), )*
            }
        }

        /// Whether a client may send this method through the generic
        /// `call`/`send` commands: connection-class and channel open/close
        /// methods have commands of their own, publishes need content, and
        /// server-only methods are refused.
        pub(crate) fn client_may_send(method: &Method) -> bool {
            match method {
                $( Method::$variant(_) => may_send_of!($($($client)*)?), )*
            }
        }

        /// Every method with default arguments, and again with `no_wait`
        /// set when it has that field.
        #[cfg(test)]
        pub(crate) fn every_method() -> Vec<(Method, Option<Method>)> {
            vec![$(
                (Method::$variant($variant::default()), with_no_wait!($variant; $($field)*)),
            )*]
        }

        #[cfg(test)]
        pub(crate) fn arbitrary_method() -> proptest::strategy::BoxedStrategy<Method> {
            use proptest::prelude::*;
            use field::arb::Arb;
            let all: Vec<BoxedStrategy<Method>> = vec![
                $(
                    (Just(()), $( <$ty as Arb>::arb(), )* )
                        .prop_map(|((), $( $field, )* )| Method::$variant($variant { $( $field, )* }))
                        .boxed(),
                )*
            ];
            proptest::strategy::Union::new(all).boxed()
        }
    };
}

methods! {
    /// The server's greeting.
    ConnectionStart = (10, 10) "connection.start" {
        /// Protocol major version (0).
        version_major: u8,
        /// Protocol minor version (9).
        version_minor: u8,
        /// Product, version, capabilities...
        server_properties: FieldTable,
        /// Space-separated SASL mechanisms.
        mechanisms: Bytes,
        /// Space-separated locales.
        locales: Bytes,
    }
    /// The client's answer to `start`.
    ConnectionStartOk = (10, 11) "connection.start-ok" [core -> ConnectionTune] {
        /// Product, version, platform, capabilities, connection name.
        client_properties: FieldTable,
        /// The chosen SASL mechanism.
        mechanism: ShortStr,
        /// The SASL response: holds the password, so it is redacted in `Debug`.
        response: Secret,
        /// The chosen locale.
        locale: ShortStr,
    }
    /// A SASL challenge.
    ConnectionSecure = (10, 20) "connection.secure" {
        /// The challenge.
        challenge: Bytes,
    }
    /// A SASL challenge response.
    ConnectionSecureOk = (10, 21) "connection.secure-ok" [core -> ConnectionTune] {
        /// The response (redacted in `Debug`).
        response: Secret,
    }
    /// The server's proposed limits.
    ConnectionTune = (10, 30) "connection.tune" {
        /// Highest channel number, 0 for no limit.
        channel_max: u16,
        /// Largest frame, 0 for no limit.
        frame_max: u32,
        /// Heartbeat interval in seconds, 0 for none.
        heartbeat: u16,
    }
    /// The negotiated limits.
    ConnectionTuneOk = (10, 31) "connection.tune-ok" {
        /// Highest channel number.
        channel_max: u16,
        /// Largest frame.
        frame_max: u32,
        /// Heartbeat interval in seconds.
        heartbeat: u16,
    }
    /// Opens a virtual host.
    ConnectionOpen = (10, 40) "connection.open" [core -> ConnectionOpenOk] {
        /// The vhost.
        virtual_host: ShortStr,
        /// Reserved (capabilities).
        reserved_1: ShortStr,
        /// Reserved (insist).
        reserved_2: bool,
    }
    /// The vhost is open.
    ConnectionOpenOk = (10, 41) "connection.open-ok" {
        /// Reserved (known hosts).
        reserved_1: ShortStr,
    }
    /// Closes the connection, with a reason.
    ConnectionClose = (10, 50) "connection.close" [core -> ConnectionCloseOk] {
        /// AMQP reply code.
        reply_code: u16,
        /// Human-readable reason.
        reply_text: ShortStr,
        /// Class of the failing method, or 0.
        class_id: u16,
        /// The failing method, or 0.
        method_id: u16,
    }
    /// Confirms a `connection.close`.
    ConnectionCloseOk = (10, 51) "connection.close-ok" {}
    /// RabbitMQ: the broker blocked publishing (resource alarm).
    ConnectionBlocked = (10, 60) "connection.blocked" {
        /// Why, e.g. `low on memory`.
        reason: ShortStr,
    }
    /// RabbitMQ: publishing is unblocked.
    ConnectionUnblocked = (10, 61) "connection.unblocked" {}
    /// RabbitMQ: replaces the credential (e.g. an expiring OAuth token).
    ConnectionUpdateSecret = (10, 70) "connection.update-secret" [core -> ConnectionUpdateSecretOk] {
        /// The new secret (redacted in `Debug`).
        new_secret: Secret,
        /// Why.
        reason: ShortStr,
    }
    /// RabbitMQ: the secret was replaced.
    ConnectionUpdateSecretOk = (10, 71) "connection.update-secret-ok" {}

    /// Opens a channel.
    ChannelOpen = (20, 10) "channel.open" [core -> ChannelOpenOk] {
        /// Reserved (out-of-band).
        reserved_1: ShortStr,
    }
    /// The channel is open.
    ChannelOpenOk = (20, 11) "channel.open-ok" {
        /// Reserved (channel id).
        reserved_1: Bytes,
    }
    /// Asks the peer to pause or resume sending content.
    ChannelFlow = (20, 20) "channel.flow" [send -> ChannelFlowOk] {
        /// Whether content may flow.
        active: bool,
    }
    /// Confirms `channel.flow`.
    ChannelFlowOk = (20, 21) "channel.flow-ok" [send] {
        /// The flow state now.
        active: bool,
    }
    /// Closes a channel, with a reason.
    ChannelClose = (20, 40) "channel.close" [core -> ChannelCloseOk] {
        /// AMQP reply code.
        reply_code: u16,
        /// Human-readable reason.
        reply_text: ShortStr,
        /// Class of the failing method, or 0.
        class_id: u16,
        /// The failing method, or 0.
        method_id: u16,
    }
    /// Confirms a `channel.close`.
    ChannelCloseOk = (20, 41) "channel.close-ok" {}

    /// Declares an exchange.
    ExchangeDeclare = (40, 10) "exchange.declare" [send -> ExchangeDeclareOk unless no_wait] {
        /// Reserved (ticket).
        reserved_1: u16,
        /// Exchange name.
        exchange: ShortStr,
        /// Exchange type: direct, fanout, topic, headers...
        kind: ShortStr,
        /// Only check that it exists.
        passive: bool,
        /// Survives a broker restart.
        durable: bool,
        /// Deleted when its last binding goes.
        auto_delete: bool,
        /// Cannot be published to directly.
        internal: bool,
        /// No `declare-ok` wanted.
        no_wait: bool,
        /// Extra arguments, e.g. `alternate-exchange`.
        arguments: FieldTable,
    }
    /// The exchange is declared.
    ExchangeDeclareOk = (40, 11) "exchange.declare-ok" {}
    /// Deletes an exchange.
    ExchangeDelete = (40, 20) "exchange.delete" [send -> ExchangeDeleteOk unless no_wait] {
        /// Reserved (ticket).
        reserved_1: u16,
        /// Exchange name.
        exchange: ShortStr,
        /// Only if it has no bindings.
        if_unused: bool,
        /// No `delete-ok` wanted.
        no_wait: bool,
    }
    /// The exchange is deleted.
    ExchangeDeleteOk = (40, 21) "exchange.delete-ok" {}
    /// RabbitMQ: binds an exchange to an exchange.
    ExchangeBind = (40, 30) "exchange.bind" [send -> ExchangeBindOk unless no_wait] {
        /// Reserved (ticket).
        reserved_1: u16,
        /// The exchange that receives.
        destination: ShortStr,
        /// The exchange that routes.
        source: ShortStr,
        /// Routing key.
        routing_key: ShortStr,
        /// No `bind-ok` wanted.
        no_wait: bool,
        /// Binding arguments.
        arguments: FieldTable,
    }
    /// RabbitMQ: the exchanges are bound.
    ExchangeBindOk = (40, 31) "exchange.bind-ok" {}
    /// RabbitMQ: unbinds an exchange from an exchange.
    ExchangeUnbind = (40, 40) "exchange.unbind" [send -> ExchangeUnbindOk unless no_wait] {
        /// Reserved (ticket).
        reserved_1: u16,
        /// The exchange that receives.
        destination: ShortStr,
        /// The exchange that routes.
        source: ShortStr,
        /// Routing key.
        routing_key: ShortStr,
        /// No `unbind-ok` wanted.
        no_wait: bool,
        /// Binding arguments.
        arguments: FieldTable,
    }
    /// RabbitMQ: the exchanges are unbound (method id 51, as RabbitMQ sends it).
    ExchangeUnbindOk = (40, 51) "exchange.unbind-ok" {}

    /// Declares a queue.
    QueueDeclare = (50, 10) "queue.declare" [send -> QueueDeclareOk unless no_wait] {
        /// Reserved (ticket).
        reserved_1: u16,
        /// Queue name; empty asks the server to name it.
        queue: ShortStr,
        /// Only check that it exists.
        passive: bool,
        /// Survives a broker restart.
        durable: bool,
        /// Owned by this connection, deleted with it.
        exclusive: bool,
        /// Deleted when its last consumer goes.
        auto_delete: bool,
        /// No `declare-ok` wanted.
        no_wait: bool,
        /// Extra arguments, e.g. `x-message-ttl`.
        arguments: FieldTable,
    }
    /// The queue is declared.
    QueueDeclareOk = (50, 11) "queue.declare-ok" {
        /// The queue's name (the server's choice if we sent an empty one).
        queue: ShortStr,
        /// Ready messages.
        message_count: u32,
        /// Active consumers.
        consumer_count: u32,
    }
    /// Binds a queue to an exchange.
    QueueBind = (50, 20) "queue.bind" [send -> QueueBindOk unless no_wait] {
        /// Reserved (ticket).
        reserved_1: u16,
        /// Queue name.
        queue: ShortStr,
        /// Exchange name.
        exchange: ShortStr,
        /// Routing key.
        routing_key: ShortStr,
        /// No `bind-ok` wanted.
        no_wait: bool,
        /// Binding arguments (headers exchanges match on these).
        arguments: FieldTable,
    }
    /// The queue is bound.
    QueueBindOk = (50, 21) "queue.bind-ok" {}
    /// Removes all ready messages from a queue.
    QueuePurge = (50, 30) "queue.purge" [send -> QueuePurgeOk unless no_wait] {
        /// Reserved (ticket).
        reserved_1: u16,
        /// Queue name.
        queue: ShortStr,
        /// No `purge-ok` wanted.
        no_wait: bool,
    }
    /// The queue is purged.
    QueuePurgeOk = (50, 31) "queue.purge-ok" {
        /// Messages removed.
        message_count: u32,
    }
    /// Deletes a queue.
    QueueDelete = (50, 40) "queue.delete" [send -> QueueDeleteOk unless no_wait] {
        /// Reserved (ticket).
        reserved_1: u16,
        /// Queue name.
        queue: ShortStr,
        /// Only if it has no consumers.
        if_unused: bool,
        /// Only if it has no messages.
        if_empty: bool,
        /// No `delete-ok` wanted.
        no_wait: bool,
    }
    /// The queue is deleted.
    QueueDeleteOk = (50, 41) "queue.delete-ok" {
        /// Messages deleted with it.
        message_count: u32,
    }
    /// Unbinds a queue from an exchange (there is no `no_wait` here).
    QueueUnbind = (50, 50) "queue.unbind" [send -> QueueUnbindOk] {
        /// Reserved (ticket).
        reserved_1: u16,
        /// Queue name.
        queue: ShortStr,
        /// Exchange name.
        exchange: ShortStr,
        /// Routing key.
        routing_key: ShortStr,
        /// Binding arguments.
        arguments: FieldTable,
    }
    /// The queue is unbound.
    QueueUnbindOk = (50, 51) "queue.unbind-ok" {}

    /// Sets the prefetch window.
    BasicQos = (60, 10) "basic.qos" [send -> BasicQosOk] {
        /// Prefetch window in bytes, 0 for none.
        prefetch_size: u32,
        /// Prefetch window in messages, 0 for none.
        prefetch_count: u16,
        /// RabbitMQ: per channel rather than per consumer.
        global: bool,
    }
    /// The prefetch window is set.
    BasicQosOk = (60, 11) "basic.qos-ok" {}
    /// Starts a consumer.
    BasicConsume = (60, 20) "basic.consume" [send -> BasicConsumeOk unless no_wait] {
        /// Reserved (ticket).
        reserved_1: u16,
        /// Queue name.
        queue: ShortStr,
        /// Consumer tag; empty asks the server to choose.
        consumer_tag: ShortStr,
        /// Don't deliver our own publishes (not supported by RabbitMQ).
        no_local: bool,
        /// Deliveries need no ack.
        no_ack: bool,
        /// The only consumer on the queue.
        exclusive: bool,
        /// No `consume-ok` wanted.
        no_wait: bool,
        /// Consumer arguments, e.g. `x-priority`, `x-stream-offset`.
        arguments: FieldTable,
    }
    /// The consumer is started.
    BasicConsumeOk = (60, 21) "basic.consume-ok" {
        /// The consumer tag.
        consumer_tag: ShortStr,
    }
    /// Cancels a consumer (also sent by RabbitMQ when a queue goes away).
    BasicCancel = (60, 30) "basic.cancel" [send -> BasicCancelOk unless no_wait] {
        /// The consumer tag.
        consumer_tag: ShortStr,
        /// No `cancel-ok` wanted.
        no_wait: bool,
    }
    /// The consumer is cancelled.
    BasicCancelOk = (60, 31) "basic.cancel-ok" {
        /// The consumer tag.
        consumer_tag: ShortStr,
    }
    /// Publishes a message; content follows.
    BasicPublish = (60, 40) "basic.publish" {
        /// Reserved (ticket).
        reserved_1: u16,
        /// Exchange name; empty is the default exchange.
        exchange: ShortStr,
        /// Routing key.
        routing_key: ShortStr,
        /// Return the message if no queue gets it.
        mandatory: bool,
        /// Not supported by RabbitMQ.
        immediate: bool,
    }
    /// Returns an unroutable mandatory message; content follows.
    BasicReturn = (60, 50) "basic.return" {
        /// Why, e.g. 312.
        reply_code: u16,
        /// Why, e.g. `NO_ROUTE`.
        reply_text: ShortStr,
        /// The exchange it was published to.
        exchange: ShortStr,
        /// Its routing key.
        routing_key: ShortStr,
    }
    /// Delivers a message to a consumer; content follows.
    BasicDeliver = (60, 60) "basic.deliver" {
        /// The consumer tag.
        consumer_tag: ShortStr,
        /// The tag to ack with.
        delivery_tag: u64,
        /// Delivered before, maybe to someone else.
        redelivered: bool,
        /// The exchange it was published to.
        exchange: ShortStr,
        /// Its routing key.
        routing_key: ShortStr,
    }
    /// Fetches one message.
    BasicGet = (60, 70) "basic.get" [send -> BasicGetOk | BasicGetEmpty] {
        /// Reserved (ticket).
        reserved_1: u16,
        /// Queue name.
        queue: ShortStr,
        /// The message needs no ack.
        no_ack: bool,
    }
    /// The fetched message; content follows.
    BasicGetOk = (60, 71) "basic.get-ok" {
        /// The tag to ack with.
        delivery_tag: u64,
        /// Delivered before.
        redelivered: bool,
        /// The exchange it was published to.
        exchange: ShortStr,
        /// Its routing key.
        routing_key: ShortStr,
        /// Messages left in the queue.
        message_count: u32,
    }
    /// The queue was empty.
    BasicGetEmpty = (60, 72) "basic.get-empty" {
        /// Reserved (cluster id).
        reserved_1: ShortStr,
    }
    /// Acknowledges deliveries (or, from the server, confirms publishes).
    BasicAck = (60, 80) "basic.ack" [send] {
        /// The delivery tag or publish sequence number.
        delivery_tag: u64,
        /// Also everything up to it.
        multiple: bool,
    }
    /// Rejects one delivery.
    BasicReject = (60, 90) "basic.reject" [send] {
        /// The delivery tag.
        delivery_tag: u64,
        /// Put it back in the queue.
        requeue: bool,
    }
    /// Redelivers unacked messages, without a reply.
    BasicRecoverAsync = (60, 100) "basic.recover-async" [send] {
        /// Put them back in the queue.
        requeue: bool,
    }
    /// Redelivers unacked messages.
    BasicRecover = (60, 110) "basic.recover" [send -> BasicRecoverOk] {
        /// Put them back in the queue.
        requeue: bool,
    }
    /// Unacked messages are redelivered.
    BasicRecoverOk = (60, 111) "basic.recover-ok" {}
    /// RabbitMQ: rejects deliveries (or, from the server, refuses publishes).
    BasicNack = (60, 120) "basic.nack" [send] {
        /// The delivery tag or publish sequence number.
        delivery_tag: u64,
        /// Also everything up to it.
        multiple: bool,
        /// Put them back in the queue.
        requeue: bool,
    }

    /// RabbitMQ: turns on publisher confirms.
    ConfirmSelect = (85, 10) "confirm.select" [send -> ConfirmSelectOk unless no_wait] {
        /// No `select-ok` wanted.
        no_wait: bool,
    }
    /// RabbitMQ: publisher confirms are on.
    ConfirmSelectOk = (85, 11) "confirm.select-ok" {}

    /// Makes the channel transactional.
    TxSelect = (90, 10) "tx.select" [send -> TxSelectOk] {}
    /// The channel is transactional.
    TxSelectOk = (90, 11) "tx.select-ok" {}
    /// Commits the transaction.
    TxCommit = (90, 20) "tx.commit" [send -> TxCommitOk] {}
    /// The transaction is committed.
    TxCommitOk = (90, 21) "tx.commit-ok" {}
    /// Rolls the transaction back.
    TxRollback = (90, 30) "tx.rollback" [send -> TxRollbackOk] {}
    /// The transaction is rolled back.
    TxRollbackOk = (90, 31) "tx.rollback-ok" {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn every_method_round_trips(method in arbitrary_method()) {
            let mut out = BytesMut::new();
            method.encode(&mut out);
            let decoded = Method::decode(out.freeze()).expect("decodes");
            prop_assert_eq!(decoded, method);
        }
    }

    #[test]
    fn unknown_method_is_typed() {
        let payload = Bytes::from_static(&[0, 60, 0, 99]);
        assert_eq!(
            Method::decode(payload),
            Err(DecodeError::UnknownMethod {
                class_id: 60,
                method_id: 99
            })
        );
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let payload = Bytes::from_static(&[0, 10, 0, 51, 0]);
        assert_eq!(Method::decode(payload), Err(DecodeError::TrailingBytes(1)));
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let m = Method::from(ConnectionStartOk {
            response: Secret(Bytes::from_static(b"\0guest\0hunter2")),
            ..Default::default()
        });
        assert!(!format!("{m:?}").contains("hunter2"));
    }

    #[test]
    fn golden_basic_publish() {
        let m = Method::from(BasicPublish {
            exchange: ShortStr::from_static("ex"),
            routing_key: ShortStr::from_static("rk"),
            mandatory: true,
            ..Default::default()
        });
        let mut out = BytesMut::new();
        m.encode(&mut out);
        assert_eq!(
            &out[..],
            &[0, 60, 0, 40, 0, 0, 2, b'e', b'x', 2, b'r', b'k', 1]
        );
    }
}
