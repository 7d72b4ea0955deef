//! One soak, start to drain.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::faults::{self, Kind, Rng};
use crate::proxy::ProxyProcess;
use crate::sys::Usage;
use crate::track::Tracker;
use crate::workload::{self, EventLog, Workload};

/// Latency windows.
const WINDOW: Duration = Duration::from_secs(300);
/// No fault in the first minute.
const WARM_UP: Duration = Duration::from_secs(60);
/// RSS growth is counted from here.
const BASELINE: Duration = Duration::from_secs(600);
/// Bounds on the end: the last confirms, the consumer catching up, and
/// the drain's wait for one more message.
const SETTLE: Duration = Duration::from_secs(120);
const IDLE: Duration = Duration::from_secs(5);

pub struct Settings {
    minutes: u64,
    rate: u64,
    upstream: String,
    node: String,
    heartbeat: u64,
    every: (u64, u64),
    quiet: u64,
    seed: u64,
    /// Straight to the node, without the proxy and without faults: the
    /// steady state alone (e.g. under a heap profiler, which a child
    /// process would confuse).
    direct: bool,
    out: String,
}

fn range(s: &str) -> Option<(u64, u64)> {
    let (a, b) = s.split_once('-')?;
    let (a, b) = (a.parse().ok()?, b.parse().ok()?);
    (a <= b).then_some((a, b))
}

impl Settings {
    pub fn from_flags(flag: &dyn Fn(&str) -> Option<String>) -> Result<Self, String> {
        let num = |name: &str, default: u64| -> Result<u64, String> {
            flag(name).map_or(Ok(default), |v| {
                v.parse().map_err(|_| format!("{name}: not a number: {v}"))
            })
        };
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Ok(Self {
            minutes: num("--minutes", 60)?,
            rate: num("--rate", 5000)?,
            upstream: flag("--upstream").unwrap_or_else(|| "127.0.0.1:5781".into()),
            node: flag("--node").unwrap_or_else(|| "c1".into()),
            heartbeat: num("--heartbeat", 3)?,
            every: flag("--every")
                .map_or(Some((60, 180)), |v| range(&v))
                .ok_or("--every LO-HI (seconds)")?,
            quiet: num("--quiet", 150)?,
            seed: num("--seed", seed)?,
            direct: flag("--direct").is_some_and(|v| v == "yes"),
            out: flag("--out").ok_or("--out DIR")?,
        })
    }
}

/// Usage, sampled once a second, with the counters.
#[derive(Clone, Copy, Default)]
struct Sample {
    t_s: f64,
    published: u64,
    confirmed: u64,
    delivered: u64,
    duplicates: u64,
    usage: Usage,
}

pub async fn soak(s: Settings) -> Result<(), String> {
    let total = Duration::from_secs(s.minutes * 60);
    let capacity = s.rate * (total.as_secs() + 600);
    let windows = (total.as_secs() / WINDOW.as_secs()) as usize + 3;
    let track = Arc::new(Tracker::new(capacity, WINDOW, windows));
    let log = Arc::new(EventLog::default());
    let mut rng = Rng::new(s.seed);
    eprintln!(
        "soak: {} min, {} msg/s, heartbeat {} s, faults every {}-{} s, seed {} (--seed replays the schedule)",
        s.minutes, s.rate, s.heartbeat, s.every.0, s.every.1, s.seed
    );
    // Starts tokio's child-process machinery now, so that it is in the
    // first figures and not counted as growth.
    faults::node_script(&["status", &s.node]).await?;

    let mut proxy = match s.direct {
        true => None,
        false => Some(ProxyProcess::start(&s.upstream).await?),
    };
    let address = match &proxy {
        Some(p) => format!("127.0.0.1:{}", p.port()),
        None => s.upstream.clone(),
    };
    let url = format!("amqp://guest:guest@{address}/%2f?heartbeat={}", s.heartbeat);
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let queue = format!("carehare-soak-{}-{stamp}", std::process::id());
    let work = Workload::start(&url, &queue, s.rate, track.clone(), log.clone()).await?;
    let at_connect = (track.secs(), Usage::now());

    // Written in full now (not only reserved), so that filling it is not
    // counted as growth.
    let mut rows = vec![Sample::default(); total.as_secs() as usize + 1200];
    for row in rows.iter_mut().step_by(32) {
        *row = std::hint::black_box(Sample::default());
    }
    let samples = Arc::new(Mutex::new(Samples { rows, len: 0 }));
    let sampler = tokio::spawn(sample(track.clone(), samples.clone()));

    let mut faults = Vec::new();
    let last_fault = total.as_secs_f64() - s.quiet as f64;
    let mut next = WARM_UP.as_secs_f64() + s.every.0 as f64;
    let mut warm = None;
    let mut at_baseline = None;
    loop {
        let now = track.secs();
        if warm.is_none() && now >= WARM_UP.as_secs_f64() - 1.0 {
            warm = Some((now, Usage::now()));
        }
        if at_baseline.is_none() && now >= BASELINE.as_secs_f64() {
            at_baseline = Some((now, Usage::now()));
        }
        if now >= total.as_secs_f64() {
            break;
        }
        if let Some(proxy) = proxy.as_mut().filter(|_| now >= next && now <= last_fault) {
            let kind = Kind::pick(&mut rng, (s.heartbeat * 3 + 1, s.heartbeat * 5));
            let fault = faults::inject(kind, &s.node, proxy, &track, &log).await;
            next =
                (fault.start_s + rng.between(s.every.0, s.every.1) as f64).max(track.secs() + 10.0);
            faults.push(fault);
            continue;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let end = (track.secs(), Usage::now());

    // The end: no more new messages; every confirm, then every delivery.
    work.stop_publishing();
    let published = work.published();
    let settled = wait_until(SETTLE, || work.outstanding() == 0).await;
    let caught_up = wait_until(SETTLE, || track.lost(published).is_empty()).await;
    sampler.abort();
    work.close().await;
    if let Some(proxy) = proxy {
        proxy.stop().await;
    }
    let drained = drain(&s.upstream, &queue, &track).await;
    let lost = track.lost(published);
    let unconfirmed = track.unconfirmed(published);

    let c = &track.counts;
    let mut windows = Vec::new();
    for (i, h) in track.latency_windows().iter().enumerate() {
        if h.count() == 0 {
            continue;
        }
        let from = i as f64 * track.window().as_secs_f64();
        windows.push(json!({
            "from_s": from,
            "to_s": (from + track.window().as_secs_f64()).min(end.0),
            "messages": h.count(),
            "p50_ms": h.quantile_ms(0.50),
            "p99_ms": h.quantile_ms(0.99),
            "max_ms": h.quantile_ms(1.0),
        }));
    }
    let samples = {
        let s = samples.lock().unwrap_or_else(|e| e.into_inner());
        s.rows[..s.len].to_vec()
    };
    let out = json!({
        "commit": std::env::var("SOAK_COMMIT").ok(),
        "minutes": s.minutes,
        "rate": s.rate,
        "heartbeat_s": s.heartbeat,
        "every_s": [s.every.0, s.every.1],
        "seed": s.seed,
        "upstream": s.upstream,
        "node": s.node,
        "queue": queue,
        "totals": {
            "published": published,
            "republished_by_soak": c.republished.load(Ordering::Relaxed),
            "confirmed": c.confirmed.load(Ordering::Relaxed),
            "confirm_failures": c.confirm_failures.load(Ordering::Relaxed),
            "publish_errors": c.publish_errors.load(Ordering::Relaxed),
            "unconfirmed": unconfirmed,
            "delivered": c.delivered.load(Ordering::Relaxed),
            "duplicates": c.duplicates.load(Ordering::Relaxed),
            "foreign": c.foreign.load(Ordering::Relaxed),
            "stale_acks": c.stale_acks.load(Ordering::Relaxed),
            "settled": settled,
            "caught_up": caught_up,
            "drained": drained.as_ref().ok(),
            "drain_error": drained.as_ref().err(),
            "lost": lost.len(),
            "lost_first": lost.iter().take(20).collect::<Vec<_>>(),
        },
        "usage": {
            "connected": at_connect.1.json(at_connect.0),
            "warm": warm.map(|(t, u)| u.json(t)),
            "baseline": at_baseline.map(|(t, u)| u.json(t)),
            "end": end.1.json(end.0),
        },
        "latency": windows,
        "faults": faults.iter().map(|f| f.json()).collect::<Vec<_>>(),
        "events": log.all().iter().map(|e| json!({
            "t_s": (e.t_s * 1000.0).round() / 1000.0,
            "connection": e.connection,
            "kind": e.kind,
            "detail": e.detail,
            "downtime_s": e.downtime_s,
        })).collect::<Vec<_>>(),
        "samples": samples.iter().map(|x| json!([
            (x.t_s * 10.0).round() / 10.0, x.published, x.confirmed, x.delivered,
            x.duplicates, x.usage.rss_kib, x.usage.fds, x.usage.threads, x.usage.tasks,
            x.usage.heap_kib,
        ])).collect::<Vec<_>>(),
    });
    std::fs::create_dir_all(&s.out).map_err(|e| format!("{}: {e}", s.out))?;
    let text = serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?;
    std::fs::write(format!("{}/soak.json", s.out), text).map_err(|e| e.to_string())?;
    let mut csv = String::from(
        "t_s,published,confirmed,delivered,duplicates,rss_kib,fds,threads,tokio_tasks,heap_kib\n",
    );
    for x in &samples {
        let _ = writeln!(
            csv,
            "{:.1},{},{},{},{},{},{},{},{},{}",
            x.t_s,
            x.published,
            x.confirmed,
            x.delivered,
            x.duplicates,
            x.usage.rss_kib,
            x.usage.fds,
            x.usage.threads,
            x.usage.tasks,
            x.usage.heap_kib
        );
    }
    std::fs::write(format!("{}/timeline.csv", s.out), csv).map_err(|e| e.to_string())?;
    print!("{}", crate::report::markdown(&out, None));
    if lost.is_empty() {
        Ok(())
    } else {
        Err(format!("{} confirmed messages lost", lost.len()))
    }
}

struct Samples {
    rows: Vec<Sample>,
    len: usize,
}

async fn sample(track: Arc<Tracker>, samples: Arc<Mutex<Samples>>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_print = 0.0;
    loop {
        tick.tick().await;
        let c = &track.counts;
        let x = Sample {
            t_s: track.secs(),
            published: c.published.load(Ordering::Relaxed),
            confirmed: c.confirmed.load(Ordering::Relaxed),
            delivered: c.delivered.load(Ordering::Relaxed),
            duplicates: c.duplicates.load(Ordering::Relaxed),
            usage: Usage::now(),
        };
        if x.t_s - last_print >= 60.0 {
            last_print = x.t_s;
            eprintln!(
                "soak: {:>7.1} s  confirmed {}  delivered {}  duplicates {}  rss {} KiB  heap {} KiB  fds {}  threads {}  tasks {}",
                x.t_s,
                x.confirmed,
                x.delivered,
                x.duplicates,
                x.usage.rss_kib,
                x.usage.heap_kib,
                x.usage.fds,
                x.usage.threads,
                x.usage.tasks
            );
        }
        let mut s = samples.lock().unwrap_or_else(|e| e.into_inner());
        let len = s.len;
        if let Some(row) = s.rows.get_mut(len) {
            *row = x;
            s.len += 1;
        }
    }
}

async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    done()
}

/// Consumes what is left in the queue over a plain connection straight to
/// the node, then deletes the queue. Returns how many messages it took.
async fn drain(upstream: &str, queue: &str, track: &Tracker) -> Result<u64, String> {
    let e = |e: carehare_tokio::Error| e.to_string();
    let url = format!("amqp://guest:guest@{upstream}/%2f");
    let c = carehare_tokio::connect(&url).await.map_err(e)?;
    c.queue_declare(queue, workload::queue_options())
        .await
        .map_err(e)?;
    let consumer = c.acking_consumer(queue, 1000).await.map_err(e)?;
    let mut n = 0;
    while let Ok(Ok((body, tag))) = tokio::time::timeout(IDLE, consumer.next_delivery()).await {
        if let Some((seq, _)) = workload::parse(&body) {
            track.drained(seq);
        }
        n += 1;
        consumer.ack(tag);
    }
    consumer.close().await;
    c.queue_delete(queue, false, false).await.map_err(e)?;
    let _ = c.close().await;
    Ok(n)
}
