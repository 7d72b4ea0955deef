//! Failover on the local 3-node cluster (`test-server/cluster-start.sh`):
//! these tests stop cluster nodes. They run one at a time (a static lock
//! here, and `flock -o /tmp/carehare-cluster.lock` around the test binaries
//! that stop nodes), and always start a stopped node again, even when a
//! test fails.
//!
//! ```sh
//! flock -o /tmp/carehare-cluster.lock cargo test -p carehare-layer --test cluster -- --nocapture
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use carehare_layer::{Config, Layer};
use carehare_tests::cluster::{NodeDown, node_of_port, start_cluster};
use common::{Chat, chat, connected, recv, unique, within};

/// The cluster's AMQP ports, node 3 first (node N listens on 5780 + N):
/// the test stops the first node a layer tries.
const PORTS: [u16; 3] = [5783, 5781, 5782];

/// One test at a time in this binary: they stop nodes.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Stops (`stop`: a clean shutdown) or kills (`kill`: SIGKILL, a crash)
/// the node listening on `port`; the guard starts it again.
fn stop_node(port: u16, how: &'static str) -> NodeDown {
    NodeDown::now(how, node_of_port(port))
}

fn config(ports: &[u16]) -> Config {
    Config::with_hosts(
        ports
            .iter()
            .map(|p| format!("amqp://guest:guest@127.0.0.1:{p}/")),
    )
}

async fn port_of(layer: &Layer) -> u16 {
    within(20, layer.connection()).await.unwrap().address().port
}

/// Every message a channel received, with when.
type Inbox = Arc<Mutex<Vec<(String, Instant)>>>;

/// Receives everything on `channel` into an inbox, until the layer closes.
fn collect(layer: &Layer, channel: &str) -> Inbox {
    let inbox: Inbox = Arc::default();
    let (layer, channel, sink) = (layer.clone(), channel.to_string(), inbox.clone());
    tokio::spawn(async move {
        while let Ok(message) = layer.receive::<Chat>(&channel).await {
            sink.lock().unwrap().push((message.text, Instant::now()));
        }
    });
    inbox
}

fn texts(inbox: &Inbox, prefix: &str) -> Vec<String> {
    inbox
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, _)| t.starts_with(prefix))
        .map(|(t, _)| t.clone())
        .collect()
}

/// Polls until `check` holds, or fails the test after `secs`.
async fn eventually(secs: u64, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not true after {secs} s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How many distinct texts, and how many extra copies.
fn distinct_and_duplicates(texts: &[String]) -> (usize, usize) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for t in texts {
        *seen.entry(t).or_default() += 1;
    }
    (seen.len(), texts.len() - seen.len())
}

/// Layer A is on node N, layer B on another. Node N stops: A reconnects to
/// another node, and declares its queue, group bindings and consumer again.
/// Throughout, B sends probes to the group every 50 ms (those sent while A
/// is away are lost, as documented: A's queue went with its node), and A
/// sends to B's channel every 20 ms (these wait for A's new connection and
/// must all arrive: 0 lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stopping_the_node_of_a_layer_moves_it_to_another_and_its_groups_keep_working() {
    failover("stop").await;
}

/// The same when node N crashes (SIGKILL): the connection ends without a
/// `connection.close`, and the other nodes learn that N is down from the
/// closed distribution links.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_node_of_a_layer_moves_it_to_another_and_its_groups_keep_working() {
    failover("kill").await;
}

async fn failover(how: &'static str) {
    let _serial = SERIAL.lock().await;
    start_cluster();
    within(240, async {
        let a = connected(Layer::new(config(&PORTS)).unwrap()).await;
        let a_port = port_of(&a).await;
        let others: Vec<u16> = PORTS.into_iter().filter(|p| *p != a_port).collect();
        let b = connected(Layer::new(config(&others)).unwrap()).await;
        let b_port = port_of(&b).await;
        assert_ne!(a_port, b_port);

        let group = unique("failover-room");
        let (a_channel, b_channel) = (a.new_channel(), b.new_channel());
        a.group_add(&group, &a_channel).await.unwrap();
        b.group_add(&group, &b_channel).await.unwrap();
        b.group_send(&group, &chat("hello")).await.unwrap();
        assert_eq!(recv(&a, &a_channel, 10).await.text, "hello");
        assert_eq!(recv(&b, &b_channel, 10).await.text, "hello");
        let a_inbox = collect(&a, &a_channel);
        let b_inbox = collect(&b, &b_channel);

        let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
        // B's group probes, with when each was sent.
        let probes: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let prober = {
            let (b, group, running, probes) =
                (b.clone(), group.clone(), running.clone(), probes.clone());
            tokio::spawn(async move {
                while running.load(std::sync::atomic::Ordering::Relaxed) {
                    let i = probes.lock().unwrap().len();
                    probes.lock().unwrap().push(Instant::now());
                    b.group_send(&group, &chat(format!("probe-{i}")))
                        .await
                        .unwrap();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        };
        // A's sends to B's channel: every one that returns Ok must arrive.
        let sender = {
            let (a, b_channel, running) = (a.clone(), b_channel.clone(), running.clone());
            tokio::spawn(async move {
                let mut sent = 0usize;
                while running.load(std::sync::atomic::Ordering::Relaxed) {
                    a.send(&b_channel, &chat(format!("send-{sent}")))
                        .await
                        .unwrap();
                    sent += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                sent
            })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;

        // Stop A's node.
        let old = a.connection().await.unwrap();
        let lost_at: Arc<Mutex<Option<Instant>>> = Arc::default();
        {
            let (old, lost_at) = (old.clone(), lost_at.clone());
            tokio::spawn(async move {
                old.closed().await;
                *lost_at.lock().unwrap() = Some(Instant::now());
            });
        }
        let stop_began = Instant::now();
        let restart = tokio::task::spawn_blocking(move || {
            let guard = stop_node(a_port, how);
            (guard, Instant::now())
        });
        // A's new connection, on another node.
        let reconnected_at = loop {
            let conn = within(60, a.connection()).await.unwrap();
            if conn.address().port != a_port {
                break Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let new_port = port_of(&a).await;
        let (restart, stopped_at) = restart.await.unwrap();
        let lost_at = lost_at.lock().unwrap().expect("the old connection closed");
        // The first probe A receives that B sent after A's old connection
        // closed: groups work again.
        let first_probe_after = || {
            let sent = probes.lock().unwrap().clone();
            a_inbox
                .lock()
                .unwrap()
                .iter()
                .filter_map(|(t, at)| {
                    let i: usize = t.strip_prefix("probe-")?.parse().ok()?;
                    (sent.get(i)? > &lost_at).then_some(*at)
                })
                .next()
        };
        eventually(60, "a group probe after failover", || {
            first_probe_after().is_some()
        })
        .await;
        let group_back_at = first_probe_after().unwrap();

        // After failover: A's group sends reach B and A, a group joined now
        // works, and B's sends reach A.
        a.group_send(&group, &chat("after-from-a")).await.unwrap();
        let late_group = unique("late-room");
        a.group_add(&late_group, &a_channel).await.unwrap();
        b.group_send(&late_group, &chat("after-late")).await.unwrap();
        b.send(&a_channel, &chat("after-direct")).await.unwrap();
        eventually(20, "messages after failover", || {
            texts(&b_inbox, "after-from-a").len() == 1
                && texts(&a_inbox, "after-from-a").len() == 1
                && texts(&a_inbox, "after-late").len() == 1
                && texts(&a_inbox, "after-direct").len() == 1
        })
        .await;

        // Let traffic run on the new node a little, then count.
        tokio::time::sleep(Duration::from_secs(1)).await;
        running.store(false, std::sync::atomic::Ordering::Relaxed);
        prober.await.unwrap();
        let sent = sender.await.unwrap();
        eventually(30, "every send from A reaches B", || {
            distinct_and_duplicates(&texts(&b_inbox, "send-")).0 == sent
        })
        .await;
        let (distinct, duplicates) = distinct_and_duplicates(&texts(&b_inbox, "send-"));
        let lost_sends = sent - distinct;
        assert_eq!(lost_sends, 0);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let probes_sent = probes.lock().unwrap().len();
        let (probes_got, probe_duplicates) = distinct_and_duplicates(&texts(&a_inbox, "probe-"));

        let ms = |d: Duration| d.as_millis();
        println!(
            "FIGURES layer failover ({how}): node {} -> {}: {how} command {} ms; old connection closed {} ms after it began; \
             reconnected {} ms after that; first group message {} ms after that ({} ms after the {how} began); \
             A->B sends: {sent} sent, {lost_sends} lost, {duplicates} duplicates; \
             B->group probes (50 ms apart): {probes_sent} sent, {probes_got} reached A ({} missed while A was away, by design), {probe_duplicates} duplicates",
            a_port - 5780,
            new_port - 5780,
            ms(stopped_at - stop_began),
            ms(lost_at - stop_began),
            ms(reconnected_at.saturating_duration_since(lost_at)),
            ms(group_back_at.saturating_duration_since(reconnected_at)),
            ms(group_back_at - stop_began),
            probes_sent - probes_got,
        );
        assert_ne!(new_port, a_port);
        assert!(probes_got > 0 && probe_duplicates == 0);

        a.close().await;
        b.close().await;
        drop(restart);
    })
    .await;
}
