//! The real `carehare-client` (driver, shared state, handles) against a
//! fake server whose behaviour comes from the input, on simulated time
//! (`carehare_client::testing`, the `testing` feature).
//!
//! The input is `arbitrary`-derived: the heartbeat the server proposes, a
//! script for the server and one for the user. The server plays a valid
//! handshake, then takes one scripted action for each method the client
//! sends: answer it properly, stay silent, close the channel or the
//! connection, answer with another method (on that channel or another),
//! send raw bytes, or drop the socket; before it answers it may also send
//! unsolicited frames (deliveries to the consumers it knows of, publisher
//! confirms, returns, `connection.blocked`, `channel.flow`, a server-side
//! `basic.cancel`). Once the script runs out it answers everything
//! properly. The user issues declares, binds, deletes, purges, publishes
//! (confirmed, with a window, mandatory), consumes (acking, nacking or
//! rejecting what arrives), gets and closes, each as its own task, with
//! pauses between them, and closes the connection at the end.
//!
//! Invariants:
//! - nothing panics, and no task hangs: every user operation ends with a
//!   result or a typed error (the simulated executor panics if every task
//!   waits with no timer set, so a hang is a crash here, not a timeout);
//! - no operation fails with `Error::Internal` (a waiter dropped
//!   unanswered);
//! - the whole run stays under an hour of simulated time;
//! - once the connection has ended, `testing::leftovers` reports nothing
//!   waiting or open: no operation waiter, temporary channel, unsettled
//!   publish, reply waiter, open consumer mailbox or core channel.
#![no_main]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arbitrary::Arbitrary;
use carehare_client::carehare_core::method::*;
use carehare_client::carehare_core::testing;
use carehare_client::testing::{FakeBroker, Leftovers, leftovers, with_broker};
use carehare_client::{
    BasicProperties, ConnectOptions, Connection, Error, ExchangeOptions, QueueOptions, Runtime,
    ShortStr, connect_with_runtime,
};
use futures_channel::oneshot;
use libfuzzer_sys::fuzz_target;

/// The most steps of each script that are played.
const MAX_STEPS: usize = 48;
/// The whole run must end within this much simulated time.
const TIME_BOUND: Duration = Duration::from_secs(3600);

#[derive(Arbitrary, Debug)]
struct Input {
    /// The heartbeat the server proposes: 1 to 16 s (never 0, so a silent
    /// server is eventually declared dead and a hang can't be legitimate).
    heartbeat: u8,
    server: Vec<Act>,
    user: Vec<UserOp>,
}

/// A name from a small set, so that the server's tags and the user's
/// names meet.
#[derive(Arbitrary, Debug, Clone, Copy)]
struct Name(u8);

const NAMES: [&str; 4] = ["", "q", "x", "amq.gen-1"];

impl Name {
    fn get(self) -> &'static str {
        NAMES[usize::from(self.0) % NAMES.len()]
    }
}

/// What the server does with one method the client sent.
#[derive(Arbitrary, Debug)]
struct Act {
    /// Sent first, unasked.
    before: Vec<Unsolicited>,
    reply: Reply,
}

#[derive(Arbitrary, Debug)]
enum Reply {
    /// The right answer (none for methods that get none).
    Polite,
    Silent,
    ChannelClose(u16),
    ConnectionClose(u16),
    /// Another method, on the same channel (`None`) or another.
    Wrong(Option<u8>, Wrong),
    Raw(Vec<u8>),
    Drop,
}

/// A method a server sends, in place of the right answer.
#[derive(Arbitrary, Debug)]
enum Wrong {
    ChannelOpenOk,
    ChannelCloseOk,
    QueueDeclareOk(Name, u32),
    ExchangeDeclareOk,
    QueueBindOk,
    QueueDeleteOk(u32),
    BasicQosOk,
    BasicConsumeOk(Name),
    BasicCancelOk(Name),
    BasicGetEmpty,
    ConfirmSelectOk,
    ConnectionCloseOk,
    ConnectionUpdateSecretOk,
}

impl Wrong {
    fn get(&self) -> Method {
        let s = |n: &Name| ShortStr::from_static(n.get());
        match self {
            Wrong::ChannelOpenOk => ChannelOpenOk::default().into(),
            Wrong::ChannelCloseOk => ChannelCloseOk {}.into(),
            Wrong::QueueDeclareOk(n, c) => QueueDeclareOk {
                queue: s(n),
                message_count: *c,
                consumer_count: 0,
            }
            .into(),
            Wrong::ExchangeDeclareOk => ExchangeDeclareOk {}.into(),
            Wrong::QueueBindOk => QueueBindOk {}.into(),
            Wrong::QueueDeleteOk(c) => QueueDeleteOk { message_count: *c }.into(),
            Wrong::BasicQosOk => BasicQosOk {}.into(),
            Wrong::BasicConsumeOk(n) => BasicConsumeOk { consumer_tag: s(n) }.into(),
            Wrong::BasicCancelOk(n) => BasicCancelOk { consumer_tag: s(n) }.into(),
            Wrong::BasicGetEmpty => BasicGetEmpty::default().into(),
            Wrong::ConfirmSelectOk => ConfirmSelectOk {}.into(),
            Wrong::ConnectionCloseOk => ConnectionCloseOk {}.into(),
            Wrong::ConnectionUpdateSecretOk => ConnectionUpdateSecretOk {}.into(),
        }
    }
}

/// Something the server sends unasked.
#[derive(Arbitrary, Debug)]
enum Unsolicited {
    /// A delivery to the `n`th consumer the server knows of; `tag`
    /// `None` is the channel's next delivery tag.
    Deliver {
        consumer: u8,
        tag: Option<u64>,
        body: Vec<u8>,
    },
    /// A confirm on the channel that published last; `offset` back from
    /// its latest sequence number.
    Ack {
        offset: u8,
        multiple: bool,
        nack: bool,
    },
    /// `basic.return` of the latest publish, before its confirm.
    Return(u16),
    Blocked,
    Unblocked,
    Flow(bool),
    /// `basic.cancel` of the `n`th consumer.
    Cancel(u8),
    Heartbeat,
}

/// One step of the user's script.
#[derive(Arbitrary, Debug)]
enum UserOp {
    /// Waits 0 to 2.55 s of simulated time.
    Pause(u8),
    QueueDeclare(Name, bool),
    ExchangeDeclare(Name),
    QueueBind(Name, Name),
    QueueUnbind(Name, Name),
    QueueDelete(Name),
    QueuePurge(Name),
    ExchangeDelete(Name),
    /// Publishes and waits for the confirm (or not).
    Publish {
        exchange: Name,
        body: Vec<u8>,
        mandatory: bool,
        wait: bool,
    },
    /// A publisher with a window of 1 to 4, publishing `count` messages.
    Publisher {
        window: u8,
        count: u8,
    },
    /// Consumes up to `take` messages, settling each as `settle` says.
    Consume {
        queue: Name,
        prefetch: u8,
        take: u8,
        settle: u8,
        no_ack: bool,
    },
    Get(Name, u8),
    UpdateSecret,
    Close,
}

/// What the server knows of the conversation.
#[derive(Default)]
struct ServerState {
    /// Publishes seen per channel (confirm mode or not).
    published: HashMap<u16, u64>,
    last_publish_channel: Option<u16>,
    /// Consumers: (channel, tag), in order of `basic.consume`.
    consumers: Vec<(u16, ShortStr)>,
    /// Next delivery tag per channel.
    delivery_tags: HashMap<u16, u64>,
    next_gen: u32,
}

impl ServerState {
    fn next_delivery_tag(&mut self, channel: u16) -> u64 {
        let tag = self.delivery_tags.entry(channel).or_insert(0);
        *tag += 1;
        *tag
    }
}

fn message_bytes(channel: u16, method: impl Into<Method>, body: &[u8]) -> Vec<u8> {
    testing::content_bytes(channel, method, &BasicProperties::default(), body, 131_072)
}

/// Sends one unsolicited frame.
fn unsolicited(b: &mut FakeBroker, st: &mut ServerState, u: &Unsolicited) {
    match u {
        Unsolicited::Deliver {
            consumer,
            tag,
            body,
        } => {
            if st.consumers.is_empty() {
                return;
            }
            let (channel, ctag) = st.consumers[usize::from(*consumer) % st.consumers.len()].clone();
            let delivery_tag = tag.unwrap_or_else(|| st.next_delivery_tag(channel));
            let deliver = BasicDeliver {
                consumer_tag: ctag,
                delivery_tag,
                routing_key: ShortStr::from_static("q"),
                ..Default::default()
            };
            b.send(&message_bytes(channel, deliver, body));
        }
        Unsolicited::Ack {
            offset,
            multiple,
            nack,
        } => {
            let Some(channel) = st.last_publish_channel else {
                return;
            };
            let latest = st.published.get(&channel).copied().unwrap_or(0);
            let delivery_tag = latest.saturating_sub(u64::from(*offset));
            let method: Method = if *nack {
                BasicNack {
                    delivery_tag,
                    multiple: *multiple,
                    requeue: false,
                }
                .into()
            } else {
                BasicAck {
                    delivery_tag,
                    multiple: *multiple,
                }
                .into()
            };
            b.send(&testing::method_bytes(channel, method));
        }
        Unsolicited::Return(code) => {
            let Some(channel) = st.last_publish_channel else {
                return;
            };
            let ret = BasicReturn {
                reply_code: *code,
                reply_text: ShortStr::from_static("NO_ROUTE"),
                ..Default::default()
            };
            b.send(&message_bytes(channel, ret, b"r"));
        }
        Unsolicited::Blocked => b.send(&testing::method_bytes(
            0,
            ConnectionBlocked {
                reason: ShortStr::from_static("low on memory"),
            },
        )),
        Unsolicited::Unblocked => b.send(&testing::method_bytes(0, ConnectionUnblocked {})),
        Unsolicited::Flow(active) => {
            let channel = st.last_publish_channel.unwrap_or(1);
            b.send(&testing::method_bytes(
                channel,
                ChannelFlow { active: *active },
            ));
        }
        Unsolicited::Cancel(n) => {
            if st.consumers.is_empty() {
                return;
            }
            let (channel, tag) = st.consumers[usize::from(*n) % st.consumers.len()].clone();
            let cancel = BasicCancel {
                consumer_tag: tag,
                no_wait: true,
            };
            b.send(&testing::method_bytes(channel, cancel));
        }
        Unsolicited::Heartbeat => b.send(&[8, 0, 0, 0, 0, 0, 0, 0xCE]),
    }
}

/// The right answer to `method` on `channel`, if it gets one; records
/// what the server needs to know.
fn polite(st: &mut ServerState, channel: u16, method: &Method) -> Option<Vec<u8>> {
    let reply: Method = match method {
        Method::ChannelOpen(_) => ChannelOpenOk::default().into(),
        Method::ChannelClose(_) => ChannelCloseOk {}.into(),
        Method::ConfirmSelect(s) if !s.no_wait => ConfirmSelectOk {}.into(),
        Method::BasicQos(_) => BasicQosOk {}.into(),
        Method::QueueDeclare(d) if !d.no_wait => {
            let queue = if d.queue.is_empty() {
                st.next_gen += 1;
                ShortStr::new(format!("amq.gen-{}", st.next_gen)).ok()?
            } else {
                d.queue.clone()
            };
            QueueDeclareOk {
                queue,
                message_count: 0,
                consumer_count: 0,
            }
            .into()
        }
        Method::ExchangeDeclare(d) if !d.no_wait => ExchangeDeclareOk {}.into(),
        Method::ExchangeDelete(d) if !d.no_wait => ExchangeDeleteOk {}.into(),
        Method::QueueBind(d) if !d.no_wait => QueueBindOk {}.into(),
        Method::QueueUnbind(_) => QueueUnbindOk {}.into(),
        Method::QueuePurge(d) if !d.no_wait => QueuePurgeOk { message_count: 3 }.into(),
        Method::QueueDelete(d) if !d.no_wait => QueueDeleteOk { message_count: 1 }.into(),
        Method::BasicConsume(c) => {
            let tag = if c.consumer_tag.is_empty() {
                ShortStr::new(format!("amq.ctag-{}", st.consumers.len())).ok()?
            } else {
                c.consumer_tag.clone()
            };
            st.consumers.push((channel, tag.clone()));
            if c.no_wait {
                return None;
            }
            BasicConsumeOk { consumer_tag: tag }.into()
        }
        Method::BasicCancel(c) => {
            st.consumers
                .retain(|(ch, t)| !(*ch == channel && *t == c.consumer_tag));
            if c.no_wait {
                return None;
            }
            BasicCancelOk {
                consumer_tag: c.consumer_tag.clone(),
            }
            .into()
        }
        Method::BasicGet(_) => {
            // Every other get finds a message.
            let tag = st.next_delivery_tag(channel);
            if tag.is_multiple_of(2) {
                BasicGetEmpty::default().into()
            } else {
                let ok = BasicGetOk {
                    delivery_tag: tag,
                    message_count: 0,
                    ..Default::default()
                };
                return Some(message_bytes(channel, ok, b"got"));
            }
        }
        Method::BasicPublish(_) => {
            let n = st.published.entry(channel).or_insert(0);
            *n += 1;
            st.last_publish_channel = Some(channel);
            BasicAck {
                delivery_tag: *n,
                multiple: false,
            }
            .into()
        }
        Method::ConnectionUpdateSecret(_) => ConnectionUpdateSecretOk {}.into(),
        Method::ConnectionClose(_) => ConnectionCloseOk {}.into(),
        _ => return None,
    };
    Some(testing::method_bytes(channel, reply))
}

/// The server: handshake, then one scripted action per client method.
async fn serve(mut b: FakeBroker, script: Arc<Vec<Act>>) {
    b.expect_handshake().await;
    let mut st = ServerState::default();
    let mut acts = script.iter().take(MAX_STEPS);
    while let Some((channel, method)) = b.next_method().await {
        let closing = matches!(method, Method::ConnectionClose(_));
        let Some(act) = acts.next() else {
            // The script is over: answer everything properly.
            if let Some(reply) = polite(&mut st, channel, &method) {
                b.send(&reply);
            }
            if closing {
                return;
            }
            continue;
        };
        for u in act.before.iter().take(4) {
            unsolicited(&mut b, &mut st, u);
        }
        match &act.reply {
            Reply::Polite => {
                if let Some(reply) = polite(&mut st, channel, &method) {
                    b.send(&reply);
                }
                if closing {
                    return;
                }
            }
            Reply::Silent => {
                // Publishes still count, so later confirms line up.
                if matches!(method, Method::BasicPublish(_)) {
                    *st.published.entry(channel).or_insert(0) += 1;
                    st.last_publish_channel = Some(channel);
                }
            }
            Reply::ChannelClose(code) => b.send(&testing::method_bytes(
                channel.max(1),
                ChannelClose {
                    reply_code: *code,
                    reply_text: ShortStr::from_static("refused"),
                    class_id: method.class_id(),
                    method_id: method.method_id(),
                },
            )),
            Reply::ConnectionClose(code) => b.send(&testing::method_bytes(
                0,
                ConnectionClose {
                    reply_code: *code,
                    reply_text: ShortStr::from_static("closed"),
                    class_id: method.class_id(),
                    method_id: method.method_id(),
                },
            )),
            Reply::Wrong(other, wrong) => {
                let ch = other.map_or(channel, u16::from);
                b.send(&testing::method_bytes(ch, wrong.get()));
            }
            Reply::Raw(bytes) => b.send(bytes),
            Reply::Drop => return,
        }
    }
}

/// Runs one user operation to its end; `Err` only for what must never
/// happen.
async fn run_op(c: Connection, op: UserOp) -> Result<(), String> {
    let check = |r: Result<(), Error>| match r {
        Err(Error::Internal(why)) => Err(format!("internal error: {why}")),
        _ => Ok(()),
    };
    match op {
        UserOp::Pause(_) => Ok(()),
        UserOp::QueueDeclare(n, exclusive) => {
            let options = QueueOptions {
                exclusive,
                ..Default::default()
            };
            check(c.queue_declare(n.get(), options).await.map(drop))
        }
        UserOp::ExchangeDeclare(n) => check(
            c.exchange_declare(n.get(), "direct", ExchangeOptions::default())
                .await,
        ),
        UserOp::QueueBind(q, x) => check(
            c.queue_bind(q.get(), x.get(), "k", Default::default())
                .await,
        ),
        UserOp::QueueUnbind(q, x) => check(
            c.queue_unbind(q.get(), x.get(), "k", Default::default())
                .await,
        ),
        UserOp::QueueDelete(n) => check(c.queue_delete(n.get(), false, false).await.map(drop)),
        UserOp::QueuePurge(n) => check(c.queue_purge(n.get()).await.map(drop)),
        UserOp::ExchangeDelete(n) => check(c.exchange_delete(n.get(), false).await),
        UserOp::Publish {
            exchange,
            body,
            mandatory,
            wait,
        } => {
            let confirmation = if mandatory {
                c.publish_mandatory(body, exchange.get(), "q", &BasicProperties::default())
            } else {
                c.publish(body, exchange.get(), "q")
            };
            if wait {
                check(confirmation.await)
            } else {
                drop(confirmation);
                Ok(())
            }
        }
        UserOp::Publisher { window, count } => {
            let publisher = c.publisher(usize::from(window % 4) + 1);
            let mut confirms = Vec::new();
            for i in 0..(count % 8) {
                match publisher.publish(vec![i], "", "q").await {
                    Ok(confirmation) => confirms.push(confirmation),
                    Err(e) => return check(Err(e)),
                }
            }
            for confirmation in confirms {
                check(confirmation.await)?;
            }
            Ok(())
        }
        UserOp::Consume {
            queue,
            prefetch,
            take,
            settle,
            no_ack,
        } => {
            let options = carehare_client::ConsumerOptions {
                prefetch_count: u16::from(prefetch % 8) + 1,
                no_ack,
                ..Default::default()
            };
            let consumer = match c.consumer(queue.get(), options).await {
                Ok(consumer) => consumer,
                Err(e) => return check(Err(e)),
            };
            for i in 0..(take % 6) {
                match consumer.next_delivery().await {
                    Ok((_, tag)) if !no_ack => match (settle >> (i % 4)) & 3 {
                        0 => consumer.ack(tag),
                        1 => consumer.nack(tag, true),
                        2 => consumer.reject(tag, false),
                        _ => consumer.ack_multiple(tag),
                    },
                    Ok(_) => {}
                    Err(e) => return check(Err(e)),
                }
            }
            if settle & 0x80 != 0 {
                consumer.close().await;
            }
            Ok(())
        }
        UserOp::Get(n, settle) => match c.get(n.get()).await {
            Ok(Some(message)) => {
                match settle % 3 {
                    0 => message.ack(),
                    1 => message.nack(true),
                    _ => drop(message),
                }
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) => check(Err(e)),
        },
        UserOp::UpdateSecret => check(c.update_secret(b"token".to_vec(), "refresh").await),
        UserOp::Close => check(c.close().await),
    }
}

fuzz_target!(|input: Input| {
    let heartbeat = u16::from(input.heartbeat % 16) + 1;
    let tune = ConnectionTune {
        heartbeat,
        ..testing::server_tune()
    };
    let script = Arc::new(input.server);
    let sim = with_broker(tune, move |b| serve(b, script.clone()));
    let runtime: Arc<dyn Runtime> = sim.clone();
    let mut options = ConnectOptions {
        // An IP address: the simulated network resolves no names.
        host: "127.0.0.1".into(),
        ..ConnectOptions::default()
    };
    options.amqp.heartbeat = heartbeat;
    let user = input.user;
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = failures.clone();
    let left = sim.block_on(async move {
        // The handshake always succeeds: the server plays it properly.
        let c = match connect_with_runtime(runtime.clone(), options).await {
            Ok(c) => c,
            Err(e) => panic!("handshake failed: {e:?}"),
        };
        let mut done = Vec::new();
        for op in user.into_iter().take(MAX_STEPS) {
            if let UserOp::Pause(ms) = op {
                let until = runtime.now() + Duration::from_millis(u64::from(ms) * 10);
                runtime.sleep_until(until).await;
                continue;
            }
            let (tx, rx) = oneshot::channel();
            let (c2, seen) = (c.clone(), seen.clone());
            runtime.spawn(Box::pin(async move {
                let described = format!("{op:?}");
                if let Err(why) = run_op(c2, op).await {
                    seen.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(format!("{described}: {why}"));
                }
                let _ = tx.send(());
            }));
            done.push(rx);
        }
        let _ = c.close().await;
        let _ = c.closed().await;
        // Every operation ends: a task still waiting now waits forever, and
        // the simulated executor panics on that deadlock.
        for rx in done {
            assert!(rx.await.is_ok(), "an operation's task was dropped");
        }
        leftovers(&c)
    });
    let failures = failures.lock().unwrap_or_else(|e| e.into_inner());
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(
        left,
        Leftovers::default(),
        "left over once the connection ended"
    );
    assert!(
        sim.elapsed() < TIME_BOUND,
        "the run took {:?} of simulated time",
        sim.elapsed()
    );
});
