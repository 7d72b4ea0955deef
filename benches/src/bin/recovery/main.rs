//! Recovery side by side: carehare (`connect_recovering`) and lapin
//! (`enable_auto_recover`) under the same faults, each client in its own
//! process, one run at a time. `benches/recovery.sh` drives it and takes
//! the locks; see the "Recovery, side by side with lapin" section of
//! docs/reliability.md.
//!
//! ```text
//! recovery run --client carehare|lapin --scenario restart|cut|cut-fin|cluster-kill
//!     --run N [--node 1|2|3] --out FILE
//! recovery report --results FILE [--svg PATH] [--command TEXT]
//! ```
//!
//! A run: a durable queue (a quorum queue on the cluster), 1,000 numbered
//! persistent messages a second published with confirms (at most 1,000
//! unconfirmed), a consumer (prefetch 100) acking each delivery. After a
//! warm-up, the fault; then the run waits for a confirm and a delivery
//! after the broker is reachable again, keeps going for 3 s, stops
//! publishing, waits for the last confirms and deliveries, drains what is
//! left in the queue with a fresh connection, deletes it, and appends one
//! JSON line to FILE.
//!
//! `RECOVERY_DEBUG=1` prints lapin's connection and channel states every
//! second (what showed where a run that does not recover is stuck).

mod fault;
mod peer_carehare;
mod peer_lapin;
mod proxy;
mod record;
mod report;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use fault::{Scenario, Timeline};
use record::Recorder;

/// Messages published per tick, and the tick: 1,000 messages a second.
pub const PER_TICK: u64 = 10;
pub const TICK: Duration = Duration::from_millis(10);
/// Unconfirmed publishes, at most.
pub const WINDOW: usize = 1000;
/// The consumer's prefetch.
pub const PREFETCH: u16 = 100;

/// Steady state before the fault.
const WARM_UP: Duration = Duration::from_secs(3);
/// How long a client may take, from the broker being reachable again, to
/// confirm and deliver again before the run counts it as not recovered.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(60);
/// Steady state after recovery, before publishing stops.
const AFTER: Duration = Duration::from_secs(3);
/// Bound on waiting for the last confirms, and for the last deliveries
/// (shorter when the client did not recover: they will not come).
const SETTLE: Duration = Duration::from_secs(30);
const SETTLE_UNRECOVERED: Duration = Duration::from_secs(5);
/// Deliveries are over once none came for this long.
const IDLE: Duration = Duration::from_secs(3);

/// A running workload: its tasks, and how to close its connection.
pub struct Peer {
    pub tasks: Vec<JoinHandle<()>>,
    pub close: BoxFuture<'static, ()>,
}

/// A message's body: its id, in decimal.
pub fn body(id: u64) -> Vec<u8> {
    id.to_string().into_bytes()
}

pub fn parse_id(body: &[u8]) -> Option<u64> {
    std::str::from_utf8(body).ok()?.parse().ok()
}

struct RunArgs {
    client: String,
    scenario: Scenario,
    run: u32,
    node: u8,
    out: String,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match args.first().map(String::as_str) {
        Some("run") => {
            let run = RunArgs {
                client: flag("--client").expect("--client carehare|lapin"),
                scenario: flag("--scenario")
                    .as_deref()
                    .and_then(Scenario::parse)
                    .expect("--scenario restart|cut|cut-fin|cluster-kill"),
                run: flag("--run").map_or(1, |r| r.parse().expect("--run N")),
                node: flag("--node").map_or(1, |n| n.parse().expect("--node 1|2|3")),
                out: flag("--out").expect("--out FILE"),
            };
            assert!(matches!(run.client.as_str(), "carehare" | "lapin"));
            assert!((1..=3).contains(&run.node));
            let line = runtime.block_on(one_run(&run));
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&run.out)
                .expect("open --out");
            use std::io::Write;
            writeln!(file, "{line}").expect("write --out");
        }
        Some("report") => {
            let results = flag("--results").expect("--results FILE");
            let text = std::fs::read_to_string(&results).expect("read --results");
            let runs: Vec<serde_json::Value> = text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| serde_json::from_str(l).expect("a JSON line"))
                .collect();
            print!("{}", report::markdown(&runs, flag("--command").as_deref()));
            if let Some(svg) = flag("--svg") {
                std::fs::write(&svg, report::svg(&runs)).expect("write --svg");
            }
        }
        _ => {
            eprintln!("usage: recovery run ... | recovery report ... (see the source's header)");
            std::process::exit(2);
        }
    }
}

/// The broker's address for the run, the client's URL (through the proxy
/// for a cut), and the proxy.
async fn endpoints(scenario: Scenario, node: u8) -> (SocketAddr, String, Option<proxy::Proxy>) {
    let broker: SocketAddr = match scenario {
        Scenario::ClusterKill => SocketAddr::from(([127, 0, 0, 1], 5780 + u16::from(node))),
        _ => SocketAddr::from(([127, 0, 0, 1], 5672)),
    };
    if matches!(scenario, Scenario::Cut | Scenario::CutFin) {
        let proxy = proxy::Proxy::start(broker).await.expect("proxy");
        let url = format!("amqp://guest:guest@{}/%2f", proxy.addr());
        (proxy.addr(), url, Some(proxy))
    } else {
        (broker, format!("amqp://guest:guest@{broker}/%2f"), None)
    }
}

async fn one_run(args: &RunArgs) -> serde_json::Value {
    let rec = Arc::new(Recorder::new());
    let scenario = args.scenario;
    let quorum = scenario == Scenario::ClusterKill;
    let (probe_addr, url, proxy) = endpoints(scenario, args.node).await;
    let direct = match scenario {
        Scenario::Cut | Scenario::CutFin => "amqp://guest:guest@127.0.0.1:5672/%2f".to_string(),
        _ => url.clone(),
    };
    let queue = format!(
        "recovery-bench-{}-{}-{}",
        args.client,
        scenario.name(),
        std::process::id()
    );
    let mut out = serde_json::json!({
        "client": args.client,
        "scenario": scenario.name(),
        "run": args.run,
        "node": if quorum { Some(args.node) } else { None },
    });
    let fields = out.as_object_mut().expect("an object");
    eprintln!(
        "== {} {} run {} ({})",
        args.client,
        scenario.name(),
        args.run,
        url
    );

    let (stop_tx, stop) = watch::channel(false);
    let started = match args.client.as_str() {
        "carehare" => peer_carehare::start(&url, &queue, quorum, rec.clone(), stop).await,
        _ => peer_lapin::start(&url, &queue, quorum, rec.clone(), stop).await,
    };
    let peer = match started {
        Ok(peer) => peer,
        Err(e) => {
            fields.insert("error".into(), format!("connect: {e}").into());
            return out;
        }
    };

    // Warm up: both directions flowing.
    let ready = wait_until(Duration::from_secs(30), || {
        rec.confirmed_count() > 0 && rec.delivered_count() > 0
    })
    .await;
    if !ready {
        fields.insert(
            "error".into(),
            "no confirm or delivery before the fault".into(),
        );
    }
    tokio::time::sleep(WARM_UP).await;

    let probe = tokio::spawn(fault::probe(probe_addr, rec.clone()));
    let timeline = fault::inject(scenario, args.node, proxy.as_ref(), &rec).await;
    let Timeline { fault, reachable } = match timeline {
        Ok(t) => t,
        Err(e) => {
            probe.abort();
            fields.insert("error".into(), format!("fault: {e}").into());
            stop_peer(peer).await;
            return out;
        }
    };
    let port = match tokio::time::timeout(Duration::from_secs(10), probe).await {
        Ok(Ok(port)) => port,
        _ => fault::Port::default(),
    };
    eprintln!(
        "   fault at {:.0} ms, reachable at {:.0} ms (port closed {:?}, open {:?})",
        fault, reachable, port.closed, port.open
    );

    // Recovered: a confirm and a delivery after the broker is back.
    let recovered = wait_until(RECOVERY_DEADLINE, || {
        let (c, d) = rec.first_after(reachable);
        c.is_some() && d.is_some()
    })
    .await;
    tokio::time::sleep(AFTER).await;
    let end_of_publishing = rec.now();
    let _ = stop_tx.send(true);
    let settle = if recovered {
        SETTLE
    } else {
        SETTLE_UNRECOVERED
    };
    let settled = wait_until(settle, || rec.unsettled() == 0).await;
    // Deliveries: until every confirmed id came, or none came for IDLE.
    let deadline = tokio::time::Instant::now() + settle;
    let mut last = (rec.delivered_count(), tokio::time::Instant::now());
    while !rec.all_confirmed_delivered() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let n = rec.delivered_count();
        if n != last.0 {
            last = (n, tokio::time::Instant::now());
        } else if last.1.elapsed() >= IDLE {
            break;
        }
    }
    let (first_confirm, first_delivery) = rec.first_after(reachable);
    let since_open = port.open.map(|open| rec.first_after(open));
    let gap = rec.longest_confirm_gap(fault - 1.0, end_of_publishing);
    stop_peer(peer).await;
    drop(proxy);

    let leftover = match drain(&direct, &queue, quorum).await {
        Ok(ids) => ids,
        Err(e) => {
            fields.insert("drain_error".into(), e.into());
            Vec::new()
        }
    };
    let ms = |v: Option<f64>| v.map(|x| (x * 10.0).round() / 10.0);
    let diff = |a: Option<f64>, b: f64| ms(a.map(|a| a - b));
    fields.insert("recovered".into(), recovered.into());
    fields.insert("settled".into(), settled.into());
    fields.insert("fault_ms".into(), ms(Some(fault)).into());
    fields.insert("reachable_ms".into(), ms(Some(reachable)).into());
    fields.insert("port_closed_ms".into(), ms(port.closed).into());
    fields.insert("port_open_ms".into(), ms(port.open).into());
    fields.insert("ttr_ms".into(), diff(first_confirm, reachable).into());
    fields.insert(
        "ttr_delivery_ms".into(),
        diff(first_delivery, reachable).into(),
    );
    fields.insert(
        "ttr_from_open_ms".into(),
        port.open
            .and_then(|open| diff(since_open.and_then(|(c, _)| c), open))
            .into(),
    );
    fields.insert("longest_gap_ms".into(), ms(Some(gap)).into());
    if let serde_json::Value::Object(totals) = rec.totals(&leftover) {
        fields.extend(totals);
    }
    eprintln!("   {out}");
    out
}

async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    done()
}

async fn stop_peer(peer: Peer) {
    let _ = tokio::time::timeout(Duration::from_secs(10), peer.close).await;
    for task in peer.tasks {
        task.abort();
    }
}

/// What is still in the queue, through a fresh (not recovering) carehare
/// connection; then deletes the queue.
async fn drain(url: &str, queue: &str, quorum: bool) -> Result<Vec<u64>, String> {
    let e = |e: carehare_tokio::Error| e.to_string();
    let c = carehare_tokio::connect(url).await.map_err(e)?;
    c.queue_declare(queue, peer_carehare::queue_options(quorum))
        .await
        .map_err(e)?;
    let consumer = c.acking_consumer(queue, 1000).await.map_err(e)?;
    let mut ids = Vec::new();
    while let Ok(Ok((body, tag))) =
        tokio::time::timeout(Duration::from_secs(2), consumer.next_delivery()).await
    {
        if let Some(id) = parse_id(&body) {
            ids.push(id);
        }
        consumer.ack(tag);
    }
    consumer.close().await;
    c.queue_delete(queue, false, false).await.map_err(e)?;
    let _ = c.close().await;
    Ok(ids)
}
