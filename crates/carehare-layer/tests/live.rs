//! The layer against the live test broker (`test-server/start.sh`).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use carehare_layer::{Error, Layer};
use carehare_tests::log_capture::Captured;
use common::{Chat, chat, config, layer, nothing, recv, unique, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_and_receive_within_one_layer() {
    let layer = layer().await;
    let channel = layer.new_channel();
    assert!(channel.starts_with(&format!("{}!", layer.queue_name())));
    assert!(layer.queue_name().starts_with("channels_"));
    layer.send(&channel, &chat("hello")).await.unwrap();
    assert_eq!(recv(&layer, &channel, 10).await, chat("hello"));

    // Any map works: here a HashMap, received as the struct.
    let map = HashMap::from([("type", "chat.message"), ("text", "as a map")]);
    layer.send(&channel, &map).await.unwrap();
    assert_eq!(recv(&layer, &channel, 10).await, chat("as a map"));

    // Order is kept on a channel.
    for i in 0..10 {
        layer.send(&channel, &chat(i.to_string())).await.unwrap();
    }
    for i in 0..10 {
        assert_eq!(recv(&layer, &channel, 10).await.text, i.to_string());
    }
    layer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_errors_for_bad_names_and_messages() {
    let layer = layer().await;
    let channel = layer.new_channel();
    for bad in ["no-bang", "a b!c", "", "q!a!b"] {
        assert!(
            matches!(layer.send(bad, &chat("x")).await, Err(Error::InvalidChannelName(n)) if n == bad),
            "{bad}"
        );
        assert!(matches!(
            layer.receive::<Chat>(bad).await,
            Err(Error::InvalidChannelName(_))
        ));
    }
    let long = format!("{}!{}", layer.queue_name(), "x".repeat(100));
    assert!(matches!(
        layer.send(&long, &chat("x")).await,
        Err(Error::InvalidChannelName(_))
    ));
    for bad in ["", "a!b", "sp ace", &"g".repeat(100)] {
        assert!(matches!(
            layer.group_send(bad, &chat("x")).await,
            Err(Error::InvalidGroupName(_))
        ));
        assert!(matches!(
            layer.group_add(bad, &channel).await,
            Err(Error::InvalidGroupName(_))
        ));
    }
    // Another layer's channel: sendable, not receivable or groupable here.
    let foreign = "channels_someoneelse!abc";
    assert!(matches!(
        layer.receive::<Chat>(foreign).await,
        Err(Error::ForeignChannel(_))
    ));
    assert!(matches!(
        layer.group_add("g", foreign).await,
        Err(Error::ForeignChannel(_))
    ));
    // Messages must be maps without the reserved keys.
    assert!(matches!(
        layer.send(&channel, &[1, 2, 3]).await,
        Err(Error::InvalidMessage(_))
    ));
    assert!(matches!(
        layer.send(&channel, "text").await,
        Err(Error::InvalidMessage(_))
    ));
    let reserved = HashMap::from([("__asgi_channel__", "x")]);
    assert!(matches!(
        layer.send(&channel, &reserved).await,
        Err(Error::InvalidMessage(_))
    ));
    // A message that does not fit the type is a decode error, which hands
    // the message back.
    layer
        .send(&channel, &HashMap::from([("other", 1)]))
        .await
        .unwrap();
    match within(10, layer.receive::<Chat>(&channel)).await {
        Err(Error::Decode { raw, .. }) => {
            let back: HashMap<String, i64> = rmp_serde::from_slice(&raw).unwrap();
            assert_eq!(back, HashMap::from([("other".to_string(), 1)]));
        }
        other => panic!("{other:?}"),
    }
    layer.send(&channel, &chat("after")).await.unwrap();
    assert_eq!(recv(&layer, &channel, 10).await, chat("after"));
    layer.close().await;
}

/// A layer's start declares its queue passively first, to see whether a
/// previous connection's queue of the same name is still there: the 404
/// is the expected answer, not something to warn about.
// Current-thread: every task of the layer runs on this thread, under the
// capturing subscriber.
#[tokio::test(flavor = "current_thread")]
async fn starting_and_using_a_layer_logs_no_warning() {
    let captured = Captured::default();
    let _guard = captured.on_this_thread(tracing::Level::WARN);
    let layer = Layer::new(config()).unwrap();
    within(30, layer.connection()).await.unwrap();
    let channel = layer.new_channel();
    layer.group_add("quiet", &channel).await.unwrap();
    layer.group_send("quiet", &chat("hi")).await.unwrap();
    assert_eq!(recv(&layer, &channel, 10).await, chat("hi"));
    layer.close().await;
    let logs = captured.text();
    assert!(logs.is_empty(), "{logs}");
}

/// A `Value` takes any message, binary included; a `Vec<u8>` travels as
/// msgpack binary with `serde_bytes`, as a list of integers without.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_values_and_binary_fields_round_trip() {
    use carehare_layer::Value;

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Frame {
        r#type: String,
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    }
    let layer = layer().await;
    let channel = layer.new_channel();
    let frame = Frame {
        r#type: "websocket.receive".into(),
        bytes: vec![0, 1, 255],
    };
    layer.send(&channel, &frame).await.unwrap();
    // serde_json's Value has no binary: a decode error, with the message.
    let raw = match within(10, layer.receive::<serde_json::Value>(&channel)).await {
        Err(Error::Decode { raw, .. }) => raw,
        other => panic!("{other:?}"),
    };
    let value: Value = rmp_serde::from_slice(&raw).unwrap();
    assert_eq!(value["bytes"], Value::Binary(vec![0, 1, 255]));
    assert_eq!(value["type"].as_str(), Some("websocket.receive"));
    // A Value goes out as it came in, and decodes into the struct.
    layer.send(&channel, &value).await.unwrap();
    assert_eq!(
        within(10, layer.receive::<Frame>(&channel)).await.unwrap(),
        frame
    );
    layer.send(&channel, &frame).await.unwrap();
    let received: Value = within(10, layer.receive(&channel)).await.unwrap();
    assert_eq!(received, value);
    // Without serde_bytes, a Vec<u8> is a list of integers on the wire.
    layer
        .send(&channel, &HashMap::from([("bytes", vec![1u8, 2])]))
        .await
        .unwrap();
    let received: Value = within(10, layer.receive(&channel)).await.unwrap();
    assert_eq!(
        received["bytes"],
        Value::Array(vec![Value::from(1), Value::from(2)])
    );
    layer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_between_two_layers() {
    let a = layer().await;
    let b = layer().await;
    assert_ne!(a.queue_name(), b.queue_name());
    let on_a = a.new_channel();
    let on_b = b.new_channel();
    a.send(&on_b, &chat("a to b")).await.unwrap();
    b.send(&on_a, &chat("b to a")).await.unwrap();
    assert_eq!(recv(&b, &on_b, 10).await, chat("a to b"));
    assert_eq!(recv(&a, &on_a, 10).await, chat("b to a"));
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_add_discard_readd_empty_and_remote() {
    let a = layer().await;
    let b = layer().await;
    let group = unique("room");
    let a1 = a.new_channel();
    let a2 = a.new_channel();
    let b1 = b.new_channel();
    a.group_add(&group, &a1).await.unwrap();
    a.group_add(&group, &a2).await.unwrap();
    a.group_add(&group, &a2).await.unwrap(); // twice is once
    b.group_add(&group, &b1).await.unwrap();

    // From a remote layer and from a member layer: everyone gets it once.
    b.group_send(&group, &chat("from b")).await.unwrap();
    a.group_send(&group, &chat("from a")).await.unwrap();
    for (layer, channel) in [(&a, &a1), (&a, &a2), (&b, &b1)] {
        assert_eq!(recv(layer, channel, 10).await, chat("from b"));
        assert_eq!(recv(layer, channel, 10).await, chat("from a"));
    }

    // Discard one: the others still get it, it doesn't.
    a.group_discard(&group, &a1).await.unwrap();
    a.group_discard(&group, &a1).await.unwrap(); // not a member: no-op
    b.group_send(&group, &chat("without a1")).await.unwrap();
    assert_eq!(recv(&a, &a2, 10).await, chat("without a1"));
    assert_eq!(recv(&b, &b1, 10).await, chat("without a1"));
    nothing(&a, &a1, 300).await;

    // Discard the last local member: a's queue is unbound.
    a.group_discard(&group, &a2).await.unwrap();
    b.group_send(&group, &chat("only b")).await.unwrap();
    assert_eq!(recv(&b, &b1, 10).await, chat("only b"));
    nothing(&a, &a2, 300).await;

    // Re-add: bound again.
    a.group_add(&group, &a1).await.unwrap();
    b.group_send(&group, &chat("back")).await.unwrap();
    assert_eq!(recv(&a, &a1, 10).await, chat("back"));
    assert_eq!(recv(&b, &b1, 10).await, chat("back"));

    // A group nobody is in: fine, and nobody gets it.
    a.group_send(&unique("empty"), &chat("void")).await.unwrap();
    nothing(&a, &a1, 300).await;

    // A group whose only members are remote.
    let remote = unique("remote");
    b.group_add(&remote, &b1).await.unwrap();
    a.group_send(&remote, &chat("to remote")).await.unwrap();
    assert_eq!(recv(&b, &b1, 10).await, chat("to remote"));
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_separate_groups_exchange_is_a_separate_namespace() {
    let exchange = unique("groups-test");
    let mut separate = config();
    separate.groups_exchange = exchange.clone();
    let x = common::connected(Layer::new(separate.clone()).unwrap()).await;
    let y = common::connected(Layer::new(separate).unwrap()).await;
    let default = layer().await;
    let group = unique("shared-name");
    let on_x = x.new_channel();
    let on_default = default.new_channel();
    x.group_add(&group, &on_x).await.unwrap();
    default.group_add(&group, &on_default).await.unwrap();

    y.group_send(&group, &chat("via separate")).await.unwrap();
    assert_eq!(recv(&x, &on_x, 10).await, chat("via separate"));
    nothing(&default, &on_default, 300).await;

    default
        .group_send(&group, &chat("via default"))
        .await
        .unwrap();
    assert_eq!(recv(&default, &on_default, 10).await, chat("via default"));
    nothing(&x, &on_x, 300).await;

    // The exchange is declared as a direct exchange.
    let conn = x.connection().await.unwrap();
    conn.exchange_declare(
        &exchange,
        "direct",
        carehare_layer::carehare_tokio::ExchangeOptions {
            passive: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let _ = conn.exchange_delete(&exchange, false).await;
    x.close().await;
    y.close().await;
    default.close().await;
}

/// A layer whose queue fills fast: 1 message in memory, 2 in RabbitMQ.
async fn small_layer() -> Layer {
    let mut small = config();
    small.local_capacity = 1;
    small.remote_capacity = Some(2);
    common::connected(Layer::new(small).unwrap()).await
}

/// Sends to `small`'s `channel` until it is full; returns how many were
/// accepted.
async fn fill(sender: &Layer, small: &Layer, channel: &str) -> usize {
    for i in 0..10 {
        match sender.send(channel, &chat(format!("fill {i}"))).await {
            Ok(()) => {}
            Err(Error::ChannelFull(c)) => {
                assert_eq!(c, channel);
                return i;
            }
            Err(e) => panic!("{e}"),
        }
        if i == 0 {
            // Wait for the consumer to take the first one into memory, for
            // a stable count.
            let conn = small.connection().await.unwrap();
            let passive = carehare_layer::carehare_tokio::QueueOptions {
                passive: true,
                ..Default::default()
            };
            within(10, async {
                while conn
                    .queue_declare(small.queue_name(), passive.clone())
                    .await
                    .unwrap()
                    .message_count
                    > 0
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await;
        }
    }
    panic!("{channel} never filled up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_capacity_makes_send_fail_with_channel_full() {
    let sender = layer().await;
    let small = small_layer().await;
    let channel = small.new_channel();
    let accepted = fill(&sender, &small, &channel).await;
    assert_eq!(accepted, 3, "1 in memory (local_capacity) + 2 in the queue");
    // Again: still full.
    assert!(matches!(
        sender.send(&channel, &chat("more")).await,
        Err(Error::ChannelFull(_))
    ));
    // Receiving makes room.
    assert_eq!(recv(&small, &channel, 10).await, chat("fill 0"));
    within(10, async {
        loop {
            match sender.send(&channel, &chat("room")).await {
                Ok(()) => break,
                Err(Error::ChannelFull(_)) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await;
    for i in 1..3 {
        assert_eq!(recv(&small, &channel, 10).await, chat(format!("fill {i}")));
    }
    assert_eq!(recv(&small, &channel, 10).await, chat("room"));
    sender.close().await;
    small.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_send_to_a_full_queue_is_dropped() {
    let sender = layer().await;
    let small = small_layer().await;
    let roomy = layer().await;
    let group = unique("full");
    let on_small = small.new_channel();
    let on_roomy = roomy.new_channel();
    small.group_add(&group, &on_small).await.unwrap();
    roomy.group_add(&group, &on_roomy).await.unwrap();
    let accepted = fill(&sender, &small, &on_small).await;
    // No error for the group send; the full queue misses it, the other doesn't.
    sender
        .group_send(&group, &chat("dropped for small"))
        .await
        .unwrap();
    assert_eq!(recv(&roomy, &on_roomy, 10).await, chat("dropped for small"));
    for i in 0..accepted {
        assert_eq!(recv(&small, &on_small, 10).await, chat(format!("fill {i}")));
    }
    nothing(&small, &on_small, 300).await;
    sender.close().await;
    small.close().await;
    roomy.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_expiry_drops_messages_waiting_in_rabbitmq() {
    let sender = layer().await;
    let mut short = config();
    short.expiry = Some(Duration::from_secs(1));
    short.local_expiry = Some(Duration::from_secs(60));
    short.local_capacity = 1;
    let layer = common::connected(Layer::new(short).unwrap()).await;
    let channel = layer.new_channel();
    for i in 0..3 {
        sender.send(&channel, &chat(i.to_string())).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // The one in memory survives; the two in the queue expired there.
    assert_eq!(recv(&layer, &channel, 10).await, chat("0"));
    nothing(&layer, &channel, 300).await;
    sender.send(&channel, &chat("fresh")).await.unwrap();
    assert_eq!(recv(&layer, &channel, 10).await, chat("fresh"));
    sender.close().await;
    layer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_expiry_drops_messages_nobody_receives() {
    let mut short = config();
    // Long enough for the 100 confirmed sends below to reach the local
    // buffer before the first of them expires, on a loaded machine.
    short.local_expiry = Some(Duration::from_millis(1500));
    let layer = common::connected(Layer::new(short).unwrap()).await;
    let channel = layer.new_channel();
    let group = unique("leaked");
    // A channel that joined a group and never receives.
    let leaked = layer.new_channel();
    layer.group_add(&group, &leaked).await.unwrap();
    layer.group_add(&group, &channel).await.unwrap();
    layer.send(&channel, &chat("old")).await.unwrap();
    layer.group_send(&group, &chat("old group")).await.unwrap();
    // Four times the expiry: on a loaded machine the old messages may reach
    // the local buffer late, and expiry counts from their arrival.
    tokio::time::sleep(Duration::from_millis(6000)).await;
    layer.send(&channel, &chat("new")).await.unwrap();
    assert_eq!(recv(&layer, &channel, 10).await, chat("new"));
    nothing(&layer, &leaked, 200).await;
    // The expired messages were acked: capacity is free for 100 more.
    for i in 0..100 {
        layer
            .group_send(&group, &chat(i.to_string()))
            .await
            .unwrap();
    }
    for i in 0..100 {
        assert_eq!(recv(&layer, &channel, 10).await, chat(i.to_string()));
    }
    layer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_concurrent_sends_and_group_sends_all_arrive() {
    let mut roomy = config();
    roomy.remote_capacity = Some(1000);
    let sender = common::connected(Layer::new(roomy.clone()).unwrap()).await;
    let receiver = common::connected(Layer::new(roomy).unwrap()).await;
    let channel = receiver.new_channel();
    let group = unique("hundred");
    receiver.group_add(&group, &channel).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..100 {
        let (s, c, g) = (sender.clone(), channel.clone(), group.clone());
        tasks.push(tokio::spawn(async move {
            s.send(&c, &chat(format!("direct {i}"))).await.unwrap();
        }));
        let (s, g) = (sender.clone(), g);
        tasks.push(tokio::spawn(async move {
            s.group_send(&g, &chat(format!("group {i}"))).await.unwrap();
        }));
    }
    let mut seen = std::collections::HashSet::new();
    for _ in 0..200 {
        let got = recv(&receiver, &channel, 20).await;
        assert!(seen.insert(got.text.clone()), "duplicate {}", got.text);
    }
    for t in tasks {
        within(10, t).await.unwrap();
    }
    for i in 0..100 {
        assert!(seen.contains(&format!("direct {i}")));
        assert!(seen.contains(&format!("group {i}")));
    }
    nothing(&receiver, &channel, 200).await;
    sender.close().await;
    receiver.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_receivers_on_one_channel_each_get_one() {
    let layer = layer().await;
    let channel = layer.new_channel();
    let receivers: Vec<_> = (0..5)
        .map(|_| {
            let (l, c) = (layer.clone(), channel.clone());
            tokio::spawn(async move { within(10, l.receive::<Chat>(&c)).await.unwrap() })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A receive that gives up must not lose a message.
    assert!(
        tokio::time::timeout(Duration::from_millis(10), layer.receive::<Chat>(&channel))
            .await
            .is_err()
    );
    for i in 0..5 {
        layer.send(&channel, &chat(i.to_string())).await.unwrap();
    }
    let mut got: Vec<String> = Vec::new();
    for r in receivers {
        got.push(r.await.unwrap().text);
    }
    got.sort();
    assert_eq!(got, ["0", "1", "2", "3", "4"]);
    layer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_close_connection_with_groups_still_working() {
    let name = unique("layer-reconnect");
    let mut named = config();
    named.host = format!("{}?connection_name={name}", common::URL);
    let layer = common::connected(Layer::new(named).unwrap()).await;
    let other = common::layer().await;
    let channel = layer.new_channel();
    let group = unique("survivors");
    layer.group_add(&group, &channel).await.unwrap();
    other.group_send(&group, &chat("before")).await.unwrap();
    assert_eq!(recv(&layer, &channel, 10).await, chat("before"));
    let queue = layer.queue_name().to_string();
    let old = layer.connection().await.unwrap();

    let closed_name = name.clone();
    tokio::task::spawn_blocking(move || {
        carehare_tests::close_connection_named(&closed_name, "test: reconnect please")
    })
    .await
    .unwrap();
    let why = within(10, old.closed()).await;
    assert!(why.to_string().contains("320"), "{why}");
    // Operations wait for the new connection rather than failing.
    within(20, layer.send(&channel, &chat("own send")))
        .await
        .unwrap();
    assert_eq!(recv(&layer, &channel, 10).await, chat("own send"));
    assert_eq!(layer.queue_name(), queue);

    // The group binding was restored.
    other.group_send(&group, &chat("after")).await.unwrap();
    assert_eq!(recv(&layer, &channel, 10).await, chat("after"));
    // And it can be changed on the new connection.
    let second = layer.new_channel();
    layer.group_add(&group, &second).await.unwrap();
    other.group_send(&group, &chat("both")).await.unwrap();
    assert_eq!(recv(&layer, &channel, 10).await, chat("both"));
    assert_eq!(recv(&layer, &second, 10).await, chat("both"));
    layer.close().await;
    other.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_ends_pending_and_later_receives() {
    let layer = layer().await;
    let channel = layer.new_channel();
    let other = layer.new_channel();
    let pending: Vec<_> = [&channel, &channel, &other]
        .into_iter()
        .map(|c| {
            let (l, c) = (layer.clone(), c.clone());
            tokio::spawn(async move { l.receive::<Chat>(&c).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    within(15, layer.close()).await;
    for p in pending {
        assert!(matches!(within(5, p).await.unwrap(), Err(Error::Closed)));
    }
    assert!(matches!(
        layer.receive::<Chat>(&channel).await,
        Err(Error::Closed)
    ));
    assert!(matches!(
        layer.send(&channel, &chat("x")).await,
        Err(Error::Closed)
    ));
    assert!(matches!(
        layer.group_add("g", &channel).await,
        Err(Error::Closed)
    ));
    assert!(matches!(layer.connection().await, Err(Error::Closed)));
    layer.close().await; // twice is fine
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_is_usable_directly() {
    let layer = layer().await;
    let conn = layer.connection().await.unwrap();
    let queue = unique("jobs");
    conn.queue_declare(
        &queue,
        carehare_layer::carehare_tokio::QueueOptions::exclusive(),
    )
    .await
    .unwrap();
    conn.publish("task", "", &queue).await.unwrap();
    let consumer = conn.acking_consumer(&queue, 1).await.unwrap();
    let (body, tag) = within(10, consumer.next_delivery()).await.unwrap();
    assert_eq!(&body[..], b"task");
    consumer.ack(tag);
    layer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_out_a_refused_connection_until_the_broker_appears() {
    // A port nothing listens on yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut late = config();
    late.host = format!("amqp://guest:guest@127.0.0.1:{port}");
    let layer = Layer::new(late).unwrap();
    let channel = layer.new_channel();
    let sending = {
        let (l, c) = (layer.clone(), channel.clone());
        tokio::spawn(async move { l.send(&c, &chat("waited")).await })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!sending.is_finished(), "send waits for a connection");
    // Now the "broker" appears: a forwarder to the real one.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let forwarder = tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                if let Ok(mut server) = tokio::net::TcpStream::connect("127.0.0.1:5672").await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    within(20, sending).await.unwrap().unwrap();
    assert_eq!(recv(&layer, &channel, 10).await, chat("waited"));
    layer.close().await;
    forwarder.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_out_a_queue_name_conflict() {
    let queue = unique("channels_conflict").replace('-', "_");
    let squatter = carehare_layer::carehare_tokio::connect(common::URL)
        .await
        .unwrap();
    squatter
        .queue_declare(
            &queue,
            carehare_layer::carehare_tokio::QueueOptions::exclusive(),
        )
        .await
        .unwrap();
    let mut same = config();
    same.queue_name = Some(queue.clone());
    let layer = Layer::new(same).unwrap();
    assert_eq!(layer.queue_name(), queue);
    let channel = layer.new_channel();
    let sending = {
        let (l, c) = (layer.clone(), channel.clone());
        tokio::spawn(async move { l.send(&c, &chat("mine now")).await })
    };
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        !sending.is_finished(),
        "send waits while the queue is taken"
    );
    squatter.close().await.unwrap();
    within(20, sending).await.unwrap().unwrap();
    assert_eq!(recv(&layer, &channel, 10).await, chat("mine now"));
    layer.close().await;
}

/// Asserts that every operation of `layer` fails at once with
/// `Error::Connect`, whose cause `is` says what it must be, and that a
/// receive already waiting fails so too.
async fn fails_for_good(
    layer: &Layer,
    waiting: tokio::task::JoinHandle<Result<Chat, Error>>,
    is: impl Fn(&carehare_layer::carehare_tokio::Error) -> bool,
) {
    let channel = layer.new_channel();
    let check = |result: Result<(), Error>, what: &str| match result {
        Err(Error::Connect(cause)) => {
            assert!(!cause.is_transient(), "{what}: {cause}");
            assert!(is(&cause), "{what}: {cause:?}");
        }
        other => panic!("{what}: expected Error::Connect, got {other:?}"),
    };
    check(within(10, layer.send(&channel, &chat("x"))).await, "send");
    check(
        within(5, waiting).await.unwrap().map(drop),
        "a waiting receive",
    );
    check(
        within(5, layer.receive::<Chat>(&channel)).await.map(drop),
        "receive",
    );
    check(
        within(5, layer.group_send("g", &chat("x"))).await,
        "group_send",
    );
    check(within(5, layer.group_add("g", &channel)).await, "group_add");
    check(within(5, layer.connection()).await.map(drop), "connection");
    layer.close().await;
    assert!(matches!(
        layer.send(&channel, &chat("x")).await,
        Err(Error::Closed)
    ));
}

/// A receive on a new channel of `layer`, waiting in a task.
fn waiting_receive(layer: &Layer) -> tokio::task::JoinHandle<Result<Chat, Error>> {
    let (layer, channel) = (layer.clone(), layer.new_channel());
    tokio::spawn(async move { layer.receive::<Chat>(&channel).await })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_fails_at_once_with_a_typed_error() {
    let mut wrong = config();
    wrong.host = "amqp://guest:wrong-password@127.0.0.1:5672".into();
    let layer = Layer::new(wrong).unwrap();
    let waiting = waiting_receive(&layer);
    fails_for_good(&layer, waiting, |cause| {
        matches!(
            cause,
            carehare_layer::carehare_tokio::Error::ConnectionClosed(
                carehare_layer::carehare_tokio::ConnectionError::AuthenticationFailed(_)
            )
        )
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_vhost_fails_at_once_with_a_typed_error() {
    let mut unknown = config();
    unknown.host = format!("{}/{}", common::URL, unique("no-such-vhost"));
    let layer = Layer::new(unknown).unwrap();
    let waiting = waiting_receive(&layer);
    fails_for_good(&layer, waiting, |cause| cause.reply_code() == Some(530)).await;
}

/// After a reconnect, RabbitMQ refuses the layer's `setup` for good (its
/// groups exchange was redeclared as another type meanwhile): the layer
/// stops, and its operations fail at once, as on a first connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setup_refused_after_a_reconnect_fails_at_once_with_a_typed_error() {
    let name = unique("layer-refused");
    let exchange = unique("groups-refused");
    let mut named = config();
    named.host = format!("{}?connection_name={name}", common::URL);
    named.groups_exchange = exchange.clone();
    let layer = common::connected(Layer::new(named).unwrap()).await;
    let channel = layer.new_channel();
    layer.send(&channel, &chat("before")).await.unwrap();
    assert_eq!(recv(&layer, &channel, 10).await, chat("before"));
    let waiting = waiting_receive(&layer);

    let other = carehare_layer::carehare_tokio::connect(common::URL)
        .await
        .unwrap();
    other.exchange_delete(&exchange, false).await.unwrap();
    other
        .exchange_declare(&exchange, "fanout", Default::default())
        .await
        .unwrap();
    let closed_name = name.clone();
    tokio::task::spawn_blocking(move || {
        carehare_tests::close_connection_named(&closed_name, "test: reconnect please")
    })
    .await
    .unwrap();
    fails_for_good(&layer, waiting, |cause| cause.reply_code() == Some(406)).await;
    let _ = other.exchange_delete(&exchange, false).await;
    other.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_every_handle_closes_the_layer() {
    let layer = layer().await;
    let conn = layer.connection().await.unwrap();
    drop(layer);
    let why = within(15, conn.closed()).await;
    assert!(
        matches!(
            why,
            carehare_layer::carehare_tokio::ConnectionError::ClosedByClient
        ),
        "{why}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_over_tls() {
    let mut tls = config();
    // No port in the URL: with `tls` set, the default becomes 5671.
    tls.host = "amqp://guest:guest@127.0.0.1".into();
    tls.tls = Some(carehare_layer::carehare_tokio::TlsOptions {
        ca_file: Some(carehare_tests::certs_dir().join("ca.pem")),
        ..Default::default()
    });
    assert_eq!(tls.connect_options().unwrap().port, 5671);
    let secure = common::connected(Layer::new(tls).unwrap()).await;
    let plain = layer().await;
    let on_secure = secure.new_channel();
    plain.send(&on_secure, &chat("to tls")).await.unwrap();
    assert_eq!(recv(&secure, &on_secure, 10).await, chat("to tls"));
    secure.close().await;
    plain.close().await;
}

#[test]
fn new_needs_a_tokio_runtime_and_a_valid_config() {
    assert!(matches!(
        Layer::new(carehare_layer::Config::default()),
        Err(Error::Config(_))
    ));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut bad = carehare_layer::Config::new("http://nope");
        assert!(matches!(Layer::new(bad.clone()), Err(Error::Config(_))));
        bad.host = common::URL.into();
        bad.local_capacity = 0;
        assert!(matches!(Layer::new(bad), Err(Error::Config(_))));
    });
}
