//! What every end-to-end peer shares: the workload's flags, CPU time from
//! `getrusage`, and the one JSON line each peer prints (the same schema as
//! `carehare perf --json`).

use std::time::{Duration, Instant};

/// The workload: publish `count` messages of `size` bytes with confirms
/// (at most `confirm` unconfirmed), then consume them with `prefetch`,
/// acking with `multiple` every `multi_ack_every` messages.
#[derive(Debug, Clone)]
pub struct Workload {
    /// AMQP URL of the broker.
    pub url: String,
    /// Messages to publish, then consume.
    pub count: u64,
    /// Body size in bytes.
    pub size: usize,
    /// Unconfirmed publishes in flight, at most.
    pub confirm: usize,
    /// The consumer's prefetch.
    pub prefetch: u16,
    /// A multiple-ack every this many deliveries.
    pub multi_ack_every: u64,
}

impl Workload {
    /// Reads `--url --count --size --confirm --prefetch --multi-ack-every`
    /// from the command line (other flags are refused).
    pub fn from_args() -> Self {
        let mut w = Workload {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            count: 100_000,
            size: 12,
            confirm: 1000,
            prefetch: 300,
            multi_ack_every: 30,
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            let value = args
                .next()
                .unwrap_or_else(|| panic!("{flag} needs a value"));
            let num = || -> u64 { value.parse().unwrap_or_else(|_| panic!("bad {flag}")) };
            match flag.as_str() {
                "--url" => w.url = value.clone(),
                "--count" => w.count = num(),
                "--size" => w.size = num() as usize,
                "--confirm" => w.confirm = num() as usize,
                "--prefetch" => w.prefetch = num() as u16,
                "--multi-ack-every" => w.multi_ack_every = num(),
                other => panic!("unknown flag {other}"),
            }
        }
        w
    }

    /// The body every message carries.
    pub fn body(&self) -> Vec<u8> {
        vec![b'x'; self.size]
    }

    /// The `config` object of the JSON line.
    pub fn config_json(&self) -> String {
        format!(
            r#"{{"count":{},"size":{},"confirm":{},"prefetch":{},"multi_ack_every":{}}}"#,
            self.count, self.size, self.confirm, self.prefetch, self.multi_ack_every
        )
    }
}

/// This process's user + system CPU time so far, all threads.
pub fn cpu_time() -> Duration {
    let (user, sys, _) = usage();
    user + sys
}

/// The peak resident set size of this process, in KiB: Linux's `VmHWM`,
/// else `ru_maxrss` (which on Linux survives `execve`, so a child can
/// report its parent's size at the fork).
pub fn max_rss_kib() -> u64 {
    status_field("VmHWM:").unwrap_or(rusage().ru_maxrss as u64)
}

/// The resident set size of this process now, in KiB (Linux's `VmRSS`).
pub fn rss_kib() -> u64 {
    status_field("VmRSS:").unwrap_or(0)
}

/// The anonymous part of this process's resident set now, in KiB
/// (`RssAnon`: heap, stacks), without the code and file pages (`RssFile`)
/// that count in `VmRSS` once touched.
pub fn rss_anon_kib() -> u64 {
    status_field("RssAnon:").unwrap_or(0)
}

/// The threads of this process now.
pub fn threads() -> u64 {
    status_field("Threads:").unwrap_or(0)
}

/// A number field of `/proc/self/status` (`VmRSS:`, `Threads:`...), its
/// unit (`kB`) dropped.
fn status_field(name: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The host and port of an `amqp://user:pass@host:port/vhost` URL, for
/// clients that take them apart (amqprs); the benches only use the
/// default user and vhost.
pub fn host_port(url: &str) -> (String, u16) {
    let rest = url.split('@').nth(1).unwrap_or("127.0.0.1:5672/");
    let hp = rest.split(['/', '?']).next().unwrap_or("127.0.0.1:5672");
    let (h, p) = hp.split_once(':').unwrap_or((hp, "5672"));
    (h.to_string(), p.parse().expect("port"))
}

fn rusage() -> libc::rusage {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct we pass; RUSAGE_SELF is valid.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()) };
    assert_eq!(rc, 0, "getrusage failed");
    // SAFETY: zeroed is a valid rusage, and getrusage succeeded.
    unsafe { ru.assume_init() }
}

/// User CPU, system CPU and voluntary context switches (each a time a
/// thread blocked: a sleep in `epoll_wait`, mostly) of this process so
/// far, all threads.
fn usage() -> (Duration, Duration, u64) {
    let ru = rusage();
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (tv(ru.ru_utime), tv(ru.ru_stime), ru.ru_nvcsw as u64)
}

/// Wall and CPU time of one phase.
#[derive(Debug, Clone, Copy)]
pub struct Phase {
    /// Messages the phase moved.
    pub messages: u64,
    /// Wall-clock time.
    pub wall: Duration,
    /// CPU time of the process (all threads).
    pub cpu: Duration,
    /// The part of `cpu` spent in the kernel.
    pub sys: Duration,
    /// Times a thread of the process blocked (went to sleep).
    pub sleeps: u64,
}

/// Starts timing a phase.
pub struct PhaseTimer {
    phase: usize,
    wall: Instant,
    usage: (Duration, Duration, u64),
}

/// Phases started so far in this process (1 for the first).
static PHASES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// `perf record --control fifo:CTL,ACK -D -1` and `PEER_PERF_PHASE=N`,
/// `PEER_PERF_CTL=CTL`, `PEER_PERF_ACK=ACK`: perf samples the Nth phase
/// only (1 publishing, 2 consuming), so that a profile of one phase has
/// nothing of the other in it.
fn perf_control(phase: usize, command: &str) {
    use std::io::{Read, Write};
    let wanted = std::env::var("PEER_PERF_PHASE").ok();
    if wanted.and_then(|w| w.parse::<usize>().ok()) != Some(phase) {
        return;
    }
    let (Some(ctl), Some(ack)) = (
        std::env::var_os("PEER_PERF_CTL"),
        std::env::var_os("PEER_PERF_ACK"),
    ) else {
        return;
    };
    let mut ctl = std::fs::OpenOptions::new()
        .write(true)
        .open(ctl)
        .expect("perf's control fifo");
    ctl.write_all(format!("{command}\n").as_bytes())
        .expect("write to perf's control fifo");
    // perf answers "ack\n" once the events are switched.
    let mut answer = [0u8; 4];
    std::fs::File::open(ack)
        .and_then(|mut f| f.read_exact(&mut answer))
        .expect("perf's ack fifo");
}

impl PhaseTimer {
    /// Now.
    pub fn start() -> Self {
        let phase = PHASES.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        perf_control(phase, "enable");
        PhaseTimer {
            phase,
            wall: Instant::now(),
            usage: usage(),
        }
    }

    /// The phase is over, having moved `messages`.
    // Never inlined: the profile step has callgrind dump its counts as
    // each phase ends, at this function's entry.
    #[inline(never)]
    pub fn stop(self, messages: u64) -> Phase {
        let (user, sys, sleeps) = usage();
        perf_control(self.phase, "disable");
        let (user0, sys0, sleeps0) = self.usage;
        Phase {
            messages,
            wall: self.wall.elapsed(),
            cpu: (user + sys).saturating_sub(user0 + sys0),
            sys: sys.saturating_sub(sys0),
            sleeps: sleeps.saturating_sub(sleeps0),
        }
    }
}

impl Phase {
    /// The phase as a JSON object.
    pub fn json(&self) -> String {
        let s = self.wall.as_secs_f64();
        let c = self.cpu.as_secs_f64();
        let n = self.messages as f64;
        format!(
            r#"{{"messages":{},"seconds":{:.6},"msg_per_s":{:.1},"cpu_s":{:.6},"cpu_us_per_msg":{:.3},"user_us_per_msg":{:.3},"sys_us_per_msg":{:.3},"sleeps_per_1k_msg":{:.1}}}"#,
            self.messages,
            s,
            n / s,
            c,
            c * 1e6 / n,
            self.cpu.saturating_sub(self.sys).as_secs_f64() * 1e6 / n,
            self.sys.as_secs_f64() * 1e6 / n,
            self.sleeps as f64 * 1000.0 / n,
        )
    }
}

/// Prints the peer's one JSON line.
pub fn report(tool: &str, w: &Workload, publish: Phase, consume: Phase) {
    println!(
        r#"{{"tool":"{tool}","config":{},"publish":{},"consume":{},"latency_us":null,"max_rss_kib":{}}}"#,
        w.config_json(),
        publish.json(),
        consume.json(),
        max_rss_kib()
    );
}

/// The tokio runtime a peer runs on: `PEER_RUNTIME=current_thread` or
/// `multi_thread`, else the peer's default (`multi`: tokio's
/// multi-threaded runtime, as `#[tokio::main]`).
pub fn runtime(multi: bool) -> tokio::runtime::Runtime {
    let multi = runtime_is_multi(multi);
    let mut builder = if multi {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    builder.enable_all().build().expect("tokio runtime")
}

/// Runs `work` to its end in a task spawned on `runtime`, on its workers,
/// rather than in `block_on`'s own future, which runs on the calling
/// thread (the guide's advice for the multi-threaded runtime).
pub fn block_on_in_task(
    runtime: &tokio::runtime::Runtime,
    work: impl std::future::Future<Output = ()> + Send + 'static,
) {
    runtime.block_on(async { tokio::spawn(work).await.expect("the program's task") });
}

/// Whether [`runtime`] builds the multi-threaded runtime, given the
/// peer's default.
pub fn runtime_is_multi(multi: bool) -> bool {
    match std::env::var("PEER_RUNTIME").as_deref() {
        Ok("current_thread") => false,
        Ok("multi_thread") => true,
        _ => multi,
    }
}

/// The path of another binary of this crate, beside the running one.
pub fn own_bin(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.with_file_name(name)
}

/// The median; NaN for none.
pub fn median(mut xs: Vec<f64>) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(|a, b| a.total_cmp(b));
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// The consume phase of the carehare peers: an `acking_consumer` with the
/// workload's prefetch, read with `next_delivery`, acked with
/// `ack_multiple` every `multi_ack_every` messages; closes the consumer.
pub async fn consume_with_carehare(
    connection: &carehare_tokio::Connection,
    queue: &str,
    w: &Workload,
) -> Phase {
    let timer = PhaseTimer::start();
    let consumer = connection
        .acking_consumer(queue, w.prefetch)
        .await
        .expect("consume");
    let work = work_per_delivery();
    let mut seen = 0u64;
    while seen < w.count {
        let (body, tag) = consumer.next_delivery().await.expect("delivery");
        assert_eq!(body.len(), w.size);
        if !work.is_zero() {
            busy(work);
        }
        seen += 1;
        if seen.is_multiple_of(w.multi_ack_every) || seen == w.count {
            consumer.ack_multiple(tag);
        }
    }
    let phase = timer.stop(seen);
    consumer.close().await;
    phase
}

/// `PEER_WORK_NS`: CPU the consuming program spends on each delivery, as
/// a user's handler would (0 unless set). The profile step uses it to show
/// how the kernel's part of consuming depends on the program's speed.
fn work_per_delivery() -> Duration {
    let ns = std::env::var("PEER_WORK_NS").ok();
    Duration::from_nanos(ns.and_then(|ns| ns.parse().ok()).unwrap_or(0))
}

/// Spins for `work`, on the CPU.
fn busy(work: Duration) {
    let start = Instant::now();
    while start.elapsed() < work {
        std::hint::spin_loop();
    }
}

/// `n` with thousands separators: `16,421,550`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
