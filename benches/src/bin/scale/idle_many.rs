//! Many idle carehare connections in one process on a short heartbeat
//! (default 10,000 at 1 s): opened in batches, then idle for a minute.
//! Reports the CPU the process used while idle, its RSS, and whether any
//! heartbeat was missed: a missed heartbeat ends a connection (the
//! client's monitor or the broker's), so every connection must still be
//! open at the end, by the client's account and by the broker's.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use carehare_benches::e2e::runtime;
use futures::FutureExt;

use crate::broker;
use crate::clients::{self, Target};
use crate::flags::Flags;
use crate::sys::{self, Usage};
use crate::watch::{BrokerGaps, Lateness};

/// Raw connections watching RabbitMQ's heartbeats beside the client's.
const OBSERVERS: usize = 4;

pub fn main(f: &Flags) -> Result<(), String> {
    crate::alloc::enable();
    let n: usize = f.get("connections", 10_000)?;
    let heartbeat: u16 = f.get("heartbeat", 1)?;
    let idle: f64 = f.get("idle", 60.0)?;
    let batch: usize = f.get("batch", 100)?;
    // `all` (the default): every connection open to the end by both
    // counts and closed cleanly. `idle`: every connection open to the end
    // of the idle time by the client's count, for a profile of the idle
    // time; the broker's count and the close are reported all the same.
    let idle_only = match f.text("check", "all").as_str() {
        "all" => false,
        "idle" => true,
        other => return Err(format!("--check {other}: all or idle")),
    };
    let url = f.text("url", crate::URL);
    let test_server = f.text(
        "test-server",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../test-server"),
    );
    f.done()?;
    sys::raise_nofile(n as u64 + 100)?;
    match broker::socket_limit() {
        Ok(limit) if limit < n as u64 + 50 => {
            return Err(format!(
                "the broker allows {limit} sockets, fewer than {n} connections need: restart it \
                 with a higher open-file limit (test-server/node.sh raises it to the hard limit: \
                 flock -x /tmp/carehare-broker.lock sh -c 'test-server/stop.sh && test-server/start.sh')"
            ));
        }
        Ok(limit) => eprintln!("scale idle: the broker allows {limit} sockets"),
        Err(e) => eprintln!("scale idle: the broker's socket limit is unknown ({e}); going on"),
    }
    let target = Target {
        url,
        heartbeat,
        prefix: format!("scale-idle-{}-", std::process::id()),
    };
    runtime(true).block_on(run(target, n, idle, batch, &test_server, idle_only))
}

async fn run(
    target: Target,
    n: usize,
    idle: f64,
    batch: usize,
    test_server: &str,
    idle_only: bool,
) -> Result<(), String> {
    let before = Usage::now();
    let machine_open = sys::MachineCpu::now();
    // Who falls behind when connections are lost: this runtime (its timer
    // wakes late) or RabbitMQ (its heartbeats to connections outside the
    // runtime come late).
    let lateness = Lateness::start();
    let gaps = {
        let (url, heartbeat) = (target.url.clone(), target.heartbeat);
        tokio::task::spawn_blocking(move || BrokerGaps::start(&url, heartbeat, OBSERVERS))
            .await
            .map_err(|e| format!("the observers' thread: {e}"))?
    };
    let t0 = Instant::now();
    let target = &target;
    let mut failed: BTreeMap<String, usize> = BTreeMap::new();
    let mut list = Vec::with_capacity(n);
    let attempts =
        clients::each_in_batches(n, batch, |i| clients::carehare_unnamed_error(target, i)).await;
    for r in attempts {
        match r {
            Ok(c) => list.push(c),
            Err(e) => *failed.entry(e).or_default() += 1,
        }
    }
    let opened = list.len();
    let connect_s = t0.elapsed().as_secs_f64();
    eprintln!(
        "scale idle: {opened} of {n} connections open in {connect_s:.1} s; idle for {idle} s"
    );
    let negotiated = list.first().map_or(0, |c| c.tuning().heartbeat);
    let connections = clients::Idle::Carehare(list);

    // The broker's CPU over the same time, when it runs on this machine:
    // at a short heartbeat it is the broker that runs out first.
    let broker_pid = broker::os_pid().ok();
    let broker_cpu0 = broker_pid.and_then(sys::process_cpu);
    let machine_idle = sys::MachineCpu::now();
    let (late_open, gaps_open) = (lateness.take(), gaps.take());
    let start = Usage::now();
    let wall = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(idle)).await;
    let end = Usage::now();
    let machine_end = sys::MachineCpu::now();
    let (late_idle, gaps_idle) = (lateness.take(), gaps.take());
    drop(lateness);
    let observers = tokio::task::spawn_blocking(move || gaps.stop())
        .await
        .map_err(|e| format!("the observers' thread: {e}"))?;
    let idle_wall = wall.elapsed().as_secs_f64();
    let broker_cpu = broker_pid
        .and_then(sys::process_cpu)
        .zip(broker_cpu0)
        .map(|(b, a)| (b - a).as_secs_f64());
    let open = connections.still_open();

    eprintln!("scale idle: asking the broker (rabbitmqctl list_connections)");
    // rabbitmqctl takes seconds with 10,000 connections: off the runtime's
    // threads, or a current-thread runtime would send no heartbeats
    // meanwhile and the broker would close connections for it.
    let on_broker = {
        let (dir, prefix) = (test_server.to_owned(), target.prefix.clone());
        tokio::task::spawn_blocking(move || broker::connections_named(&dir, &prefix))
            .await
            .map_err(|e| format!("rabbitmqctl's thread: {e}"))?
    };
    let open_later = connections.still_open();
    let clients::Idle::Carehare(list) = connections else {
        return Err("carehare connections expected".into());
    };
    let t_close = Instant::now();
    clients::each_in_batches(list.len(), batch, |i| {
        let c = &list[i];
        async move { c.close().await.map_err(|e| e.to_string()) }
    })
    .await;
    let close_s = t_close.elapsed().as_secs_f64();
    // How each connection ended: a clean close is "closed by the client";
    // a missed heartbeat shows as the heartbeat monitor (ours) or as the
    // server closing the socket (RabbitMQ's).
    let mut ended: BTreeMap<String, usize> = BTreeMap::new();
    for c in &list {
        *ended.entry(c.closed().await.to_string()).or_default() += 1;
    }
    let clean = list
        .iter()
        .filter(|c| {
            matches!(
                c.closed().now_or_never(),
                Some(carehare_tokio::ConnectionError::ClosedByClient)
            )
        })
        .count();

    let cpu = (end.cpu - start.cpu).as_secs_f64();
    let rss_mib = |u: &Usage| u.rss_kib as f64 / 1024.0;
    let per_kib = (end.rss_kib as f64 - before.rss_kib as f64) / opened.max(1) as f64;
    let heap = end.heap.since(&before.heap);
    let broker_cell = match &on_broker {
        Ok((all, running)) => format!("{all} ({running} running)"),
        Err(e) => format!("unknown: {e}"),
    };
    let tally = |m: &BTreeMap<String, usize>| {
        m.iter()
            .map(|(k, v)| format!("{v}: {k}"))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let mut table = String::new();
    let row = |t: &mut String, k: &str, v: String| {
        let _ = writeln!(t, "| {k} | {v} |");
    };
    let _ = writeln!(
        table,
        "### {n} idle connections, {} s heartbeat\n",
        target.heartbeat
    );
    let _ = writeln!(table, "| | |\n|---|---|");
    row(
        &mut table,
        "connections",
        format!("{opened} of {n} opened, {batch} at a time, in {connect_s:.1} s"),
    );
    if !failed.is_empty() {
        row(&mut table, "failed to open", tally(&failed));
    }
    row(
        &mut table,
        "heartbeat (negotiated)",
        format!("{negotiated} s"),
    );
    row(
        &mut table,
        "RSS",
        format!(
            "{:.1} MiB before connecting, {:.1} MiB when the idle time began, {:.1} MiB at its end: {per_kib:.1} KiB per connection",
            rss_mib(&before),
            rss_mib(&start),
            rss_mib(&end)
        ),
    );
    row(
        &mut table,
        "RSS growth while idle",
        format!(
            "{:.2} KiB per connection",
            (end.rss_kib as f64 - start.rss_kib as f64) / opened.max(1) as f64
        ),
    );
    row(
        &mut table,
        "heap per connection",
        format!(
            "{:.1} KiB in {:.1} blocks",
            heap.total_bytes() as f64 / opened.max(1) as f64 / 1024.0,
            heap.total_blocks() as f64 / opened.max(1) as f64
        ),
    );
    row(
        &mut table,
        &format!("CPU while idle ({idle_wall:.0} s)"),
        format!(
            "{:.2} % of one core ({cpu:.2} s user + system)",
            cpu / idle_wall * 100.0
        ),
    );
    row(
        &mut table,
        "the broker's CPU meanwhile",
        broker_cpu.map_or("unknown (not on this machine)".into(), |b| {
            format!("{:.1} % of one core", b / idle_wall * 100.0)
        }),
    );
    // Connections are lost when the broker falls behind; on a shared
    // host, a share of the cores goes to other guests (steal).
    let shares = |a: Option<sys::MachineCpu>, b: Option<sys::MachineCpu>| {
        a.zip(b).map_or("unknown (no /proc/stat or /proc/pressure/cpu)".into(), |(a, b)| {
            let (waited, steal) = b.since(&a);
            format!(
                "a task waited for a core {waited:.0} % of the time; the host took {steal:.0} % of the cores"
            )
        })
    };
    row(
        &mut table,
        "the machine's cores while opening",
        shares(machine_open, machine_idle),
    );
    row(
        &mut table,
        "the machine's cores while idle",
        shares(machine_idle, machine_end),
    );
    row(
        &mut table,
        "this runtime's 100 ms timer, late by: while opening",
        late_open,
    );
    row(&mut table, "... while idle", late_idle);
    row(
        &mut table,
        "RabbitMQ's silences, on connections of their own threads: while opening",
        gaps_open,
    );
    row(&mut table, "... while idle", {
        let mut cell = gaps_idle;
        if let Err(e) = &observers {
            cell.push_str(&format!("; **lost**: {e}"));
        }
        cell
    });
    row(
        &mut table,
        "threads",
        format!("{} (the observers' {OBSERVERS} among them)", end.threads),
    );
    row(
        &mut table,
        "open at the end of the idle time (client)",
        open.to_string(),
    );
    row(
        &mut table,
        "open by the broker's count (`rabbitmqctl list_connections`)",
        broker_cell,
    );
    row(
        &mut table,
        "open after the broker's count (client)",
        open_later.to_string(),
    );
    row(
        &mut table,
        "how they ended",
        format!("{} (closing took {close_s:.1} s)", tally(&ended)),
    );
    let broker_ok = matches!(on_broker, Ok((all, running)) if all == n && running == n);
    let all_well = opened == n && open == n && open_later == n && broker_ok && clean == n;
    row(
        &mut table,
        "no heartbeat missed (every connection open to the end by both counts, and closed cleanly)",
        if all_well { "yes" } else { "**no**" }.to_string(),
    );
    println!("{table}");
    let checked = if idle_only {
        opened == n && open == n
    } else {
        all_well
    };
    if !checked {
        return Err(format!(
            "not every connection lived through the idle time: {opened} opened, {open} open at \
             its end, {open_later} after the broker's count ({on_broker:?}), {clean} closed \
             cleanly, of {n}"
        ));
    }
    Ok(())
}
